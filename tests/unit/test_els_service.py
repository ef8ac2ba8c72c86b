"""ELS in embedded mode (SQLite): thin events through the real consumer move essays through their
lifecycle, in any order, with duplicates and nonsense ignored, as the query API shows."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from huleedu.contracts.enums import CJAssessmentStatus, PhaseName
from huleedu.contracts.topics import Topics
from support import ras_events as ev
from support.services import (
    INTERNAL_HEADERS,
    Services,
    copy_sqlite,
    running_services,
    service_settings,
)
from support.thin_events import cj_completed, cj_progress, spellcheck_completed

TOPICS = Topics()
ESSAYS = ["e1", "e2", "e3"]


@pytest.fixture
async def els(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Services]:
    settings = service_settings(database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"))
    async with running_services(settings, ["els"]) as services:
        services.client.headers.update(INTERNAL_HEADERS)
        yield services


async def essays_of(els: Services, batch_id: str) -> dict[str, dict[str, Any]]:
    response = await els.client.get(f"/internal/v1/batches/{batch_id}/essays")
    assert response.status_code == 200
    body = response.json()
    assert body["batch_id"] == batch_id
    return {essay["essay_id"]: essay for essay in body["essays"]}


def states(essays: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {essay_id: essay["state"] for essay_id, essay in essays.items()}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_registered_batch_has_every_essay_content_assigned_with_phases_pending(els: Services) -> None:
    registration = ev.registration(TOPICS, "b1", ESSAYS)
    await els.feed("els", [registration])

    essays = await essays_of(els, "b1")
    assert list(essays) == ESSAYS
    for essay in essays.values():
        assert set(essay) == {"batch_id", "essay_id", "state", "phases", "timeline"}
        assert essay["state"] == "content_assigned"
        assert essay["phases"] == {"spellcheck": "pending", "cj_assessment": "pending"}
        [entry] = essay["timeline"]
        assert entry["state"] == "content_assigned"
        assert entry["event_id"] == str(registration.event_id)
        assert entry["phase"] is None
        assert entry["at"]


async def test_both_phases_succeeding_assess_the_essay_with_a_timeline_of_each_step(els: Services) -> None:
    spellcheck = spellcheck_completed(TOPICS, "b1", "e1")
    cj = cj_completed(TOPICS, "b1", ESSAYS)
    await els.feed("els", [ev.registration(TOPICS, "b1", ESSAYS)])
    await els.feed("els", [spellcheck])
    await els.feed("els", [cj])

    response = await els.client.get("/internal/v1/essays/e1")
    assert response.status_code == 200
    essay = response.json()
    assert essay["state"] == "assessed"
    assert essay["phases"] == {"spellcheck": "completed", "cj_assessment": "completed"}
    assert [(t["state"], t["phase"], t["phase_status"]) for t in essay["timeline"]] == [
        ("content_assigned", None, None),
        ("content_assigned", "spellcheck", "completed"),
        ("assessed", "cj_assessment", "completed"),
    ]
    assert [t["event_id"] for t in essay["timeline"][1:]] == [str(spellcheck.event_id), str(cj.event_id)]
    times = [t["at"] for t in essay["timeline"]]
    assert times == sorted(times)
    # e2 and e3 still wait for their spellcheck outcome.
    assert states(await essays_of(els, "b1")) == {
        "e1": "assessed",
        "e2": "content_assigned",
        "e3": "content_assigned",
    }


async def test_a_cj_outcome_lists_who_failed_and_a_critical_failure_fails_everyone(els: Services) -> None:
    phases = (PhaseName.CJ_ASSESSMENT,)
    await els.feed(
        "els",
        [
            ev.registration(TOPICS, "b1", ESSAYS, phases=phases),
            ev.registration(TOPICS, "b2", ESSAYS, phases=phases),
        ],
    )
    await els.feed(
        "els",
        [
            cj_completed(TOPICS, "b1", ["e1", "e3"], ["e2"]),
            cj_completed(TOPICS, "b2", [], [], status=CJAssessmentStatus.FAILED_CRITICALLY),
        ],
    )

    assert states(await essays_of(els, "b1")) == {
        "e1": "assessed",
        "e2": "assessment_failed",
        "e3": "assessed",
    }
    assert states(await essays_of(els, "b2")) == dict.fromkeys(ESSAYS, "assessment_failed")


async def test_a_cj_outcome_before_the_registration_is_applied_when_the_batch_arrives(els: Services) -> None:
    cj = cj_completed(TOPICS, "b1", ["e1", "e2"], ["e3"])
    await els.feed("els", [cj])
    missing = await els.client.get("/internal/v1/batches/b1/essays")
    assert missing.status_code == 404

    await els.feed("els", [ev.registration(TOPICS, "b1", ESSAYS)])
    essays = await essays_of(els, "b1")
    assert {e: essay["phases"]["cj_assessment"] for e, essay in essays.items()} == {
        "e1": "completed",
        "e2": "completed",
        "e3": "failed",
    }
    assert states(essays) == dict.fromkeys(ESSAYS, "content_assigned")  # spellcheck is still pending
    assert [t["phase"] for t in essays["e1"]["timeline"]] == [None, "cj_assessment"]

    await els.feed("els", [spellcheck_completed(TOPICS, "b1", e) for e in ESSAYS])
    assert states(await essays_of(els, "b1")) == {
        "e1": "assessed",
        "e2": "assessed",
        "e3": "assessment_failed",
    }


async def test_a_spellcheck_outcome_before_the_registration_is_kept_too(els: Services) -> None:
    await els.feed("els", [spellcheck_completed(TOPICS, "b1", "e2", failed=True)])
    await els.feed("els", [ev.registration(TOPICS, "b1", ESSAYS, phases=(PhaseName.SPELLCHECK,))])

    assert states(await essays_of(els, "b1")) == {
        "e1": "content_assigned",
        "e2": "assessment_failed",
        "e3": "content_assigned",
    }


async def test_duplicates_change_nothing(els: Services) -> None:
    registration = ev.registration(TOPICS, "b1", ESSAYS)
    spellcheck = spellcheck_completed(TOPICS, "b1", "e1")
    await els.feed("els", [registration, registration])
    await els.feed("els", [spellcheck])
    before = await essays_of(els, "b1")
    duplicates = metric("huleedu_els_outcomes_total", phase="spellcheck", result="duplicate")

    # The same event again, and the same outcome as a new event, and the batch registered anew.
    await els.feed("els", [spellcheck, spellcheck_completed(TOPICS, "b1", "e1")])
    await els.feed("els", [ev.registration(TOPICS, "b1", ESSAYS)])

    assert await essays_of(els, "b1") == before
    assert metric("huleedu_els_outcomes_total", phase="spellcheck", result="duplicate") == duplicates + 1


async def test_an_impossible_transition_is_counted_and_changes_nothing(els: Services) -> None:
    await els.feed("els", [ev.registration(TOPICS, "b1", ESSAYS)])
    await els.feed("els", [spellcheck_completed(TOPICS, "b1", "e1")])
    before = await essays_of(els, "b1")
    impossible = metric("huleedu_els_impossible_transitions_total", phase="spellcheck")

    await els.feed("els", [spellcheck_completed(TOPICS, "b1", "e1", failed=True)])

    assert await essays_of(els, "b1") == before
    assert metric("huleedu_els_impossible_transitions_total", phase="spellcheck") == impossible + 1


async def test_an_outcome_for_an_unknown_essay_is_counted_and_the_consumer_goes_on(els: Services) -> None:
    await els.feed("els", [ev.registration(TOPICS, "b1", ESSAYS)])
    unknown = metric("huleedu_els_outcomes_total", phase="cj_assessment", result="unknown_essay")

    await els.feed(
        "els",
        [
            cj_completed(TOPICS, "b1", ["e1", "e2", "e3", "stranger"]),
            spellcheck_completed(TOPICS, "b1", "e1"),
        ],
    )

    assert metric("huleedu_els_outcomes_total", phase="cj_assessment", result="unknown_essay") == unknown + 1
    essays = await essays_of(els, "b1")
    assert "stranger" not in essays
    assert essays["e1"]["state"] == "assessed"
    assert (await els.client.get("/internal/v1/essays/stranger")).status_code == 404


async def test_the_query_api_needs_internal_credentials_and_names_what_is_missing(els: Services) -> None:
    els.client.headers.pop("X-Internal-API-Key")
    assert (await els.client.get("/internal/v1/essays/e1")).status_code == 401
    els.client.headers.update(INTERNAL_HEADERS)

    missing = await els.client.get("/internal/v1/batches/nope/essays")
    assert missing.status_code == 404
    assert missing.json()["error"]["details"] == {"batch_id": "nope"}


async def test_an_essay_id_in_two_batches_is_found_per_batch(els: Services) -> None:
    await els.feed("els", [ev.registration(TOPICS, "b1", ["e1"]), ev.registration(TOPICS, "b2", ["e1"])])
    await els.feed("els", [spellcheck_completed(TOPICS, "b2", "e1")])

    first = (await els.client.get("/internal/v1/essays/e1", params={"batch_id": "b1"})).json()
    second = (await els.client.get("/internal/v1/essays/e1", params={"batch_id": "b2"})).json()
    assert (first["batch_id"], first["phases"]["spellcheck"]) == ("b1", "pending")
    assert (second["batch_id"], second["phases"]["spellcheck"]) == ("b2", "completed")


async def test_cj_progress_marks_the_pending_cj_phase_processing_until_the_outcome_settles_it(
    els: Services,
) -> None:
    await els.feed("els", [cj_progress(TOPICS, "unknown-batch", 3, 30)])  # nothing to start: ignored
    await els.feed("els", [ev.registration(TOPICS, "b1", ESSAYS)])
    await els.feed("els", [cj_progress(TOPICS, "b1", 3, 30)])
    await els.feed("els", [cj_progress(TOPICS, "b1", 6, 30)])  # a repeated report changes nothing

    essays = await essays_of(els, "b1")
    assert {e: essay["phases"] for e, essay in essays.items()} == {
        e: {"spellcheck": "pending", "cj_assessment": "processing"} for e in ESSAYS
    }
    assert states(essays) == dict.fromkeys(ESSAYS, "content_assigned")
    assert [len(essay["timeline"]) for essay in essays.values()] == [1, 1, 1]  # progress is not an outcome

    await els.feed("els", [cj_completed(TOPICS, "b1", ["e1", "e2"], ["e3"])])
    await els.feed("els", [cj_progress(TOPICS, "b1", 9, 30)])  # late: the outcome stands
    essays = await essays_of(els, "b1")
    assert {e: essay["phases"]["cj_assessment"] for e, essay in essays.items()} == {
        "e1": "completed",
        "e2": "completed",
        "e3": "failed",
    }
    missing = await els.client.get("/internal/v1/batches/unknown-batch/essays")
    assert missing.status_code == 404
