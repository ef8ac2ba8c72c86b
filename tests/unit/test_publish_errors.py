"""Which failures of a publish are the record's (a refusal: an attempt of its outbox row, parked after
enough) and which say nothing about it (the broker away: the relay waits, the row is never parked)."""

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownError,
    for_code,
)

from huleedu.messaging.kafka import publish_error
from huleedu.messaging.relay import is_broker_unavailable

INVALID_RECORD = 87  # what Tansu's schema registry answers; aiokafka does not know the code


@pytest.mark.parametrize(
    "failure",
    [
        for_code(INVALID_RECORD)(),
        UnknownError(),
        MessageSizeTooLargeError(),
        RecordTooLargeError(),
        TopicAuthorizationFailedError(),
        TypeError("value must be bytes"),
    ],
    ids=lambda failure: type(failure).__name__,
)
def test_an_answer_about_the_record_is_a_refusal(failure: Exception) -> None:
    error = publish_error(failure)

    assert not error.broker_unavailable
    assert not is_broker_unavailable(error)
    assert str(error).startswith(f"refused: {type(failure).__name__}")
    assert error.__cause__ is failure


@pytest.mark.parametrize(
    "failure",
    [
        KafkaTimeoutError(),
        KafkaConnectionError("connection refused"),
        NotLeaderForPartitionError(),  # retried by the client until its deadline, then a timeout
        NotEnoughReplicasError(),
        OSError("network unreachable"),
    ],
    ids=lambda failure: type(failure).__name__,
)
def test_silence_or_a_passing_state_of_the_broker_is_no_refusal(failure: Exception) -> None:
    assert publish_error(failure).broker_unavailable


def test_a_call_that_reached_no_record_is_never_a_refusal() -> None:
    # e.g. the producer could not start: whatever the error, no record was judged
    assert publish_error(UnknownError(), unavailable=True).broker_unavailable
