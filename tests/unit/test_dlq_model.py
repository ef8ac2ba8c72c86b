"""The pure parts of the dead-letter commands: naming topics and offsets, reading a DLQ record,
merging the two places a dead letter is kept, what a replay publishes, and which records a replay
takes on."""

from datetime import UTC, datetime

import pytest

from huleedu.messaging.bus import OutboundRecord, Record
from huleedu.messaging.dead_letters import DeadLetter as Letter
from huleedu.messaging.dead_letters import full_record, summary_record
from huleedu.operations.dlq import (
    REPLAY_ID,
    REPLAYED_AT,
    REPLAYED_FROM,
    TABLE,
    TOPIC,
    DeadLetter,
    Original,
    Position,
    Source,
    decode_headers,
    encode_headers,
    from_dlq_record,
    merge,
    parse_position,
    short_reason,
    topic_names,
)
from huleedu.operations.dlq_replay import (
    ALREADY_REPLAYED,
    NO_ORIGINAL,
    PENDING,
    PUBLISH_PENDING,
    PUBLISHED,
    REFUSED,
    REPLAY,
    Replay,
    counts_as_replayed,
    next_number,
    plan_replays,
    replay_record,
)

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
TOPIC_NAME = "huleedu.essay.spellcheck.results.v1"


def consumed(offset: int, value: bytes = b'{"event_id": "e-1"}', *, partition: int = 1) -> Record:
    return Record(
        TOPIC_NAME,
        partition,
        offset,
        b"batch-7",
        value,
        (("event_id", b"e-1"), ("event_type", b"spellcheck.result")),
    )


def on_dlq(outbound_record: OutboundRecord, *, partition: int = 0, offset: int = 0) -> Record:
    """The DLQ record a consumer of `<topic>.dlq` would read for what dead_letters published."""
    return Record(
        outbound_record.topic,
        partition,
        offset,
        outbound_record.key,
        outbound_record.value,
        tuple(outbound_record.headers.items()),
    )


def letter_of(record: Record, reason: str = "RuntimeError: a bug") -> Letter:
    return Letter(record, reason, "handler_failed", "result_aggregator", "result_aggregator", NOW)


def table_letter(
    source: Source, *, group: str = "result_aggregator", table_id: int = 1, form: str = "full"
) -> DeadLetter:
    return DeadLetter(
        source=source,
        group=group,
        service="result_aggregator",
        error_type="handler_failed",
        reason="RuntimeError: a bug",
        failed_at=NOW,
        value_bytes=10,
        value_sha256="ab" * 32,
        dlq_form=form,
        replay_of=None,
        table_id=table_id,
        original=Original(b"batch-7", b"{}", (("event_id", b"e-1"),)),
    )


def replay(source: Source, number: int, *, published: bool = True, refused: bool = False) -> Replay:
    return Replay(
        id=number,
        source=source,
        number=number,
        origin=TABLE,
        requested_at=NOW,
        published_at=NOW if published and not refused else None,
        failed_at=NOW if refused else None,
        last_error="refused: too large" if refused else None,
    )


# --- names ---


def test_a_topic_may_be_named_by_its_source_or_its_dlq_twin() -> None:
    assert topic_names(TOPIC_NAME) == (TOPIC_NAME, f"{TOPIC_NAME}.dlq")
    assert topic_names(f"{TOPIC_NAME}.dlq") == (TOPIC_NAME, f"{TOPIC_NAME}.dlq")
    with pytest.raises(ValueError, match="names no topic"):
        topic_names(".dlq")


@pytest.mark.parametrize(
    ("text", "position"),
    [("17", Position(17)), ("2:17", Position(17, 2)), (" 0:0 ", Position(0, 0))],
)
def test_an_offset_is_n_or_partition_colon_n(text: str, position: Position) -> None:
    assert parse_position(text) == position


@pytest.mark.parametrize("text", ["", "x", "-1", "1:-2", "1:2:3", "1.5", ":4"])
def test_anything_else_is_not_an_offset(text: str) -> None:
    with pytest.raises(ValueError, match="not an offset"):
        parse_position(text)


