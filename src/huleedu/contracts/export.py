"""`huleedu contracts export DIR`: JSON Schemas of every event and the AsyncAPI document, as files.

The output is deterministic (sorted keys, fixed layout, trailing newline), so the committed copy in
`docs/contracts/` diffs cleanly and a test can tell when it is stale:

    DIR/asyncapi.json                      AsyncAPI 3.0: every topic, its DLQ, producers, consumers
    DIR/schemas/<topic-suffix>.json        the record value of a topic: envelope with the event as data
    DIR/schemas/data/<EventModel>.json     the event model alone (the envelope's `data`)
    DIR/schemas/error.json                 the structured error body of every HTTP error
    DIR/README.md                          an index of the above
"""

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from huleedu.contracts.asyncapi import asyncapi_document
from huleedu.contracts.envelope import envelope_of
from huleedu.contracts.errors import ErrorBody
from huleedu.contracts.topics import Topics

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS = "schemas"


def dumps(document: Any) -> str:
    """The one JSON layout of every exported file."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _schema(model: type[BaseModel], description: str) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, **schema, "description": description}


def topic_suffix(name: str, topics: Topics) -> str:
    return name.removeprefix(topics.prefix + ".")


def contract_files(topics: Topics) -> dict[str, str]:
    """Every exported file: relative POSIX path -> text. Pure; `export_contracts` writes them."""
    files: dict[str, str] = {"asyncapi.json": dumps(asyncapi_document(topics))}
    rows = []
    for info in topics.all():
        suffix = topic_suffix(info.name, topics)
        model_name = info.model.__name__
        files[f"{SCHEMAS}/{suffix}.json"] = dumps(
            _schema(envelope_of(info.model), f"Record value of `{info.name}`: {info.summary}")
        )
        files[f"{SCHEMAS}/data/{model_name}.json"] = dumps(_schema(info.model, info.summary))
        rows.append(
            f"| `{info.name}` | [{model_name}]({SCHEMAS}/data/{model_name}.json) | "
            f"[envelope]({SCHEMAS}/{suffix}.json) | {info.producer} | {', '.join(info.consumers)} |"
        )
    files[f"{SCHEMAS}/error.json"] = dumps(
        _schema(ErrorBody, 'The body of every HTTP error: `{"error": {...}}`.')
    )
    files["README.md"] = "\n".join(
        [
            "# Event contracts (generated)",
            "",
            "Written by `make contracts` (`huleedu contracts export docs/contracts`); do not edit by hand.",
            "A unit test fails when these files no longer match the models in `huleedu.contracts`.",
            "The same wire in prose, with the HTTP routes and the WebSocket protocol, is "
            "[docs/contracts.md](../contracts.md).",
            "",
            "- [asyncapi.json](asyncapi.json): AsyncAPI 3.0, every topic and its `.dlq` twin.",
            f"- [{SCHEMAS}/error.json]({SCHEMAS}/error.json): the structured HTTP error body.",
            "",
            "| topic | event (`data`) | record value | producer | consumers |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    return files


def export_contracts(directory: Path, topics: Topics | None = None) -> list[Path]:
    """Write every contract file under `directory` and return their paths, sorted.

    JSON files under `directory/schemas` that this export no longer produces are deleted, so a
    removed event does not leave a stale schema behind. Nothing else in `directory` is touched.
    """
    files = contract_files(topics or Topics())
    written = []
    for relative, text in sorted(files.items()):
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    wanted = set(written)
    for stale in sorted((directory / SCHEMAS).rglob("*.json")):
        if stale not in wanted:
            stale.unlink()
    return written
