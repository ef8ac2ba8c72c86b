"""The INSERT ... ON CONFLICT statements built once and kept have a cache key of their own, so
SQLAlchemy compiles each once: one key per conflict clause, never shared by two clauses."""

from typing import Any

import pytest
from sqlalchemy import or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement

from huleedu.messaging.tables import processed_events
from huleedu.result_aggregator.tables import batch_phase_progress
from huleedu.storage.dialect import _skipping_duplicates, _upsert_for

DIALECTS: dict[str, Dialect] = {"postgresql": postgresql.dialect(), "sqlite": sqlite.dialect()}


def is_newer(excluded: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[bool]:
    stored = batch_phase_progress.c.event_at
    return or_(stored.is_(None), stored < excluded["event_at"])


def key(statement: Insert) -> object:
    cache_key = statement._generate_cache_key()
    assert cache_key is not None, "no cache key: compiled again on every execution"
    return cache_key.key


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_every_conflict_clause_has_a_key_of_its_own(dialect: str) -> None:
    conflict = ("batch_id", "phase")
    statements = [
        _skipping_duplicates(dialect, batch_phase_progress),
        _upsert_for(dialect, batch_phase_progress, conflict, ("done",), None),
        _upsert_for(dialect, batch_phase_progress, conflict, ("planned",), None),
        _upsert_for(dialect, batch_phase_progress, conflict, ("done",), is_newer),
    ]
    keys = [key(statement) for statement in statements]
    assert len(set(map(repr, keys))) == len(statements)
    written = [str(statement.compile(dialect=DIALECTS[dialect])) for statement in statements]
    assert len(set(written)) == len(statements)


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_a_copy_of_a_kept_statement_has_the_same_key_every_time(dialect: str) -> None:
    def returning() -> Insert:
        return _skipping_duplicates(dialect, processed_events).returning(processed_events.c.event_id)

    assert key(returning()) == key(returning())
    assert key(returning()) != key(_skipping_duplicates(dialect, processed_events))