def test_an_offset_without_partition_matches_it_in_any_partition() -> None:
    assert Position(5).matches(Source(TOPIC_NAME, 3, 5))
    assert Position(5, 3).matches(Source(TOPIC_NAME, 3, 5))
    assert not Position(5, 2).matches(Source(TOPIC_NAME, 3, 5))
    assert not Position(6).matches(Source(TOPIC_NAME, 3, 5))


def test_a_reason_is_shown_by_its_first_line_without_the_database_wrapper() -> None:
    reason = (
        "IntegrityError: (sqlalchemy.dialects.postgresql.asyncpg.IntegrityError) <class"
        " 'asyncpg.exceptions.CheckViolationError'>: new row violates check constraint \"ck_x\"\n[SQL: INSERT ...]"
    )
    assert short_reason(reason, 200) == 'IntegrityError: new row violates check constraint "ck_x"'
    assert short_reason(reason, 20) == "IntegrityError: n..."
    assert short_reason("value is not JSON:   unexpected\tend", 80) == "value is not JSON: unexpected end"


# --- reading what dead_letters published ---


def test_a_full_dlq_record_holds_the_dead_letter_and_its_original() -> None:
    record = consumed(41)
    letter = from_dlq_record(
        on_dlq(full_record(letter_of(record)), partition=2, offset=9), with_original=True
    )

    assert letter is not None
    assert letter.source == Source(TOPIC_NAME, 1, 41)
    assert (letter.group, letter.service, letter.error_type) == (
        "result_aggregator",
        "result_aggregator",
        "handler_failed",
    )
    assert letter.reason == "RuntimeError: a bug"
    assert letter.failed_at == NOW
    assert letter.value_bytes == len(record.value or b"")
    assert letter.dlq_form == "full"
    assert letter.dlq is not None
    assert letter.dlq.position == "2:9"
    assert letter.kept_in == [TOPIC]
    assert letter.original is not None
    assert (letter.original.key, letter.original.value) == (record.key, record.value)
    assert letter.original.replay_headers() == record.headers  # the dlq_* headers are not the original's


def test_a_summary_carries_the_dead_letter_but_not_the_original() -> None:
    letter = from_dlq_record(on_dlq(summary_record(letter_of(consumed(41, b"x" * 5000)))), with_original=True)

    assert letter is not None
    assert letter.source == Source(TOPIC_NAME, 1, 41)
    assert letter.dlq_form == "summary"
    assert letter.value_bytes == 5000
    assert letter.original is None


def test_a_record_without_source_coordinates_is_not_a_dead_letter() -> None:
    assert from_dlq_record(Record(f"{TOPIC_NAME}.dlq", 0, 0, None, b"marker"), with_original=True) is None
    junk = Record(f"{TOPIC_NAME}.dlq", 0, 1, None, b"", (("dlq_source_offset", b"seven"),))
    assert from_dlq_record(junk, with_original=True) is None


def test_headers_survive_the_tables_base64_form() -> None:
    headers = (("event_id", b"e-1"), ("binary", bytes(range(256))), ("event_id", b"twice"))
    assert decode_headers(encode_headers(headers)) == headers


def test_the_table_row_and_the_dlq_record_of_one_dead_letter_merge_into_one() -> None:
    source = Source(TOPIC_NAME, 1, 41)
    from_topic = from_dlq_record(on_dlq(full_record(letter_of(consumed(41))), offset=3), with_original=False)
    duplicate = from_dlq_record(on_dlq(full_record(letter_of(consumed(41))), offset=8), with_original=False)
    other_group = table_letter(source, group="essay_lifecycle", table_id=2)
    topic_only = from_dlq_record(on_dlq(full_record(letter_of(consumed(40))), offset=1), with_original=False)
    assert from_topic
    assert duplicate
    assert topic_only

    merged = merge([table_letter(source), other_group], [from_topic, duplicate, topic_only])

    assert [(letter.source.offset, letter.group, letter.kept_in) for letter in merged] == [
        (40, "result_aggregator", [TOPIC]),
        (41, "essay_lifecycle", [TABLE]),
        (41, "result_aggregator", [TOPIC, TABLE]),
    ]
    assert merged[2].dlq is not None
    assert merged[2].dlq.offset == 3


# --- what a replay publishes ---


