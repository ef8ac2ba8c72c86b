"""Prometheus metrics of the WebSocket gateway (per process; `/metrics` serves them)."""

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("huleedu_ws_connections", "Open WebSocket connections of this process.")
REFUSED = Counter("huleedu_ws_refused_total", "WebSocket connections refused, per reason.", ["reason"])
APPENDED = Counter(
    "huleedu_ws_messages_appended_total", "Messages added to user histories, per event.", ["event"]
)
FRAMES_SENT = Counter("huleedu_ws_frames_sent_total", "Frames written to sockets of this process.")
REPLAYED = Counter("huleedu_ws_replayed_messages_total", "Messages sent again from history on resume.")
INCOMPLETE_RESUMES = Counter(
    "huleedu_ws_incomplete_resumes_total",
    "Resumes the history could not fully serve, per reason.",
    ["reason"],
)
SLOW_CLIENTS = Counter("huleedu_ws_slow_clients_total", "Sockets closed because their send buffer filled.")
