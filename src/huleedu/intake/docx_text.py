"""The text of an uploaded .docx, read within fixed limits of memory and time.

A .docx is a zip archive, and a small one can unpack to gigabytes (a zip bomb) or hold XML made to
exhaust a parser. So nothing is decompressed before the archive's directory passed its checks
(entry count, declared sizes, compression ratio); then only the main document part is read, as a
stream: decompressed in chunks, counted, parsed by expat as it comes (no tree is built, DTDs are
refused) and stopped at a deadline. Memory stays near the size of the text itself.

The text is what python-docx calls a document's paragraphs: the body's paragraphs, one per line,
each the text of its runs (`w:t`, tabs, line breaks, non-breaking hyphens), hyperlinks included.
"""

import io
import time
import zipfile
import zlib
from xml.parsers import expat

MAX_ENTRIES = 1_000  # a Word document has a few dozen parts
MAX_DIRECTORY_BYTES = 1024 * 1024  # the zip's central directory, read whole by zipfile
MAX_UNCOMPRESSED_BYTES = 64 * 1024 * 1024  # all parts together, as the archive declares them
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024  # the main document's XML; 100 KiB of text takes far less
MAX_RELATIONSHIPS_BYTES = 256 * 1024
MAX_COMPRESSION_RATIO = 100  # XML compresses 5-20x; a bomb compresses hundreds of times
RATIO_CHECKED_ABOVE_BYTES = 64 * 1024  # tiny parts may compress well without harm
TIME_LIMIT_SECONDS = 5.0
CHUNK_BYTES = 64 * 1024

_END_OF_DIRECTORY = b"PK\x05\x06"
_END_RECORD_BYTES = 22
_MAX_COMMENT_BYTES = 65_535
_WORD = frozenset(
    {
        "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
        "http://purl.oclc.org/ooxml/wordprocessingml/main",  # strict OOXML
    }
)
_OFFICE_DOCUMENT = "/officeDocument"
_DEFAULT_MAIN = "word/document.xml"
_RUN_TEXT = {"tab": "\t", "ptab": "\t", "cr": "\n", "noBreakHyphen": "-"}


class UnreadableDocx(ValueError):
    """Not a .docx we read: the message completes "the file ...", e.g. "is not a zip archive"."""


def docx_text(data: bytes, *, time_limit_seconds: float = TIME_LIMIT_SECONDS) -> str:
    """The paragraphs of the .docx in `data`, one per line. Raises UnreadableDocx.

    CPU-bound for up to `time_limit_seconds`: call it in a worker thread.
    """
    deadline = time.monotonic() + time_limit_seconds
    _check_directory_size(data)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_entries(archive.infolist())
            main = _main_document(archive, deadline)
            paragraphs = _Paragraphs()
            _parse(archive, main, MAX_DOCUMENT_BYTES, paragraphs.parser(), deadline)
            return "\n".join(paragraphs.found)
    except UnreadableDocx:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise UnreadableDocx(f"is not a readable .docx file (damaged archive: {exc})") from exc
    except (NotImplementedError, RuntimeError) as exc:  # an unknown compression method, encryption
        raise UnreadableDocx(f"is not a readable .docx file ({exc})") from exc
    except expat.ExpatError as exc:
        raise UnreadableDocx(f"is not a readable .docx file (broken XML: {exc})") from exc


def _check_directory_size(data: bytes) -> None:
    """zipfile reads the whole central directory into objects: bound it before it does."""
    end = data.rfind(_END_OF_DIRECTORY, max(0, len(data) - _END_RECORD_BYTES - _MAX_COMMENT_BYTES))
    if end < 0 or len(data) < end + _END_RECORD_BYTES:
        raise UnreadableDocx("is not a readable .docx file (not a zip archive)")
    entries = int.from_bytes(data[end + 10 : end + 12], "little")
    directory_bytes = int.from_bytes(data[end + 12 : end + 16], "little")
    if entries > MAX_ENTRIES or directory_bytes > MAX_DIRECTORY_BYTES:
        raise UnreadableDocx(f"has too many parts for a .docx file (more than {MAX_ENTRIES})")


def _check_entries(entries: list[zipfile.ZipInfo]) -> None:
    if len(entries) > MAX_ENTRIES:
        raise UnreadableDocx(f"has too many parts for a .docx file (more than {MAX_ENTRIES})")
    declared = sum(entry.file_size for entry in entries)
    if declared > MAX_UNCOMPRESSED_BYTES:
        raise UnreadableDocx(f"unpacks to {declared} bytes; at most {MAX_UNCOMPRESSED_BYTES}")
    for entry in entries:
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > RATIO_CHECKED_ABOVE_BYTES and ratio > MAX_COMPRESSION_RATIO:
            raise UnreadableDocx(
                f"is compressed {ratio:.0f} times ({entry.filename}); at most {MAX_COMPRESSION_RATIO}"
                " (a zip bomb?)"
            )


