"""The content table: one row per distinct text, keyed by the SHA-256 of its UTF-8 bytes."""

from sqlalchemy import Column, Integer, String, Table, Text

from huleedu.storage.metadata import UtcDateTime, metadata

# Immutable rows: the key is the hash of the text, so a text can never change under its id and
# storing the same text twice is a no-op.
content_texts = Table(
    "content_texts",
    metadata,
    Column("text_storage_id", String(64), primary_key=True),
    Column("text", Text, nullable=False),
    Column("byte_length", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

__all__ = ["content_texts"]
