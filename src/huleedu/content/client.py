"""How services read and write texts: the `ContentClient` port and its two adapters.

`HttpContentClient` calls the content store's internal API (a split deployment);
`LocalContentClient` reads and writes the content table of the shared database inside the caller's
transaction. Bootstrap chooses (`HULEEDU_CONTENT_URL`). The local one must share the caller's
session: on SQLite a second transaction would wait for the caller's write lock forever. So services
hold a `ContentAccess`, which gives the client for a session: `deps.content(uow.session)`.
"""

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.content.store import ContentStore
from huleedu.messaging.errors import TransientError

CONTENT_PATH = "/internal/v1/content"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_CONCURRENCY = 8


class ContentUnavailable(TransientError):
    """The content store did not answer (down, timed out, 5xx): try again later."""


class ContentRefused(Exception):
    """The content store refused us (401/403) or answered nonsense: a configuration error,
    not worth retrying forever."""


class ContentClient(Protocol):
    async def fetch_many(self, ids: Sequence[str]) -> dict[str, str]:
        """The texts of `ids` that exist; an unknown id is absent from the result.
        Raises ContentUnavailable when the store cannot say."""

    async def store_many(self, texts: Sequence[str]) -> list[str]:
        """Store texts (idempotent); returns their text_storage_ids in order."""


# A client for the caller's session (the local adapter works in it; the HTTP one ignores it).
ContentAccess = Callable[[AsyncSession], ContentClient]


class LocalContentClient:
    """The content table of the shared database, in the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._store = ContentStore(session)

    async def fetch_many(self, ids: Sequence[str]) -> dict[str, str]:
        return await self._store.get_many(ids)

    async def store_many(self, texts: Sequence[str]) -> list[str]:
        return await self._store.put_many(texts)


class HttpContentClient:
    """The content store's `/internal/v1/content` API, with the internal credentials of `service_id`.
    Requests run concurrently, at most `concurrency` at a time."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        service_id: str,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        concurrency: int = DEFAULT_CONCURRENCY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"X-Internal-API-Key": api_key, "X-Service-ID": service_id},
            timeout=timeout_seconds,
            transport=transport,
        )
        self._slots = asyncio.Semaphore(concurrency)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch_many(self, ids: Sequence[str]) -> dict[str, str]:
        unique = list(dict.fromkeys(ids))
        texts = await asyncio.gather(*(self._fetch(text_id) for text_id in unique))
        return {text_id: text for text_id, text in zip(unique, texts, strict=True) if text is not None}

    async def store_many(self, texts: Sequence[str]) -> list[str]:
        return list(await asyncio.gather(*(self._store(text) for text in texts)))

    async def _fetch(self, text_id: str) -> str | None:
        response = await self._send("GET", f"{CONTENT_PATH}/{text_id}")
        if response.status_code == 404:
            return None
        _check(response, expected=200)
        return response.content.decode("utf-8")

    async def _store(self, text: str) -> str:
        response = await self._send(
            "POST",
            CONTENT_PATH,
            content=text.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        _check(response, expected=201)
        text_id = response.json().get("text_storage_id")
        if not isinstance(text_id, str):
            raise ContentRefused(f"content store answered without a text_storage_id: {response.text[:200]}")
        return text_id

    async def _send(
        self, method: str, path: str, *, content: bytes | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        async with self._slots:
            try:
                return await self._client.request(method, path, content=content, headers=headers)
            except httpx.TransportError as exc:
                raise ContentUnavailable(f"content store unreachable: {exc!r}") from exc


def _check(response: httpx.Response, *, expected: int) -> None:
    if response.status_code == expected:
        return
    reason = f"content store answered {response.status_code}: {response.text[:300]}"
    if response.status_code >= 500 or response.status_code == 429:
        raise ContentUnavailable(reason)
    raise ContentRefused(reason)
