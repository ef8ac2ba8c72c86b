"""The AsyncAPI 3.0 document of every topic: channels, messages, operations, Kafka bindings, DLQs.

Built from `Topics().all()` and the pydantic models alone, so the document cannot drift from the code;
`export.py` writes it next to the per-event JSON Schemas.
"""

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from huleedu.contracts.envelope import envelope_of
from huleedu.contracts.topics import DLQ_SUFFIX, TopicInfo, Topics, dlq_topic

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
SCHEMA_REF = "#/components/schemas/{model}"
DEAD_LETTER_MESSAGE = "DeadLetter"
OPERATORS = "operators"

# Headers every record carries (docs/contracts.md, "The event envelope"); each duplicates an envelope field.
RECORD_HEADERS = {
    "event_id": "the envelope's event_id (UUID)",
    "event_type": "the envelope's event_type (the topic name)",
    "correlation_id": "the envelope's correlation_id (UUID)",
    "source_service": "the envelope's source_service",
    "schema_version": "the envelope's schema_version, as decimal text",
    "content-type": "always application/json",
}

# Headers the consumer adds when it dead-letters a record (messaging/dead_letters.py).
DLQ_HEADERS = {
    "dlq_reason": "why the record cannot be handled, field by field for an invalid event",
    "dlq_error_type": "empty_record | undecodable | invalid_envelope | invalid_event | handler_failed",
    "dlq_source_topic": "the topic the record was consumed from",
    "dlq_source_partition": "its partition, as decimal text",
    "dlq_source_offset": "its offset, as decimal text",
    "dlq_consumer_group": "the consumer group that gave up on it",
    "dlq_service": "the service that gave up on it",
    "dlq_failed_at": "ISO-8601 UTC time of the decision",
    "dlq_value_bytes": "size of the original value, as decimal text",
    "dlq_value_sha256": "SHA-256 of the original value, hex",
    "dlq_form": "full: this record is the original; summary: it was too large, and is kept whole in the"
    " consuming service's dead_letters table",
}


def channel_id(topic: TopicInfo, prefix: str) -> str:
    """A stable id without the prefix: `batch-essays-registered-v1`."""
    return topic.name.removeprefix(prefix + ".").replace(".", "-")


def _header_schema(headers: dict[str, str], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": {name: {"type": "string", "description": meaning} for name, meaning in headers.items()},
    }


def _kafka_key() -> dict[str, Any]:
    return {
        "kafka": {
            "key": {
                "type": "string",
                "description": "the batch_id: one batch stays ordered in one partition",
            },
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }


def _channel(address: str, description: str, message_id: str) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
        "bindings": {"kafka": {"topic": address, "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _operation(action: str, channel: str, message_id: str, service: str, summary: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message_id}"}],
        "summary": summary,
        "tags": [{"name": service}],
    }


def asyncapi_document(topics: Topics) -> dict[str, Any]:
    """The whole document as plain JSON data (dict keys in any order; the writer sorts them)."""
    infos = topics.all()
    envelopes: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (envelope_of(info.model), "validation") for info in infos
    ]
    refs, definitions = models_json_schema(envelopes, ref_template=SCHEMA_REF)
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    schemas["RecordHeaders"] = _header_schema(
        RECORD_HEADERS, "Duplicates of envelope fields; a consumer must accept a record without them."
    )
    schemas["DeadLetterHeaders"] = _header_schema(
        {**RECORD_HEADERS, **DLQ_HEADERS},
        "The original record's headers (full form only) plus why and where from it was dead-lettered.",
    )

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {
        DEAD_LETTER_MESSAGE: {
            "name": DEAD_LETTER_MESSAGE,
            "title": "Dead-lettered record",
            "summary": "The original record, byte for byte (it may not even be JSON), plus reason headers;"
            " a summary instead when the original does not fit the topic (dlq_form says which).",
            "payload": {
                "description": "full: the original record value, unchanged. summary: JSON"
                ' {"dead_letter": {source_topic, source_partition, source_offset, consumer_group, service,'
                " error_type, reason, failed_at, value_bytes, value_sha256, key_bytes, header_names,"
                " kept_in}}"
            },
            "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
            "bindings": _kafka_key(),
        }
    }
    for info, envelope in zip(infos, envelopes, strict=True):
        message_id = info.model.__name__
        messages[message_id] = {
            "name": message_id,
            "title": message_id,
            "summary": info.summary,
            "contentType": "application/json",
            "payload": refs[envelope],
            "headers": {"$ref": "#/components/schemas/RecordHeaders"},
            "correlationId": {"$ref": "#/components/correlationIds/correlationId"},
            "bindings": _kafka_key(),
        }
        channel = channel_id(info, topics.prefix)
        channels[channel] = _channel(info.name, info.summary, message_id)
        operations[f"{info.producer}-sends-{channel}"] = _operation(
            "send", channel, message_id, info.producer, f"{info.producer} publishes {message_id}."
        )
        for consumer in info.consumers:
            operations[f"{consumer}-receives-{channel}"] = _operation(
                "receive", channel, message_id, consumer, f"{consumer} consumes {message_id}."
            )

        dead = channel + DLQ_SUFFIX.replace(".", "-")
        channels[dead] = _channel(
            dlq_topic(info.name),
            f"Records of `{info.name}` that a consumer could not handle, with the reason.",
            DEAD_LETTER_MESSAGE,
        )
        for consumer in info.consumers:
            operations[f"{consumer}-dead-letters-{channel}"] = _operation(
                "send", dead, DEAD_LETTER_MESSAGE, consumer, f"{consumer} parks a record it cannot handle."
            )
        operations[f"{OPERATORS}-receive-{dead}"] = _operation(
            "receive", dead, DEAD_LETTER_MESSAGE, OPERATORS, "Operators inspect and replay parked records."
        )

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "HuleEdu Results events",
            "version": "1.0.0",
            "description": (
                "Every topic of HuleEdu Results. Record value: the JSON event envelope with the event "
                f"model as `data`; record key: the batch_id. Topic prefix here: `{topics.prefix}` "
                "(HULEEDU_TOPIC_PREFIX)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "Any Kafka-protocol broker (HULEEDU_KAFKA_BOOTSTRAP_SERVERS).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "correlationIds": {
                "correlationId": {
                    "description": "Propagated from the request that started the work; thin and rich "
                    "events of one assessment share it.",
                    "location": "$message.payload#/correlation_id",
                }
            },
        },
    }
