"""The operator's files under deploy/: the Prometheus alerting rules and the Grafana dashboard, and the
metric names their PromQL expressions use."""

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = ROOT / "deploy" / "prometheus" / "huleedu-alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "huleedu-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "huleedu-dashboard.json"

# PromQL words that look like names but are not series: operators and modifiers.
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_WORD = re.compile(r"(?<![\w.])[A-Za-z_:][\w:]*")


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The series names an expression reads: every name that is not a function call, keyword or
    label (label matchers, label lists and ranges are removed first)."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in _WORD.finditer(text):
        rest = text[match.end() :].lstrip()
        word = match.group()
        if rest.startswith("(") or word in _KEYWORDS or re.fullmatch(r"(?i)inf|nan", word):
            continue
        names.add(word)
    return names
