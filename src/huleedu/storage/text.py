"""Which strings a database can store: the one rule both dialects must apply the same way.

PostgreSQL refuses U+0000 in text and cannot encode a lone surrogate (U+D800..U+DFFF) as UTF-8;
SQLite would store both. So every boundary (HTTP fields, consumed events) refuses them up front,
with the field named, and the two modes answer alike instead of one of them failing at INSERT.
"""

import re

# For path and query parameters (OpenAPI `pattern`): one or more characters, none of them NUL. A
# URL cannot carry a lone surrogate, so NUL is all that needs saying there.
NO_NUL_PATTERN = r"^[^\x00]+$"

# NUL, or a surrogate that is not part of a pair (Python strings hold surrogates only unpaired).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_reason(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None when it can."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return f"contains a NUL character (U+0000) at character {found.start()}"
    return f"is not valid UTF-8 text (a lone surrogate at character {found.start()})"


def check_storable(value: str) -> str:
    """A pydantic/FastAPI validator: `value` unchanged, or ValueError saying what is wrong."""
    reason = unstorable_reason(value)
    if reason is not None:
        raise ValueError(reason)
    return value


def storable(value: str) -> str:
    """`value` with every unstorable character replaced by U+FFFD (for text we must keep anyway,
    such as the reason a record was dead-lettered)."""
    return _UNSTORABLE.sub("\ufffd", value)
