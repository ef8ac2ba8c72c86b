"""The served OpenAPI document, made to tell what the server really answers.

FastAPI documents a 422 body that we never send (its HTTPValidationError), no body for the errors
a route lists, and no 5xx at all. Here every error response gets the one error body we do send
(`ErrorBody`), and every operation the 500 and 503 that any of them can give and, when it takes
parameters or a body, the 422. A fuzzer checks the result against the server (tests/integration).
"""

from typing import Any

from huleedu.contracts.errors import ErrorBody

JSON = "application/json"
ERROR_REF = "#/components/schemas/ErrorBody"
_FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"

EVERY_OPERATION = {
    "500": "internal error (a bug); nothing the client can change",
    "503": "the database or another service is unreachable; try again",
}
INVALID_REQUEST = "a parameter or body field is not valid; details.fields names each"
UNREADABLE_BODY = "the body cannot be read (not JSON, too deeply nested, broken multipart)"


def with_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Complete `document` (FastAPI's) in place and return it."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in error_schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas["ErrorBody"] = error_schema
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)

    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status, description in EVERY_OPERATION.items():
                responses.setdefault(status, {"description": description})
            if operation.get("parameters") or operation.get("requestBody"):
                responses.setdefault("422", {"description": INVALID_REQUEST})
            if operation.get("requestBody"):  # every body is parsed before it is validated
                responses.setdefault("400", {"description": UNREADABLE_BODY})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and _is_ours_to_fill(response):
                    response["content"] = {JSON: {"schema": {"$ref": ERROR_REF}}}
                    if response.get("description") == "Validation Error":
                        response["description"] = INVALID_REQUEST
    return document


def _is_ours_to_fill(response: dict[str, Any]) -> bool:
    """No body documented yet, or FastAPI's validation body that we never send."""
    content = response.get("content")
    if not content:
        return True
    schema = content.get(JSON, {}).get("schema", {})
    return bool(schema.get("$ref") == _FASTAPI_VALIDATION)
