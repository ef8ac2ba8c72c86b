"""Who may call us: internal services by API key and service id, teachers by JWT (docs/contracts.md, "HTTP").

Internal routes depend on `internal_caller(settings)`; teacher routes on `teacher(settings)`. Both raise
`ApiError`, so a refusal is the structured error body with 401 or 403. `huleedu token` uses
`encode_token` to print a development JWT.
"""

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
from fastapi import Header, Security
from fastapi.security import APIKeyHeader

from huleedu.contracts.enums import ErrorCode
from huleedu.platform.http import ApiError
from huleedu.platform.settings import Settings
from huleedu.storage.text import unstorable_reason

ALGORITHM = "HS256"
DEFAULT_TTL_SECONDS = 8 * 3600
REQUIRED_CLAIMS = ["exp", "sub", "aud", "iss"]
AUTHORIZATION_FIELD = "header.Authorization"  # named in the error details of a refused token
MAX_USER_ID_CHARS = 255  # what every table keeps of a user id


class InvalidToken(ValueError):
    """A JWT we must not trust; the message says why (expired, wrong audience, bad signature...)."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    expires_at: datetime
    claims: dict[str, Any]


def encode_token(
    settings: Settings,
    user_id: str,
    *,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: datetime | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """A signed HS256 token for `user_id` with the platform's audience and issuer."""
    if not user_id or len(user_id) > MAX_USER_ID_CHARS or unstorable_reason(user_id) is not None:
        raise ValueError(f"user_id must be 1..{MAX_USER_ID_CHARS} storable characters")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    issued = now or datetime.now(UTC)
    claims = {
        **(extra_claims or {}),
        "sub": user_id,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl_seconds)).timestamp()),
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)


def decode_token(settings: Settings, token: str) -> TokenClaims:
    """Verify signature, audience, issuer and expiry. Raises InvalidToken with the reason."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidToken("token is for another audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidToken("token is from another issuer") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidToken("token signature does not verify") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"token lacks the {exc.claim!r} claim") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"token is malformed: {exc}") from exc
    user_id = claims.get("sub")
    if not isinstance(user_id, str) or not user_id:
        raise InvalidToken("token subject must be a non-empty user id")
    if len(user_id) > MAX_USER_ID_CHARS or unstorable_reason(user_id) is not None:
        raise InvalidToken(
            f"token subject must be a user id of at most {MAX_USER_ID_CHARS} storable characters"
        )
    return TokenClaims(user_id=user_id, expires_at=datetime.fromtimestamp(claims["exp"], UTC), claims=claims)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison, so response timing does not reveal how much of a key was right."""
    return hmac.compare_digest(given.encode(), expected.encode())


# Declared as API-key security schemes: OpenAPI documents both headers, and reading them is a plain
# header lookup (a Header() parameter costs a validation per request on the hottest routes).
_API_KEY_HEADER = APIKeyHeader(
    name="X-Internal-API-Key", auto_error=False, description="the internal API key"
)
_SERVICE_ID_HEADER = APIKeyHeader(name="X-Service-ID", auto_error=False, description="the calling service")


InternalCheck = Callable[[str | None, str | None], ApiError | None]


def internal_check(settings: Settings) -> InternalCheck:
    """(X-Internal-API-Key, X-Service-ID) -> the refusal to answer with, or None for a caller we
    serve. Missing or wrong key -> 401; service id missing or not in `HULEEDU_ALLOWED_SERVICE_IDS` ->
    403. The key is checked first, so a stranger learns nothing about which service ids exist."""
    expected = settings.internal_api_key.get_secret_value()
    allowed = frozenset(settings.allowed_service_ids)

    def refusal(api_key: str | None, service_id: str | None) -> ApiError | None:
        if api_key is None:
            return ApiError(ErrorCode.AUTHENTICATION_ERROR, "X-Internal-API-Key header is required")
        if not same_secret(api_key, expected):
            return ApiError(ErrorCode.AUTHENTICATION_ERROR, "X-Internal-API-Key is not valid")
        if not service_id or service_id not in allowed:
            return ApiError(
                ErrorCode.AUTHORIZATION_ERROR,
                "X-Service-ID is not allowed to call this service",
                details={"service_id": service_id},
            )
        return None

    return refusal


def internal_caller(settings: Settings) -> Callable[..., Awaitable[str]]:
    """A FastAPI dependency for `/internal/v1` routes; it returns the calling service's id, or
    raises the refusal of `internal_check`."""
    check_headers = internal_check(settings)

    async def check(
        x_internal_api_key: Annotated[str | None, Security(_API_KEY_HEADER)],
        x_service_id: Annotated[str | None, Security(_SERVICE_ID_HEADER)],
    ) -> str:
        refused = check_headers(x_internal_api_key, x_service_id)
        if refused is not None:
            raise refused
        assert x_service_id is not None  # accepted callers name themselves
        return x_service_id

    return check


def teacher(settings: Settings) -> Callable[..., Awaitable[str]]:
    """A FastAPI dependency for teacher-facing routes; it returns the user id of the bearer token.

    Missing, malformed, expired or foreign-signed token -> 401 with the reason in the message.
    """

    async def check(
        authorization: Annotated[str | None, Header(description="Bearer <JWT>")] = None,
    ) -> str:
        token = bearer_token(authorization)
        if token is None:
            raise ApiError(
                ErrorCode.AUTHENTICATION_ERROR,
                "Authorization: Bearer <token> header is required",
                details={"field": AUTHORIZATION_FIELD},
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            return decode_token(settings, token).user_id
        except InvalidToken as exc:
            raise ApiError(
                ErrorCode.AUTHENTICATION_ERROR,
                str(exc),
                details={"field": AUTHORIZATION_FIELD},
                headers={"WWW-Authenticate": "Bearer"},
            ) from exc

    return check
