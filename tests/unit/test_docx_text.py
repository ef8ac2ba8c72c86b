"""The .docx reader: the same text python-docx finds in real documents, and every archive built to
exhaust memory or time refused before (or while) it is unpacked."""

import io
import struct
import time
import zipfile

import docx
import pytest

from huleedu.intake.docx_text import (
    MAX_DOCUMENT_BYTES,
    MAX_ENTRIES,
    UnreadableDocx,
    docx_text,
)

WORD = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def saved(document: object) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)  # type: ignore[attr-defined]
    return buffer.getvalue()


def python_docx_text(data: bytes) -> str:
    return "\n".join(paragraph.text for paragraph in docx.Document(io.BytesIO(data)).paragraphs)


def rich_document() -> bytes:
    document = docx.Document()
    document.add_heading("A title", level=1)
    document.add_paragraph("First paragraph, plain.")
    paragraph = document.add_paragraph("Runs: ")
    paragraph.add_run("bold").bold = True
    paragraph.add_run(" and\ttabbed")
    paragraph.add_run().add_break()
    paragraph.add_run("after a line break")
    document.add_paragraph("")
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "in a table"
    document.add_page_break()
    document.add_paragraph("Ünïcödé — ✓, and a last one.")
    return saved(document)


def archive(entries: dict[str, bytes], *, level: int = 9) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zipped:
        for name, content in entries.items():
            zipped.writestr(name, content)
    return buffer.getvalue()


def document_xml(body: bytes) -> bytes:
    return (
        f'<?xml version="1.0"?><w:document xmlns:w="{WORD}"><w:body>'.encode()
        + body
        + b"</w:body></w:document>"
    )


def test_the_text_is_what_python_docx_reads() -> None:
    data = rich_document()

    assert docx_text(data) == python_docx_text(data)


def test_hyperlinks_count_and_text_boxes_and_deletions_do_not() -> None:
    body = (
        b"<w:p><w:r><w:t>See </w:t></w:r><w:hyperlink><w:r><w:t>the link</w:t></w:r></w:hyperlink>"
        b"<w:del><w:r><w:delText>gone</w:delText></w:r></w:del>"
        b"<w:r><w:pict><w:txbxContent><w:p><w:r><w:t>boxed</w:t></w:r></w:p></w:txbxContent></w:pict></w:r>"
        b"<w:r><w:noBreakHyphen/><w:t>end</w:t></w:r></w:p>"
    )
    data = archive({"word/document.xml": document_xml(body)})

    assert docx_text(data) == "See the link-end"


def test_the_main_document_is_found_through_the_package_relationships() -> None:
    rels = (
        b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        b'<Relationship Id="r1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        b'relationships/officeDocument" Target="/elsewhere/main.xml"/></Relationships>'
    )
    body = document_xml(b"<w:p><w:r><w:t>found</w:t></w:r></w:p>")
    data = archive({"_rels/.rels": rels, "elsewhere/main.xml": body})

    assert docx_text(data) == "found"


def test_a_zip_bomb_is_refused_by_its_compression_ratio_at_once() -> None:
    paragraph = b"<w:p><w:r><w:t>" + b"a" * 1000 + b"</w:t></w:r></w:p>"
    bomb = archive({"word/document.xml": document_xml(paragraph * 19_000)})  # 19 MB of XML
    assert len(bomb) < 100 * 1024

    started = time.perf_counter()
    with pytest.raises(UnreadableDocx, match="compressed"):
        docx_text(bomb)
    assert time.perf_counter() - started < 5  # a guard against a parse, not a benchmark


def lie_about_sizes(data: bytes, size: int) -> bytes:
    """Rewrite every declared uncompressed size (local headers and directory) to `size`."""
    patched = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (found := patched.find(signature, start)) >= 0:
            patched[found + offset : found + offset + 4] = struct.pack("<I", size)
            start = found + 4
    return bytes(patched)


def test_a_bomb_whose_directory_lies_about_its_size_is_stopped_while_unpacking() -> None:
    xml = document_xml(b"<w:p><w:r><w:t>" + b"a" * (MAX_DOCUMENT_BYTES + 1024) + b"</w:t></w:r></w:p>")
    liar = lie_about_sizes(archive({"word/document.xml": xml}, level=1), 1000)

    with pytest.raises(UnreadableDocx):
        docx_text(liar)


def test_a_document_part_larger_than_the_limit_is_refused_without_parsing() -> None:
    xml = document_xml(
        b"<w:p><w:r><w:t>" + bytes(range(65, 91)) * (MAX_DOCUMENT_BYTES // 20) + b"</w:t></w:r></w:p>"
    )
    data = archive({"word/document.xml": xml}, level=0)  # stored: no ratio to give it away

    with pytest.raises(UnreadableDocx, match="at most"):
        docx_text(data)


def test_an_archive_of_too_many_parts_is_refused_before_it_is_opened() -> None:
    data = archive({f"part{i}.xml": b"<a/>" for i in range(MAX_ENTRIES + 1)})

    with pytest.raises(UnreadableDocx, match="too many parts"):
        docx_text(data)


def test_xml_that_declares_entities_is_refused() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        + f'<w:document xmlns:w="{WORD}"><w:body><w:p><w:r><w:t>&lol2;</w:t></w:r></w:p></w:body></w:document>'.encode()
    )

    with pytest.raises(UnreadableDocx, match="DTD"):
        docx_text(archive({"word/document.xml": laughs}))


def test_reading_stops_at_the_time_limit() -> None:
    paragraph = b"<w:p><w:r><w:t>" + b"word " * 200 + b"</w:t></w:r></w:p>"
    data = archive({"word/document.xml": document_xml(paragraph * 2000)}, level=0)

    with pytest.raises(UnreadableDocx, match="too long"):
        docx_text(data, time_limit_seconds=0.0)


@pytest.mark.parametrize(
    "data",
    [b"", b"not a zip", b"PK\x05\x06" + b"\x00" * 18, archive({"other.xml": b"<a/>"})],
    ids=["empty", "text", "empty zip", "no document"],
)
def test_what_is_no_docx_at_all_is_refused_as_unreadable(data: bytes) -> None:
    with pytest.raises(UnreadableDocx):
        docx_text(data)


def test_broken_xml_is_refused_as_unreadable() -> None:
    with pytest.raises(UnreadableDocx, match="broken XML"):
        docx_text(archive({"word/document.xml": b"<w:document><unclosed>"}))
