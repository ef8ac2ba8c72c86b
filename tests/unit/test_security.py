"""Teacher JWTs and internal service credentials, through the functions and through a real app."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import httpx
import jwt
import pytest
from fastapi import APIRouter, Depends

from huleedu.platform.bootstrap import ServiceUnit, build_adapters
from huleedu.platform.http import create_app
from huleedu.platform.security import (
    InvalidToken,
    bearer_token,
    decode_token,
    encode_token,
    internal_caller,
    same_secret,
    teacher,
)
from huleedu.platform.settings import Settings

SETTINGS = Settings(
    jwt_secret="test-signing-secret-of-enough-length",  # type: ignore[arg-type]
    internal_api_key="internal-key-1",  # type: ignore[arg-type]
    allowed_service_ids=["huleedu-bff", "websocket"],
)


def _reason(token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        decode_token(SETTINGS, token)
    return str(caught.value)


def test_a_token_we_issue_decodes_to_its_user_with_the_platform_claims() -> None:
    issued_at = datetime.now(UTC).replace(microsecond=0)
    token = encode_token(SETTINGS, "teacher-7", ttl_seconds=600, now=issued_at)

    decoded = decode_token(SETTINGS, token)
    raw = jwt.decode(token, options={"verify_signature": False})

    assert decoded.user_id == "teacher-7"
    assert decoded.expires_at == issued_at + timedelta(seconds=600)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert (raw["aud"], raw["iss"], raw["sub"]) == (
        "huleedu-platform",
        "huleedu-identity-service",
        "teacher-7",
    )


def test_an_expired_token_is_refused() -> None:
    token = encode_token(SETTINGS, "t", ttl_seconds=60, now=datetime.now(UTC) - timedelta(hours=1))

    assert _reason(token) == "token has expired"


def test_a_token_signed_with_another_secret_is_refused() -> None:
    other = Settings(jwt_secret="someone-elses-secret-of-enough-length")  # type: ignore[arg-type]

    assert _reason(encode_token(other, "t")) == "token signature does not verify"


def test_a_token_for_another_audience_or_from_another_issuer_is_refused() -> None:
    foreign_audience = Settings(jwt_secret=SETTINGS.jwt_secret, jwt_audience="other-platform")
    foreign_issuer = Settings(jwt_secret=SETTINGS.jwt_secret, jwt_issuer="someone")

    assert _reason(encode_token(foreign_audience, "t")) == "token is for another audience"
    assert _reason(encode_token(foreign_issuer, "t")) == "token is from another issuer"


def test_a_token_without_expiry_or_subject_is_refused() -> None:
    secret = SETTINGS.jwt_secret.get_secret_value()
    claims = {"aud": SETTINGS.jwt_audience, "iss": SETTINGS.jwt_issuer}
    no_exp = jwt.encode({**claims, "sub": "t"}, secret, algorithm="HS256")
    no_sub = jwt.encode(
        {**claims, "exp": datetime.now(UTC) + timedelta(minutes=5)}, secret, algorithm="HS256"
    )

    assert _reason(no_exp) == "token lacks the 'exp' claim"
    assert _reason(no_sub) == "token lacks the 'sub' claim"


def test_an_unsigned_token_and_garbage_are_refused() -> None:
    claims = {
        "sub": "t",
        "aud": SETTINGS.jwt_audience,
        "iss": SETTINGS.jwt_issuer,
        "exp": datetime.now(UTC) + timedelta(minutes=5),
    }
    unsigned = jwt.encode(claims, None, algorithm="none")

    assert _reason(unsigned).startswith("token is malformed")
    assert _reason("not.a.jwt").startswith("token is malformed")


def test_bearer_tokens_are_read_from_the_authorization_header_only_with_that_scheme() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer   abc") == "abc"
    assert bearer_token("Basic dXNlcjpwdw==") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_secrets_compare_equal_only_when_identical() -> None:
    assert same_secret("internal-key-1", "internal-key-1")
    assert not same_secret("internal-key-2", "internal-key-1")
    assert not same_secret("internal-key-1-and-more", "internal-key-1")
    assert not same_secret("", "internal-key-1")


# --- the dependencies inside a real app ---


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = SETTINGS.model_copy(update={"database_url": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite"})
    router = APIRouter()

    @router.get("/internal/v1/whoami")
    async def whoami(service: Annotated[str, Depends(internal_caller(settings))]) -> dict[str, str]:
        return {"service": service}

    @router.get("/v1/me")
    async def me(user: Annotated[str, Depends(teacher(settings))]) -> dict[str, str]:
        return {"user": user}

    async with build_adapters(settings) as adapters:
        app = create_app([ServiceUnit("probe", routers=[router])], adapters)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as http:
            yield http


async def test_internal_routes_need_the_key_and_an_allowed_service_id(client: httpx.AsyncClient) -> None:
    good = {"X-Internal-API-Key": "internal-key-1", "X-Service-ID": "websocket"}

    ok = await client.get("/internal/v1/whoami", headers=good)
    no_key = await client.get("/internal/v1/whoami", headers={"X-Service-ID": "websocket"})
    wrong_key = await client.get("/internal/v1/whoami", headers={**good, "X-Internal-API-Key": "guess"})
    stranger = await client.get("/internal/v1/whoami", headers={**good, "X-Service-ID": "mallory"})
    anonymous = await client.get("/internal/v1/whoami", headers={"X-Internal-API-Key": "internal-key-1"})

    assert (ok.status_code, ok.json()) == (200, {"service": "websocket"})
    assert [r.status_code for r in (no_key, wrong_key, stranger, anonymous)] == [401, 401, 403, 403]
    assert no_key.json()["error"]["code"] == "AUTHENTICATION_ERROR"
    assert wrong_key.json()["error"]["message"] == "X-Internal-API-Key is not valid"
    assert stranger.json()["error"]["code"] == "AUTHORIZATION_ERROR"
    assert stranger.json()["error"]["details"] == {"service_id": "mallory"}
    assert stranger.json()["error"]["operation"] == "GET /internal/v1/whoami"


async def test_teacher_routes_need_a_valid_bearer_token(client: httpx.AsyncClient) -> None:
    token = encode_token(SETTINGS, "teacher-1")
    expired = encode_token(SETTINGS, "teacher-1", now=datetime.now(UTC) - timedelta(days=2))
    foreign = encode_token(Settings(jwt_secret="a-foreign-secret-of-enough-length"), "teacher-1")  # type: ignore[arg-type]

    ok = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    missing = await client.get("/v1/me")
    late = await client.get("/v1/me", headers={"Authorization": f"Bearer {expired}"})
    forged = await client.get("/v1/me", headers={"Authorization": f"Bearer {foreign}"})

    assert (ok.status_code, ok.json()) == (200, {"user": "teacher-1"})
    assert [r.status_code for r in (missing, late, forged)] == [401, 401, 401]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert late.json()["error"]["message"] == "token has expired"
    assert forged.json()["error"]["message"] == "token signature does not verify"
    assert {r.json()["error"]["code"] for r in (missing, late, forged)} == {"AUTHENTICATION_ERROR"}
