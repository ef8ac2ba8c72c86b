"""`wrk` (the C HTTP load generator, Debian package `wrk`) driven from benchmarks: one run against
one URL, its figures parsed, and the CPU the server process spent meanwhile (from /proc), which
stays meaningful on a machine that other work shares."""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class WrkRun:
    connections: int
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors
    server_cpu_ms_per_request: float

    def summary(self) -> str:
        return (
            f"{self.requests_per_second:8,.0f} req/s   p50 {self.p50_ms:6.2f} ms   p99 {self.p99_ms:6.2f} ms"
            f"   server CPU {self.server_cpu_ms_per_request:.3f} ms/request"
            + (f"   ERRORS {self.errors}" if self.errors else "")
        )


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is missing: `make system-deps` (apt-get install -y wrk) as root")
    return path


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _find(pattern: str, output: str) -> str:
    match = re.search(pattern, output)
    if match is None:
        raise RuntimeError(f"wrk said nothing matching {pattern!r}:\n{output}")
    return match.group(1)


def run(
    url: str,
    *,
    server_pid: int,
    connections: int = 8,
    seconds: float = 5.0,
    headers: dict[str, str] | None = None,
) -> WrkRun:
    """One wrk run with one thread (the other core is the server's) and `connections` keep-alive
    connections."""
    command = [wrk_binary(), "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    before = cpu_seconds(server_pid)
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    spent = cpu_seconds(server_pid) - before
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", output, re.MULTILINE))
    requests = int(_find(r"(\d+) requests in", output))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return WrkRun(
        connections=connections,
        requests=requests,
        requests_per_second=float(_find(r"Requests/sec:\s+([\d.]+)", output)),
        p50_ms=_milliseconds(percentiles["50"]),
        p99_ms=_milliseconds(percentiles["99"]),
        errors=errors,
        server_cpu_ms_per_request=spent * 1000 / max(requests, 1),
    )
