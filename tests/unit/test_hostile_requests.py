"""Bad input on the HTTP surface of `huleedu up` (every service, embedded mode, in process): each
kind is a 4xx that names the field, never a 5xx, and the OpenAPI document says what is answered."""

import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from huleedu.platform.runner import SERVICES
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.views import MAX_OFFSET
from support.services import (
    INTERNAL_HEADERS,
    Services,
    copy_sqlite,
    running_services,
    service_settings,
    teacher_headers,
)

TEACHER = "teacher-eve"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
WORD = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


@pytest.fixture
def settings(sqlite_template: Path, tmp_path: Path) -> Settings:
    return service_settings(database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"))


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[Services]:
    names = list(SERVICES)
    async with running_services(settings, names) as services:
        yield services


@pytest.fixture
def teacher(settings: Settings) -> dict[str, str]:
    return teacher_headers(settings, TEACHER)


def essays(n: int = 2) -> list[dict[str, str]]:
    return [{"filename": f"e{i}.txt", "text": f"Essay {i} about phones in school."} for i in range(n)]


def fields(response: Any) -> list[str]:
    return list(response.json()["error"]["details"]["fields"])


# --- numbers ---


@pytest.mark.parametrize("offset", ["9223372036854775808", "-1", str(MAX_OFFSET + 1), "1e3", "true"])
async def test_an_offset_out_of_its_range_is_a_422_naming_it_on_both_list_routes(
    system: Services, teacher: dict[str, str], offset: str
) -> None:
    internal = await system.client.get(
        f"/internal/v1/batches/user/{TEACHER}?offset={offset}", headers=INTERNAL_HEADERS
    )
    mine = await system.client.get(f"/v1/batches?offset={offset}", headers=teacher)

    for response in (internal, mine):
        assert response.status_code == 422, response.text
        assert fields(response) == ["query.offset"]


@pytest.mark.parametrize("value", [True, 5.0, "5", 10**30, [5]])
async def test_max_comparisons_must_be_a_json_integer_in_range(
    system: Services, teacher: dict[str, str], value: object
) -> None:
    body = {"title": "t", "essays": essays(), "max_comparisons_per_essay": value}
    response = await system.client.post("/v1/batches", json=body, headers=teacher)

    assert response.status_code == 422, response.text
    assert fields(response) == ["body.max_comparisons_per_essay"]


@pytest.mark.parametrize("value", ["²", "٣", "9" * 5000, "-3", "1.5"])
async def test_a_form_number_that_is_not_ascii_digits_in_range_is_a_422(
    system: Services, teacher: dict[str, str], value: str
) -> None:
    response = await system.client.post(
        "/v1/batches/upload",
        data={"title": "t", "max_comparisons_per_essay": value},
        files=[("files", ("a.txt", b"An essay about phones.", "text/plain"))],
        headers=teacher,
    )

    assert response.status_code == 422, response.text
    assert fields(response) == ["body.max_comparisons_per_essay"]


@pytest.mark.parametrize(("field", "value"), [("title", 5), ("title", None), ("phases", "spellcheck")])
async def test_a_value_of_another_json_type_is_not_converted(
    system: Services, teacher: dict[str, str], field: str, value: object
) -> None:
    body = {"title": "t", "essays": essays(), field: value}
    response = await system.client.post("/v1/batches", json=body, headers=teacher)

    assert response.status_code == 422, response.text
    assert fields(response) == [f"body.{field}"]


# --- JSON nesting ---


@pytest.mark.parametrize("where", ["top", "field", "ignored field"])
async def test_json_nested_100000_deep_is_refused_as_unreadable(
    system: Services, teacher: dict[str, str], where: str
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    raw = {
        "top": deep,
        "field": '{"title": ' + deep + ', "essays": []}',
        "ignored field": '{"title": "t", "essays": [], "extra": ' + deep + "}",
    }[where]
    response = await system.client.post(
        "/v1/batches", content=raw.encode(), headers={**teacher, "Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert "nested deeper" in response.json()["error"]["message"]
    assert fields(response) == ["body"]


async def test_json_nested_deep_with_invalid_utf8_is_refused_as_unreadable(
    system: Services, teacher: dict[str, str]
) -> None:
    raw = b'{"title": "\xff", "essays": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await system.client.post(
        "/v1/batches", content=raw, headers={**teacher, "Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text


# --- bodies ---


async def test_a_body_streamed_past_the_limit_is_a_413_before_it_is_read_whole(
    system: Services, teacher: dict[str, str]
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the server learns the size as it reads
        nonlocal sent
        for _ in range(100):  # 100 MiB offered
            sent += 1
            yield b" " * (1024 * 1024)

    response = await system.client.post(
        "/v1/batches", content=chunks(), headers={**teacher, "Content-Type": "application/json"}
    )

    assert response.status_code == 413, response.text
    assert fields(response) == ["body"]
    assert sent <= 66, "the server read on past its limit"


async def test_the_content_store_refuses_an_empty_a_nul_and_an_oversized_text(system: Services) -> None:
    empty = await system.client.post("/internal/v1/content", headers=INTERNAL_HEADERS)
    nul = await system.client.post("/internal/v1/content", content=b"a\x00b", headers=INTERNAL_HEADERS)

    async def three_mib() -> AsyncIterator[bytes]:  # chunked: no Content-Length
        for _ in range(3):
            yield b"x" * (1024 * 1024)

    large = await system.client.post("/internal/v1/content", content=three_mib(), headers=INTERNAL_HEADERS)

    assert (empty.status_code, fields(empty)) == (422, ["body"])
    assert (nul.status_code, fields(nul)) == (422, ["body"])
    assert "NUL" in nul.json()["error"]["message"]
    assert (large.status_code, fields(large)) == (413, ["body"])


def docx_bomb(xml_bytes: int = 19 * 1024 * 1024) -> bytes:
    """A .docx whose document part unpacks to `xml_bytes` of XML (about 55 KB compressed)."""
    paragraph = b"<w:p><w:r><w:t>" + b"a" * 1000 + b"</w:t></w:r></w:p>"
    head = f'<?xml version="1.0"?><w:document xmlns:w="{WORD}"><w:body>'.encode()
    body = head + paragraph * (xml_bytes // len(paragraph)) + b"</w:body></w:document>"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("word/document.xml", body)
    return buffer.getvalue()


async def test_a_docx_bomb_is_refused_naming_the_file(system: Services, teacher: dict[str, str]) -> None:
    bomb = docx_bomb()
    assert len(bomb) < 100 * 1024
    response = await system.client.post(
        "/v1/batches/upload",
        data={"title": "t"},
        files=[("files", ("bomb.docx", bomb, DOCX))],
        headers=teacher,
    )

    assert response.status_code == 422, response.text
    assert fields(response) == ["body.files.0"]
    assert "bomb.docx" in response.json()["error"]["message"]


# --- text that a database cannot store, in any path or query parameter ---


@pytest.mark.parametrize(
    "path",
    [
        "/internal/v1/batches/a%00b/status",
        "/internal/v1/batches/user/a%00b",
        "/internal/v1/content/a%00b",
        "/internal/v1/essays/a%00b",
        "/internal/v1/essays/e1?batch_id=a%00b",
        "/internal/v1/batches/a%00b/essays",
    ],
)
async def test_a_nul_in_an_internal_path_or_query_parameter_is_a_422(system: Services, path: str) -> None:
    response = await system.client.get(path, headers=INTERNAL_HEADERS)

    assert response.status_code == 422, response.text


@pytest.mark.parametrize("path", ["/v1/batches/a%00b", "/v1/batches/a%00b/results.csv"])
async def test_a_nul_in_a_teacher_path_parameter_is_a_422(
    system: Services, teacher: dict[str, str], path: str
) -> None:
    response = await system.client.get(path, headers=teacher)

    assert response.status_code == 422, response.text
    assert fields(response) == ["path.batch_id"]


# --- methods and the document ---


async def test_options_names_every_method_of_a_path_served_by_two_routes(system: Services) -> None:
    response = await system.client.options("/v1/batches")

    assert response.status_code == 204
    assert response.headers["Allow"] == "GET, OPTIONS, POST"


async def test_a_method_a_path_does_not_take_is_a_405_naming_every_method_it_does(system: Services) -> None:
    response = await system.client.delete("/v1/batches")
    put = await system.client.put("/internal/v1/batches/b1/status")

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, OPTIONS, POST"
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert (put.status_code, put.headers["Allow"]) == (405, "GET, OPTIONS")


async def test_metrics_are_documented_and_served_as_prometheus_text(system: Services) -> None:
    document = (await system.client.get("/openapi.json")).json()
    served = await system.client.get("/metrics")

    documented = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert [media.split(";")[0] for media in documented] == ["text/plain"]
    assert served.headers["content-type"].split(";")[0] == "text/plain"


async def test_every_operation_documents_its_errors_with_the_error_body(system: Services) -> None:
    document = (await system.client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]

    assert "HTTPValidationError" not in schemas
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"500", "503"} <= set(responses), f"{method} {path}"
            for status, response in responses.items():
                if int(status) >= 400 and path != "/healthz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, f"{method} {path} {status}"


def _merged(outer: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
    """Both schemas' keywords (both apply to the value), nested objects merged alike."""
    merged = dict(outer)
    for key, value in inner.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both else value
    return merged


def _unbounded(schema: dict[str, Any], document: dict[str, Any], where: str) -> list[str]:
    """Every integer without both bounds, string without maxLength and array without maxItems."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _unbounded(document["components"]["schemas"][name], document, where)
    found = []
    options = schema.get("anyOf", [])
    if options:  # keywords beside anyOf apply to every option (a bound on an Optional field)
        shared = {key: value for key, value in schema.items() if key not in ("anyOf", "type")}
        for option in options:
            found += _unbounded(_merged(shared, option), document, where)
        return found
    kind = schema.get("type")
    if kind == "integer" and not {"minimum", "maximum"} <= set(schema):
        found.append(where)
    if kind == "string" and "maxLength" not in schema and "enum" not in schema and "format" not in schema:
        found.append(where)
    if kind == "array":
        if "maxItems" not in schema:
            found.append(where)
        found += _unbounded(schema.get("items", {}), document, f"{where}[]")
    for name, child in schema.get("properties", {}).items():
        found += _unbounded(child, document, f"{where}.{name}")
    return found


async def test_every_parameter_and_body_field_has_documented_bounds(system: Services) -> None:
    document = (await system.client.get("/openapi.json")).json()

    unbounded = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] in ("path", "query"):
                    where = f"{method} {path} {parameter['name']}"
                    unbounded += _unbounded(parameter["schema"], document, where)
                    schema = parameter["schema"]
                    strings = [schema] if schema.get("type") == "string" else schema.get("anyOf", [])
                    for option in strings:
                        if option.get("type") == "string" and "enum" not in option:
                            assert "^[^\\x00]+$" in (option.get("pattern"), schema.get("pattern")), where
            for media, body in operation.get("requestBody", {}).get("content", {}).items():
                unbounded += _unbounded(body["schema"], document, f"{method} {path} {media}")

    assert unbounded == []
