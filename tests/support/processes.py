"""Our own services as real OS processes (`huleedu serve NAME`), for tests that kill and restart
them and for benchmarks that must not share a CPU-bound event loop with the load generator."""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from support.servers import free_port, wait_for_port
from support.waiting import eventually_sync


def huleedu_command() -> list[str]:
    script = Path(sys.executable).parent / "huleedu"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from huleedu.platform.cli import main; main()"]


@dataclass
class ServiceProcess:
    """`huleedu serve NAME` with `env` (HULEEDU_* settings) on its own HTTP port."""

    name: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running process's id (None when it is not running)."""
        return self._process.pid if self._process is not None else None

    def start(self, *, wait_seconds: float = 60.0, healthy: bool = True) -> None:
        """Start and wait until it answers `/healthz`: with 200, or at all when not `healthy`
        (a process started while Redis is down is up, but reports itself unhealthy)."""
        env = {
            **os.environ,
            **self.env,
            "HULEEDU_HTTP_PORT": str(self.port),
            "HULEEDU_HTTP_HOST": "127.0.0.1",
        }
        output = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                [*huleedu_command(), "serve", self.name],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if self.log_path and not isinstance(output, int):
                output.close()
        self.wait_answering(wait_seconds, healthy=healthy)

    def wait_answering(self, seconds: float, *, healthy: bool = True) -> None:
        """AssertionError when it does not answer within `seconds`; RuntimeError if it exits."""

        def answers() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"huleedu serve {self.name} exited with {self._process.returncode}")
            try:
                status = httpx.get(f"{self.url}/healthz", timeout=1.0).status_code
            except httpx.HTTPError:
                return False
            return status == 200 or not healthy

        eventually_sync(answers, what=f"huleedu serve {self.name} to answer /healthz", seconds=seconds)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no final commit."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
            self._process = None

    def stop(self, timeout_seconds: float = 20.0) -> None:
        """SIGTERM and wait for a graceful exit (SIGKILL if it does not come)."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


@dataclass
class ModuleProcess:
    """`python -m MODULE --port PORT ARGS...` (a floor server of a benchmark), started and waited for
    until its port accepts connections."""

    module: str
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_seconds: float = 30.0) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(self.port), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, wait_seconds)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
