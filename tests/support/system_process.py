"""`huleedu up` as an OS process of a test or benchmark (embedded mode, in a folder of its own), with
what an outside observer can measure of it: its memory (from /proc) and its HTTP answers, including
to requests too large or too slow for an ordinary client library."""

import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from support.processes import huleedu_command
from support.servers import free_port
from support.services import API_KEY, JWT_SECRET, SERVICE_ID

MIB = 1024 * 1024


@dataclass
class SystemProcess:
    """`huleedu up` in `directory` (its SQLite file and mail folder go there)."""

    directory: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def start(self, *, wait_seconds: float = 90.0) -> None:
        env = {
            **os.environ,
            "HULEEDU_HTTP_HOST": "127.0.0.1",
            "HULEEDU_HTTP_PORT": str(self.port),
            "HULEEDU_JWT_SECRET": JWT_SECRET,
            "HULEEDU_INTERNAL_API_KEY": API_KEY,
            "HULEEDU_ALLOWED_SERVICE_IDS": f"{SERVICE_ID},dashboard,huleedu-spellcheck,huleedu-cj",
            "HULEEDU_LOG_LEVEL": "WARNING",
            **self.env,
        }
        log = (self.directory / "up.log").open("ab")
        try:
            self._process = subprocess.Popen(
                [*huleedu_command(), "up"],
                cwd=self.directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"huleedu up exited with {self._process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"huleedu up not healthy after {wait_seconds}s: {self.log_tail()}")

    def stop(self, timeout_seconds: float = 20.0) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def log_tail(self, chars: int = 2000) -> str:
        path = self.directory / "up.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # --- memory, as the kernel counts it ---

    def _status_kib(self, name: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
        raise LookupError(name)

    def rss_mib(self) -> float:
        return self._status_kib("VmRSS") / 1024

    def peak_rss_mib(self) -> float:
        return self._status_kib("VmHWM") / 1024

    def reset_peak(self) -> None:
        """Make the peak (VmHWM) the current RSS, so the next peak is this request's."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")


def send_chunked(
    port: int, path: str, headers: dict[str, str], chunks: Iterator[bytes], *, timeout_seconds: float = 60.0
) -> tuple[int, int]:
    """POST `chunks` with Transfer-Encoding: chunked over a raw socket, stopping as soon as the
    server answers (a client library would insist on sending everything first). Returns (status,
    bytes of body sent)."""
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Transfer-Encoding: chunked"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_seconds) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            for chunk in (chunk for chunk in chunks if chunk):  # an empty chunk would end the body
                if select.select([sock], [], [], 0)[0]:
                    break  # the answer came before the whole body: stop sending
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
            else:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed; the answer is read below
        answer = b""
        while b"\r\n" not in answer:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            answer += part
    status_line = answer.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2:
        raise ConnectionError(f"no HTTP answer after sending {sent} bytes")
    return int(status_line[1]), sent
