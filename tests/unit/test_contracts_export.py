"""The exported contracts: committed copy up to date, deterministic, and a complete AsyncAPI document."""

import json
from pathlib import Path
from typing import Any

from huleedu.contracts.export import contract_files, export_contracts
from huleedu.contracts.topics import Topics, dlq_topic

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "contracts"
STALE = "docs/contracts is stale: run `make contracts` and commit the result"


def _files_under(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for step in ref[2:].split("/"):
        node = node[step.replace("~1", "/").replace("~0", "~")]
    return node


def test_committed_contracts_match_a_fresh_export(tmp_path: Path) -> None:
    export_contracts(tmp_path)

    fresh, committed = _files_under(tmp_path), _files_under(COMMITTED)

    assert sorted(committed) == sorted(fresh), STALE
    for name, content in fresh.items():
        assert committed[name] == content, f"{name}: {STALE}"


def test_export_is_deterministic_and_removes_schemas_of_events_that_no_longer_exist(tmp_path: Path) -> None:
    first = export_contracts(tmp_path)
    before = _files_under(tmp_path)
    (tmp_path / "schemas" / "data" / "RemovedEventV1.json").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("mine\n")

    second = export_contracts(tmp_path)

    assert first == second
    assert _files_under(tmp_path) == {**before, "notes.txt": b"mine\n"}


def test_every_topic_has_an_envelope_schema_and_a_data_schema() -> None:
    files = contract_files(Topics())

    for info in Topics().all():
        suffix = info.name.removeprefix("huleedu.")
        envelope = json.loads(files[f"schemas/{suffix}.json"])
        data = json.loads(files[f"schemas/data/{info.model.__name__}.json"])
        assert envelope["properties"]["data"] == {"$ref": f"#/$defs/{info.model.__name__}"}
        assert set(envelope["required"]) >= {"event_type", "source_service", "data"}
        assert set(data["properties"]) == set(info.model.model_fields)
        assert data["title"] == info.model.__name__
        assert all(_resolve(envelope, ref) for ref in _refs(envelope))
        assert all(_resolve(data, ref) for ref in _refs(data))


def test_asyncapi_lists_every_topic_and_its_dead_letter_topic_with_producers_and_consumers() -> None:
    document = json.loads(contract_files(Topics())["asyncapi.json"])
    channels, operations = document["channels"], document["operations"].values()

    assert document["asyncapi"] == "3.0.0"
    addresses = {channel["address"]: name for name, channel in channels.items()}
    for info in Topics().all():
        channel = addresses[info.name]
        dead = addresses[dlq_topic(info.name)]
        message = document["components"]["messages"][info.model.__name__]
        assert channels[channel]["bindings"]["kafka"]["topic"] == info.name
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        assert "batch_id" in message["bindings"]["kafka"]["key"]["description"]
        payload = _resolve(document, message["payload"]["$ref"])
        assert payload["properties"]["data"] == {"$ref": f"#/components/schemas/{info.model.__name__}"}
        actions = {
            (op["action"], op["tags"][0]["name"])
            for op in operations
            if op["channel"] == {"$ref": f"#/channels/{channel}"}
        }
        assert actions == {("send", info.producer)} | {("receive", c) for c in info.consumers}
        dead_actions = {
            (op["action"], op["tags"][0]["name"])
            for op in operations
            if op["channel"] == {"$ref": f"#/channels/{dead}"}
        }
        assert dead_actions == {("receive", "operators")} | {("send", c) for c in info.consumers}
    assert len(channels) == 2 * len(Topics().all())


def test_every_reference_in_the_asyncapi_document_resolves() -> None:
    document = json.loads(contract_files(Topics())["asyncapi.json"])

    refs = _refs(document)

    assert len(refs) > 50
    for ref in refs:
        assert _resolve(document, ref) is not None, ref
    for operation in document["operations"].values():
        for message in operation["messages"]:  # an operation's messages must belong to its channel
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")


def test_the_export_follows_another_prefix() -> None:
    document = json.loads(contract_files(Topics("acme"))["asyncapi.json"])

    addresses = sorted(channel["address"] for channel in document["channels"].values())

    assert all(address.startswith("acme.") for address in addresses)
    assert "acme.batch.results.ready.v1.dlq" in addresses