def _main_document(archive: zipfile.ZipFile, deadline: float) -> zipfile.ZipInfo:
    """The part the package's relationships name as the office document (usually word/document.xml)."""
    name = _DEFAULT_MAIN
    try:
        relationships = archive.getinfo("_rels/.rels")
    except KeyError:
        relationships = None
    if relationships is not None:
        found = _RelationshipTarget()
        _parse(archive, relationships, MAX_RELATIONSHIPS_BYTES, found.parser(), deadline)
        name = found.target or name
    try:
        return archive.getinfo(name)
    except KeyError:
        raise UnreadableDocx("is not a .docx file (it has no main document)") from None


def _parse(
    archive: zipfile.ZipFile,
    entry: zipfile.ZipInfo,
    max_bytes: int,
    parser: "expat.XMLParserType",
    deadline: float,
) -> None:
    """Feed one part to `parser` chunk by chunk, refusing it past `max_bytes` or the deadline."""
    if entry.file_size > max_bytes:
        raise UnreadableDocx(f"has a {entry.filename} of {entry.file_size} bytes; at most {max_bytes}")
    read = 0
    with archive.open(entry) as stream:
        while chunk := stream.read(CHUNK_BYTES):
            read += len(chunk)
            if read > max_bytes:  # the declared size lied
                raise UnreadableDocx(f"has a {entry.filename} larger than {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise UnreadableDocx("took too long to read")
            parser.Parse(chunk, False)
    parser.Parse(b"", True)


def _new_parser() -> "expat.XMLParserType":
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.buffer_text = True

    def refuse_dtd(*_: object) -> None:
        raise UnreadableDocx("is not a .docx file (its XML declares a DTD)")

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    return parser


def _split(name: str) -> tuple[str, str]:
    uri, _, local = name.rpartition(" ")
    return uri, local


class _RelationshipTarget:
    def __init__(self) -> None:
        self.target: str | None = None

    def parser(self) -> "expat.XMLParserType":
        parser = _new_parser()
        parser.StartElementHandler = self._start
        return parser

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        if (
            self.target is None
            and _split(name)[1] == "Relationship"
            and attributes.get("Type", "").endswith(_OFFICE_DOCUMENT)
            and attributes.get("TargetMode") != "External"
        ):
            self.target = attributes.get("Target", "").lstrip("/") or None


class _Paragraphs:
    """Collects the text of the body's paragraphs while expat reads the main document."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self._open: list[str] = []  # local names of the open Word elements ("" for any other)
        self._paragraph: list[str] | None = None  # text of the body paragraph being read
        self._paragraph_level = 0  # its index in `_open`
        self._in_text = False

    def parser(self) -> "expat.XMLParserType":
        parser = _new_parser()
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        return parser

    def _run_paragraph(self) -> list[str] | None:
        """The body paragraph, when the element about to open is a direct child of one of its runs
        (or of a run of one of its hyperlinks); else None."""
        inner = self._open[self._paragraph_level + 1 :]
        return self._paragraph if inner in (["r"], ["hyperlink", "r"]) else None

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        uri, local = _split(name)
        tag = local if uri in _WORD else ""
        if tag == "p" and self._paragraph is None and self._open and self._open[-1] == "body":
            self._paragraph, self._paragraph_level = [], len(self._open)
        elif tag and (paragraph := self._run_paragraph()) is not None:
            if tag == "t":
                self._in_text = True
            elif tag == "br":
                kind = next((value for key, value in attributes.items() if _split(key)[1] == "type"), "")
                if kind in ("", "textWrapping"):  # page and column breaks are no text
                    paragraph.append("\n")
            elif tag in _RUN_TEXT:
                paragraph.append(_RUN_TEXT[tag])
        self._open.append(tag)

    def _end(self, name: str) -> None:
        tag = self._open.pop()
        if tag == "t":
            self._in_text = False
        elif tag == "p" and self._paragraph is not None and len(self._open) == self._paragraph_level:
            self.found.append("".join(self._paragraph))
            self._paragraph = None

    def _text(self, data: str) -> None:
        if self._in_text and self._paragraph is not None:
            self._paragraph.append(data)
