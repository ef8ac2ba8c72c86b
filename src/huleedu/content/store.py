"""ContentStore: the content table's SQL, inside the caller's transaction (it never commits)."""

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.content.tables import content_texts
from huleedu.storage.dialect import insert_ignoring_duplicates

# Rows per INSERT: far below PostgreSQL's 32767 bind parameters, small enough to keep
# statements of 100 KB texts reasonable.
_CHUNK = 200


def text_storage_id(text: str) -> str:
    """The id of `text`: the hex SHA-256 of its UTF-8 bytes. Raises UnicodeEncodeError for text
    that is not valid Unicode (lone surrogates)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ContentStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def put_many(self, texts: Sequence[str]) -> list[str]:
        """Store texts (idempotent: a known text is left as it is); returns their ids in order."""
        ids = [text_storage_id(text) for text in texts]
        now = datetime.now(UTC)
        rows = {
            text_id: {
                "text_storage_id": text_id,
                "text": text,
                "byte_length": len(text.encode("utf-8")),
                "created_at": now,
            }
            for text_id, text in zip(ids, texts, strict=True)
        }
        unique = list(rows.values())
        for start in range(0, len(unique), _CHUNK):
            await self._session.execute(
                insert_ignoring_duplicates(self._session, content_texts, unique[start : start + _CHUNK])
            )
        return ids

    async def get_many(self, ids: Iterable[str]) -> dict[str, str]:
        """The texts of the known ids; unknown ids are simply absent."""
        wanted = sorted(set(ids))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), _CHUNK):
            result = await self._session.execute(
                select(content_texts.c.text_storage_id, content_texts.c.text).where(
                    content_texts.c.text_storage_id.in_(wanted[start : start + _CHUNK])
                )
            )
            found.update({text_id: text for text_id, text in result.tuples()})
        return found
