"""Cursors, frames, which events become which frames, and the recovery rule."""

import uuid

import orjson
import pytest

from huleedu.contracts.enums import NotificationPriority, WebSocketEventCategory
from huleedu.contracts.events import TeacherNotificationRequestedV1
from huleedu.websocket import messages
from huleedu.websocket.backplane import judge, judge_missing
from huleedu.websocket.messages import Message, StreamId
from support import gateway as gw


def test_cursors_parse_print_and_order_like_stream_ids() -> None:
    assert StreamId.parse("1712345678901-7") == StreamId(1712345678901, 7)
    assert str(StreamId(5, 0)) == "5-0"
    assert StreamId.parse("10-0") > StreamId.parse("9-99") > StreamId.parse("9-3")
    for bad in ("", "12", "a-1", "1-b", "-1", "1--1", "1-2-3"):
        with pytest.raises(ValueError, match="not a cursor"):
            StreamId.parse(bad)


def test_a_cursor_beyond_two_64_bit_numbers_or_of_other_digits_is_no_cursor() -> None:
    assert StreamId.parse(f"{2**64 - 1}-{2**64 - 1}") == StreamId(2**64 - 1, 2**64 - 1)
    for bad in (f"{2**64}-0", f"0-{2**64}", "²-0", "١٢-0", "9" * 5000 + "-0"):
        with pytest.raises(ValueError, match="not a cursor"):
            StreamId.parse(bad)


def test_a_frame_is_event_id_and_data_with_data_passed_through() -> None:
    message = Message("u1", StreamId(7, 1), "batch_results_ready", '{"batch_id": "b1"}')
    assert orjson.loads(message.frame()) == {
        "event": "batch_results_ready",
        "id": "7-1",
        "data": {"batch_id": "b1"},
    }
    assert messages.control_frame("pong") == '{"event":"pong"}'


def test_results_ready_is_keyed_by_batch_so_a_batch_is_announced_once() -> None:
    first = messages.results_ready(gw.ready_batch("u1", "b1"))
    again = messages.results_ready(gw.ready_batch("u1", "b1"))
    assert first.key == again.key == "batch_results_ready:b1"
    assert (first.user_id, first.event) == ("u1", "batch_results_ready")
    assert orjson.loads(first.data_json)["completed_essays"] == 3


def notification(kind: str) -> TeacherNotificationRequestedV1:
    return TeacherNotificationRequestedV1(
        teacher_id="u1",
        notification_type=kind,
        category=WebSocketEventCategory.BATCH_PROGRESS,
        priority=NotificationPriority.STANDARD,
        correlation_id=uuid.uuid4(),
        batch_id="b1",
    )


def test_notifications_keep_their_type_but_results_ready_is_left_to_its_own_event() -> None:
    assert messages.notification(notification("batch_results_ready"), "event-1") is None
    phase = messages.notification(notification("batch_phase_completed"), "event-2")
    assert phase is not None
    assert (phase.event, phase.key, phase.user_id) == ("batch_phase_completed", "event-2", "u1")
    assert orjson.loads(phase.data_json)["batch_id"] == "b1"
    reserved = messages.notification(notification("session"), "event-3")
    assert reserved is not None
    assert reserved.event == "notification.session"


def test_recovery_is_complete_only_when_nothing_after_the_cursor_was_trimmed() -> None:
    last, trimmed = StreamId(50, 0), StreamId(20, 0)
    newer = [Message("u1", StreamId(30, 0), "e", "{}"), Message("u1", last, "e", "{}")]
    assert judge(StreamId(20, 0), last=last, max_deleted=trimmed, newer=newer).complete
    assert judge(StreamId(20, 0), last=last, max_deleted=trimmed, newer=newer).cursor == last
    assert judge(StreamId(50, 0), last=last, max_deleted=trimmed, newer=[]).cursor == last
    gone = judge(StreamId(19, 5), last=last, max_deleted=trimmed, newer=newer)
    assert (gone.complete, gone.reason, gone.messages, gone.cursor) == (False, "history_trimmed", [], last)
    future = judge(StreamId(51, 0), last=last, max_deleted=trimmed, newer=[])
    assert (future.complete, future.reason) == (False, "unknown_cursor")
    fresh = judge(None, last=last, max_deleted=trimmed, newer=[])
    assert (fresh.complete, fresh.cursor) == (True, last)


def test_without_any_history_a_recent_cursor_missed_nothing_and_an_old_one_cannot_know() -> None:
    now_ms, history_ms = 1_000_000, 10_000
    assert judge_missing(StreamId(995_000, 3), now_ms=now_ms, history_ms=history_ms).complete
    old = judge_missing(StreamId(990_000, 0), now_ms=now_ms, history_ms=history_ms)
    assert (old.complete, old.reason) == (False, "history_trimmed")
    assert (
        judge_missing(StreamId(1_000_001, 0), now_ms=now_ms, history_ms=history_ms).reason == "unknown_cursor"
    )
    fresh = judge_missing(None, now_ms=now_ms, history_ms=history_ms)
    assert fresh.complete
    assert fresh.cursor < StreamId(now_ms, 0)  # below any id issued from now on
