"""The files operators load (deploy/): Prometheus accepts the alerting rules, the alerts fire when they
should (promtool's rule tests), each points at its runbook, and the Grafana dashboard is well formed.
That every metric they name is exported is tests/integration/test_metrics_exported.py."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support.deploy_files import ALERT_RULES, ALERT_TESTS, ROOT, alert_rules, dashboard, metric_names

OPERATIONS = ROOT / "docs" / "operations.md"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run `make system-deps` (Debian package prometheus) as root")
    return path


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *arguments], capture_output=True, text=True, timeout=120, cwd=ALERT_RULES.parent
    )


def test_promtool_accepts_the_alerting_rules() -> None:
    result = run("check", "rules", str(ALERT_RULES))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_the_alerts_fire_when_their_tests_say() -> None:
    result = run("test", "rules", str(ALERT_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr


def _anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_alert_says_how_bad_it_is_what_happened_and_where_its_runbook_is() -> None:
    anchors = _anchors(OPERATIONS)
    rules = alert_rules()

    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/operations.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no heading #{anchor} in docs/operations.md"
        assert metric_names(rule["expr"]), rule["alert"]


def test_the_dashboard_is_one_grid_of_panels_over_one_prometheus() -> None:
    board = dashboard()
    panels = board["panels"]
    graphs = [panel for panel in panels if panel["type"] != "row"]

    assert board["uid"] == "huleedu-results"
    assert [variable["name"] for variable in board["templating"]["list"]] == ["datasource"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert len(graphs) >= 20
    for panel in graphs:
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert all(name.startswith(("huleedu_", "process_")) for name in names), names
    cells = set()
    for panel in panels:
        place = panel["gridPos"]
        for x in range(place["x"], place["x"] + place["w"]):
            for y in range(place["y"], place["y"] + place["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