def test_a_replay_publishes_the_original_to_its_source_topic_marked_as_a_replay() -> None:
    source = Source(TOPIC_NAME, 1, 41)
    original = Original(
        b"batch-7",
        b'{"event_id": "e-1"}',
        (
            ("event_id", b"e-1"),
            ("dlq_reason", b"from an earlier dead-lettering"),
            (REPLAYED_FROM, b"an.earlier:0:3"),
        ),
    )

    record = replay_record(source, original, replay_id=12, requested_at=NOW)

    assert record.topic == TOPIC_NAME
    assert (record.key, record.value) == (b"batch-7", b'{"event_id": "e-1"}')
    assert dict(record.headers) == {
        "event_id": b"e-1",
        REPLAYED_FROM: f"{TOPIC_NAME}:1:41".encode(),
        REPLAYED_AT: NOW.isoformat().encode(),
        REPLAY_ID: b"12",
    }


# --- which records a replay takes on ---


def test_a_record_counts_as_replayed_once_a_replay_is_published_or_on_its_way_not_when_refused() -> None:
    source = Source(TOPIC_NAME, 1, 41)
    assert not counts_as_replayed([])
    assert not counts_as_replayed([replay(source, 1, refused=True)])
    assert counts_as_replayed([replay(source, 1, refused=True), replay(source, 2)])
    assert counts_as_replayed([replay(source, 1, published=False)])
    assert replay(source, 1, published=False).status == PENDING
    assert replay(source, 1).status == PUBLISHED
    assert replay(source, 1, refused=True).status == REFUSED
    assert next_number([]) == 1
    assert next_number([replay(source, 1), replay(source, 2, refused=True)]) == 3


def test_plans_replay_each_record_once_for_every_group_and_leave_replayed_ones_alone() -> None:
    fresh, done, waiting, refused = (Source(TOPIC_NAME, 0, offset) for offset in (1, 2, 3, 4))
    letters = [
        table_letter(fresh, group="result_aggregator"),
        table_letter(fresh, group="essay_lifecycle", table_id=2),
        table_letter(done, table_id=3),
        table_letter(waiting, table_id=4),
        table_letter(refused, table_id=5),
    ]
    history = {
        done: [replay(done, 1)],
        waiting: [replay(waiting, 1, published=False)],
        refused: [replay(refused, 1, refused=True)],
    }

    plans = plan_replays(letters, history, force=False, from_table=False)

    assert [(plan.source.offset, plan.action, len(plan.letters)) for plan in plans] == [
        (1, REPLAY, 2),
        (2, ALREADY_REPLAYED, 1),
        (3, PUBLISH_PENDING, 1),
        (4, REPLAY, 1),
    ]
    assert plans[2].pending == history[waiting][0]

    forced = plan_replays(letters, history, force=True, from_table=False)
    assert [plan.action for plan in forced] == [REPLAY] * 4


def test_the_original_comes_from_a_whole_dlq_record_else_from_the_table() -> None:
    whole = from_dlq_record(on_dlq(full_record(letter_of(consumed(1)))), with_original=True)
    summary = from_dlq_record(on_dlq(summary_record(letter_of(consumed(2)))), with_original=True)
    summary_kept = from_dlq_record(on_dlq(summary_record(letter_of(consumed(3)))), with_original=True)
    assert whole
    assert summary
    assert summary_kept
    in_table = table_letter(Source(TOPIC_NAME, 1, 3), table_id=9, form="summary")
    letters = merge([in_table], [whole, summary, summary_kept])

    plans = {plan.source.offset: plan for plan in plan_replays(letters, {}, force=False, from_table=False)}

    assert (plans[1].action, plans[1].origin) == (REPLAY, TOPIC)
    assert plans[1].original is not None
    assert plans[1].original.value == consumed(1).value
    assert (plans[2].action, plans[2].origin) == (NO_ORIGINAL, None)  # a summary, and no row here
    assert (plans[3].action, plans[3].origin) == (REPLAY, TABLE)
    assert plans[3].original == in_table.original

    from_table = {
        plan.source.offset: plan for plan in plan_replays(letters, {}, force=False, from_table=True)
    }
    assert from_table[1].action == NO_ORIGINAL  # not in this database's table
    assert from_table[3].origin == TABLE
