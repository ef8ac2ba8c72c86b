"""Schemathesis fuzzes the OpenAPI document that `huleedu up` serves, against that server (embedded
mode, its own process and port), with valid credentials for both kinds of caller: a teacher's JWT on
`/v1`, the internal key and an allowed X-Service-ID on `/internal/v1`. It fails on any 5xx, any
status, media type, header or body the document does not describe, and any request that hangs.

Deterministic: Hypothesis is derandomized (a fixed seed per operation) and keeps no example
database, so every run sends the same requests. Bounded: a few dozen examples per operation, plus
Schemathesis's coverage cases (boundaries, wrong types, unsupported methods); about a minute.
"""

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from huleedu.platform.security import encode_token
from huleedu.platform.settings import Settings
from support.services import API_KEY, JWT_SECRET, SERVICE_ID
from support.system_process import SystemProcess

EXAMPLES_PER_OPERATION = 12
REQUEST_TIMEOUT_SECONDS = 15.0  # a request that takes longer hangs, as far as this test is concerned
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemProcess]:
    process = SystemProcess(tmp_path_factory.mktemp("fuzzed-up"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def served_document(system: SystemProcess) -> OpenApiSchema:
    return schemathesis.openapi.from_url(f"{system.url}/openapi.json")


def credentials(path: str) -> dict[str, str]:
    if path.startswith("/internal/"):
        return {"X-Internal-API-Key": API_KEY, "X-Service-ID": SERVICE_ID}
    token = encode_token(Settings(jwt_secret=JWT_SECRET), "fuzzing-teacher")
    return {"Authorization": f"Bearer {token}"}


served = schemathesis.pytest.from_fixture("served_document")


@served.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_served_document_tells_what_the_server_answers(
    case: schemathesis.Case, system: SystemProcess
) -> None:
    headers = credentials(case.path)
    response = case.call(base_url=system.url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)
    case.validate_response(response, checks=CHECKS, headers=headers)
