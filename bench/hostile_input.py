"""What hostile input costs `huleedu up` (embedded mode, its own process): peak memory of refusing a
300 MB chunked body and a .docx bomb, how fast the bomb is refused, and how long teacher reads take
while submissions pour in (SQLite: readers never wait for the writer).

    .venv/bin/python bench/hostile_input.py [--bombs 20] [--submissions 20] [--reads 200]

Peak memory is the process's VmHWM, reset (/proc/PID/clear_refs) right before each request.
"""

import argparse
import asyncio
import io
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx

from huleedu.platform.security import encode_token
from huleedu.platform.settings import Settings
from support.services import JWT_SECRET
from support.stats import percentile
from support.system_process import MIB, SystemProcess, send_chunked

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
WORD = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def docx_bomb(xml_bytes: int = 19 * MIB) -> bytes:
    paragraph = b"<w:p><w:r><w:t>" + b"a" * 1000 + b"</w:t></w:r></w:p>"
    head = f'<?xml version="1.0"?><w:document xmlns:w="{WORD}"><w:body>'.encode()
    body = head + paragraph * (xml_bytes // len(paragraph)) + b"</w:body></w:document>"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("word/document.xml", body)
    return buffer.getvalue()


def spaces(mib: int) -> Iterator[bytes]:
    for _ in range(mib):
        yield b" " * MIB


def chunked_bodies(system: SystemProcess, teacher: dict[str, str]) -> None:
    form_head = b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\n'
    for path, content_type, first in (
        ("/v1/batches", "application/json", None),
        ("/v1/batches/upload", "multipart/form-data; boundary=xyz", form_head),
    ):
        system.reset_peak()
        before = system.rss_mib()
        chunks = spaces(300) if first is None else iter([first, *spaces(300)])
        status, sent = send_chunked(system.port, path, {**teacher, "Content-Type": content_type}, chunks)
        print(
            f"300 MB chunked to {path}: {status} after {sent / MIB:.0f} MiB; "
            f"peak RSS +{system.peak_rss_mib() - before:.1f} MiB, kept +{system.rss_mib() - before:.1f} MiB"
        )


def bombs(system: SystemProcess, teacher: dict[str, str], count: int) -> None:
    bomb = docx_bomb()
    seconds, growth = [], []
    with httpx.Client(base_url=system.url, headers=teacher, timeout=60) as client:
        for _ in range(count):
            system.reset_peak()
            before = system.rss_mib()
            started = time.perf_counter()
            response = client.post(
                "/v1/batches/upload", data={"title": "t"}, files=[("files", ("bomb.docx", bomb, DOCX))]
            )
            seconds.append(time.perf_counter() - started)
            growth.append(system.peak_rss_mib() - before)
            assert response.status_code == 422, response.text
    print(
        f".docx bomb ({len(bomb) // 1024} KB -> 19 MiB of XML), {count} uploads: refused in median "
        f"{percentile(seconds, 0.5) * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms; "
        f"peak RSS +{max(growth):.1f} MiB at most"
    )


async def reads_while_submitting(
    system: SystemProcess, teacher: dict[str, str], submissions: int, reads: int
) -> None:
    essays = [
        {"filename": f"e{i}.txt", "text": f"Essay {i} abuot phones in shcool, argued well."}
        for i in range(30)
    ]
    body = {"title": "busy", "essays": essays}
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=system.url, headers=teacher, timeout=60) as client:

        async def submit() -> None:
            assert (await client.post("/v1/batches", json=body)).status_code == 202

        async def read() -> None:
            started = time.perf_counter()
            assert (await client.get("/v1/batches?limit=50")).status_code == 200
            latencies.append(time.perf_counter() - started)

        async def reader() -> None:
            for _ in range(reads // 4):
                await read()

        await asyncio.gather(*(submit() for _ in range(submissions)), *(reader() for _ in range(4)))
    print(
        f"GET /v1/batches during {submissions} concurrent submissions of 30 essays (and their processing): "
        f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} reads"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bombs", type=int, default=20)
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        system = SystemProcess(Path(directory))
        system.start()
        try:
            token = encode_token(Settings(jwt_secret=JWT_SECRET), "bench-teacher")
            teacher = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=system.url, headers=teacher, timeout=30) as client:  # warm every path
                client.post("/v1/batches", json={"title": "t", "essays": []})
                client.post(
                    "/v1/batches/upload", data={"title": "t"}, files=[("files", ("x.docx", b"PK", DOCX))]
                )
            chunked_bodies(system, teacher)
            bombs(system, teacher, args.bombs)
            asyncio.run(reads_while_submitting(system, teacher, args.submissions, args.reads))
        finally:
            system.stop()


if __name__ == "__main__":
    main()
