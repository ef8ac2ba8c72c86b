"""Prometheus metrics of ELS (event counts and durations live in messaging.metrics)."""

from prometheus_client import Counter

OUTCOMES = Counter(
    "huleedu_els_outcomes_total",
    "Thin phase outcomes per essay, by phase and what became of them "
    "(applied, duplicate, impossible, deferred, unknown_essay).",
    ["phase", "result"],
)
IMPOSSIBLE_TRANSITIONS = Counter(
    "huleedu_els_impossible_transitions_total",
    "Outcomes refused by the state machine (logged; the essay is left as it was).",
    ["phase"],
)
STATE_CHANGES = Counter("huleedu_els_state_changes_total", "Essays entering a state.", ["state"])
