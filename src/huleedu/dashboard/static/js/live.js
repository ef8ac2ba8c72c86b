// The live feed: one WebSocket to /ws with the teacher's token. Frames are {"event", "id", "data"}.
// The page never polls: a frame about a batch makes it re-fetch that batch from the API. After a
// drop it reconnects with since=<last cursor>; the first frame ("session") says whether the missed
// frames could all be replayed, and when they could not, the page reloads everything from the API.

const POLICY_VIOLATION = 1008; // bad or expired token: reconnecting cannot help
const TOO_MANY_CONNECTIONS = 4000;
const MAX_BACKOFF_MS = 15000;

export class LiveFeed {
  // handlers: onFrame(event, data), onReload(), onState("connecting" | "live" | "offline"),
  // onRefused(reason) when the server will not take this token.
  constructor(token, handlers) {
    this.token = token;
    this.handlers = handlers;
    this.cursor = null;
    this.socket = null;
    this.attempts = 0;
    this.timer = null;
    this.stopped = true;
    this.reconnectNow = () => {
      if (!this.stopped && !this.socket) this.connect();
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.reconnectNow);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.reconnectNow);
    clearTimeout(this.timer);
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, "signed out");
    }
    this.handlers.onState("offline");
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams({ token: this.token });
    if (this.cursor) params.set("since", this.cursor);
    return `${scheme}//${location.host}/ws?${params}`;
  }

  connect() {
    clearTimeout(this.timer);
    this.handlers.onState("connecting");
    const resuming = this.cursor !== null;
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.onmessage = (message) => this.receive(socket, message.data, resuming);
    socket.onclose = (event) => this.closed(socket, event);
  }

  receive(socket, text, resuming) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (_) {
      return;
    }
    switch (frame.event) {
      case "ping":
        socket.send(JSON.stringify({ type: "pong" }));
        return;
      case "pong":
      case "error":
        return;
      case "session":
        this.attempts = 0;
        if (frame.id) this.cursor = frame.id;
        this.handlers.onState("live");
        // A first connect may have missed what happened since the page loaded; a resume that
        // could not replay everything has missed it for sure: either way, the API knows.
        if (!resuming || (frame.data && frame.data.complete === false)) this.handlers.onReload();
        return;
      default:
        if (frame.id) this.cursor = frame.id;
        this.handlers.onFrame(frame.event, frame.data || {});
    }
  }

  closed(socket, event) {
    if (this.socket !== socket) return; // an old socket, replaced or stopped on purpose
    this.socket = null;
    if (this.stopped) return;
    if (event.code === POLICY_VIOLATION) {
      this.stopped = true;
      this.handlers.onState("offline");
      this.handlers.onRefused(event.reason || "your token was refused");
      return;
    }
    this.handlers.onState("offline");
    this.attempts += 1;
    const base = event.code === TOO_MANY_CONNECTIONS ? 5000 : 500;
    const delay = Math.min(MAX_BACKOFF_MS, base * 2 ** Math.min(this.attempts - 1, 5));
    this.timer = setTimeout(() => this.connect(), delay * (0.75 + Math.random() * 0.5));
  }
}
