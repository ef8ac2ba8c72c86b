"""Prometheus metrics of the spellcheck service (event counts and durations live in messaging)."""

from prometheus_client import Counter

ESSAYS_CHECKED = Counter("huleedu_spellcheck_essays_total", "Essays spellchecked, by outcome.", ["status"])
