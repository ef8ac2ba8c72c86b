"""Memory of `huleedu up` is bounded by its limits, not by the attacker: a 300 MB chunked body and a
55 KB .docx that unpacks to 19 MB of XML are refused with the process's peak RSS (VmHWM, reset
before each request) growing by less than 100 MiB, and the memory is given back afterwards.
How fast the bomb is refused is a figure of bench/hostile_input.py; here only that it is."""

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from huleedu.platform.security import encode_token
from huleedu.platform.settings import Settings
from support.services import JWT_SECRET
from support.system_process import MIB, SystemProcess, send_chunked
from support.waiting import eventually_sync

PEAK_GROWTH_MIB = 100
KEPT_AFTER_MIB = 32  # what the process may keep once the request is over (allocator caches)
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
WORD = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def docx_bomb(xml_bytes: int = 19 * MIB) -> bytes:
    """A .docx whose document part unpacks to `xml_bytes` of XML; about 50 KB."""
    paragraph = b"<w:p><w:r><w:t>" + b"a" * 1000 + b"</w:t></w:r></w:p>"
    head = f'<?xml version="1.0"?><w:document xmlns:w="{WORD}"><w:body>'.encode()
    body = head + paragraph * (xml_bytes // len(paragraph)) + b"</w:body></w:document>"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", body)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemProcess]:
    process = SystemProcess(tmp_path_factory.mktemp("hostile-up"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def teacher(system: SystemProcess) -> dict[str, str]:
    """A teacher's headers, after requests that take every code path once (imports, first
    allocations) without starting any processing in the background."""
    headers = {"Authorization": f"Bearer {encode_token(Settings(jwt_secret=JWT_SECRET), 'teacher-m')}"}
    with httpx.Client(base_url=system.url, headers=headers, timeout=30) as client:
        assert client.post("/v1/batches", json={"title": "t", "essays": []}).status_code == 422
        files = [("files", ("broken.docx", b"PK not a zip", DOCX))]
        assert client.post("/v1/batches/upload", data={"title": "t"}, files=files).status_code == 422
    return headers


def body_of(mib: int, prefix: bytes = b"") -> Iterator[bytes]:
    if prefix:  # an empty chunk would end the body
        yield prefix
    for _ in range(mib):
        yield b" " * MIB


@pytest.mark.parametrize(
    ("path", "content_type", "prefix"),
    [
        ("/v1/batches", "application/json", b""),
        (
            "/v1/batches/upload",
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\n',
        ),
    ],
)
def test_a_300_mb_chunked_body_is_refused_within_bounded_memory(
    system: SystemProcess, teacher: dict[str, str], path: str, content_type: str, prefix: bytes
) -> None:
    system.reset_peak()
    before = system.rss_mib()

    status, sent = send_chunked(
        system.port, path, {**teacher, "Content-Type": content_type}, body_of(300, prefix)
    )

    growth = system.peak_rss_mib() - before
    print(f"{path}: 413 after {sent / MIB:.0f} MiB sent; peak RSS +{growth:.1f} MiB")
    assert status == 413
    assert sent < 150 * MIB, "the server read on far past its 64 MiB limit"
    assert growth < PEAK_GROWTH_MIB
    # The 413 may reach us before the server has dropped what it read: wait for it to give it back.
    eventually_sync(
        lambda: system.rss_mib() - before,
        what=f"RSS back within {KEPT_AFTER_MIB} MiB of where it was",
        until=lambda kept: kept < KEPT_AFTER_MIB,
        seconds=30,
    )


def test_a_docx_bomb_is_refused_within_bounded_memory(system: SystemProcess, teacher: dict[str, str]) -> None:
    bomb = docx_bomb()
    assert len(bomb) < 60 * 1024
    system.reset_peak()
    before = system.rss_mib()

    with httpx.Client(base_url=system.url, headers=teacher, timeout=30) as client:
        response = client.post(
            "/v1/batches/upload", data={"title": "t"}, files=[("files", ("bomb.docx", bomb, DOCX))]
        )

    growth = system.peak_rss_mib() - before
    print(
        f"docx bomb: {response.status_code} after {response.elapsed.total_seconds():.3f} s; peak RSS +{growth:.1f} MiB"
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["fields"] == ["body.files.0"]
    assert growth < PEAK_GROWTH_MIB
    # The 413 may reach us before the server has dropped what it read: wait for it to give it back.
    eventually_sync(
        lambda: system.rss_mib() - before,
        what=f"RSS back within {KEPT_AFTER_MIB} MiB of where it was",
        until=lambda kept: kept < KEPT_AFTER_MIB,
        seconds=30,
    )


def test_the_server_answers_normally_after_the_attacks(
    system: SystemProcess, teacher: dict[str, str]
) -> None:
    response = httpx.get(f"{system.url}/healthz", timeout=10)

    assert response.status_code == 200
    assert Path(f"/proc/{system.pid}").exists()
