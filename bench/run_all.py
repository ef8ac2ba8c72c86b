"""Run every benchmark and regenerate docs/performance.md from what they print (`make bench`).

    .venv/bin/python bench/run_all.py [--only ras_read.py ...] [--out docs/performance.md]

Each script runs as a process of its own, one after the other; its output is shown as it comes and
copied into the document under its command, with the load average of the machine when it started
(figures taken while other work runs are worse than the machine can do). The document names the
machine (cores, CPU model), the date and the load generator of each figure.
"""

import argparse
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (script, arguments, what produced the load and measured it)
BENCHES: list[tuple[str, list[str], str]] = [
    (
        "ras_read.py",
        [],
        "wrk (C, one thread) against `huleedu serve ras`; floors: wrk against a fixed-body FastAPI "
        "process, and a raw asyncpg pool in the bench process",
    ),
    (
        "ws_scale.py",
        [],
        "3 client processes of the Python `websockets` client (offering permessage-deflate, as "
        "browsers do) against `huleedu serve websocket`; floor: the same clients against a bare "
        "`websockets` server",
    ),
    (
        "ws_scale.py",
        ["--compression", "--skip-floor"],
        "the same clients; the gateway accepting their permessage-deflate (the choice not taken)",
    ),
    (
        "ws_latency.py",
        [],
        "one Python `websockets` client; RAS and the gateway in the bench process, on the broker",
    ),
    ("ras_query.py", [], "8 Python keep-alive readers (hit rate only) and result updates through the broker"),
    ("relay_latency.py", [], "Python, in process: outbox commit -> a consumer's handler, on the broker"),
    ("ras_ingest.py", [], "Python, in process: events published to the broker, RAS consuming them"),
    (
        "ras_rebuild.py",
        [],
        "Python, in process: `huleedu ras rebuild` replaying the topics into shadow tables",
    ),
    (
        "hostile_input.py",
        [],
        "Python (httpx, raw sockets for chunked bodies) against `huleedu up`; memory read from /proc",
    ),
    (
        "cj_llm_run.py",
        [],
        "Python: `huleedu serve cj` with the llm judge against the local model server (0.3-2 s a "
        "call, hidden qualities of SD 1.5 logits): the default design, then random pairs; "
        "pg_stat_activity sampled every 50 ms",
    ),
    (
        "cj_ranking_agreement.py",
        [],
        "Python, in process: the llm judge against the local model server, rankings and the pairs they imply",
    ),
]

ABOUT = """\
## Reading the figures

- Every figure is printed by the script named above it, beside the floor measured in the same run
  where there is one: the same bytes served by a bare FastAPI process (HTTP), the same rows read by
  a raw asyncpg pool (database), a bare `websockets` server pushing the same frame (WebSocket).
  Ratios compare with that floor, so they hold better than the absolute figures when the machine
  is shared: then read the load average printed with each run, and the server CPU per request,
  which other work moves much less than it moves wall-clock latency.
- HTTP latency is measured by `wrk`, a C load generator, never by a Python client on the same two
  cores (which adds a tail of its own). WebSocket clients are Python processes of their own.
- The cached read is answered by a lane (`result_aggregator/lane.py`) before FastAPI routes the
  request: one Redis round trip (a script returns the generation and the entry together) and the
  stored bytes as the body. An uncached read is one statement on PostgreSQL (the batch's summary
  row with its essays' entries joined, `string_agg`: each essay row keeps its entry as JSON, which
  a trigger writes on every write, so nothing is serialised per essay when it is read), two on
  SQLite (the batch, then its essays), with no transaction around them. The list is one too: the
  page's ids from the teacher's index alone (index-only, in the list's order, so a deep page skips
  index entries and the table's size never enters), then those rows with the teacher's count.
- The gateway declines permessage-deflate unless `HULEEDU_WS_COMPRESSION` is set: a compressing
  socket holds zlib state of its own (about twice the memory of a plain one) and a results frame
  is a few hundred bytes. `bench/ws_scale.py --compression` measures the other choice.
- Each `huleedu` process runs on uvloop; the per-socket work of the gateway is two tasks (receive,
  send), with pings, idle timeouts and slot renewals done for all sockets by one keepalive task.
"""


def machine() -> list[str]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return [
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores (`nproc`), {model}; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; load average when `make bench` started: {load_average()}",
    ]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def run(script: str, args: list[str]) -> tuple[str, int, str]:
    load = load_average()
    command = [sys.executable, str(ROOT / "bench" / script), *args]
    print(f"\n$ bench/{script} {' '.join(args)}   (load average {load})", flush=True)
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    return "".join(lines), process.wait(), load


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", help="scripts to run (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    chosen = [bench for bench in BENCHES if not args.only or bench[0] in args.only]
    header = machine()
    sections = []
    failed = []
    for script, script_args, generator in chosen:
        output, code, load = run(script, script_args)
        if code != 0:
            failed.append(script)
        command = " ".join([f"bench/{script}", *script_args])
        sections += [
            f"### `{command}`",
            "",
            f"Load: {generator}. Load average when it started: {load}."
            + (f" **Exited with {code}.**" if code else ""),
            "",
            "```",
            output.rstrip(),
            "```",
            "",
        ]
    document = [
        "# Performance figures",
        "",
        "Generated by `make bench` (`bench/run_all.py`) from what the scripts in `bench/` printed; rerun",
        "it after a change that could move them. Figures of one machine on one day, not guarantees.",
        "",
        *header,
        "",
        ABOUT,
        "## The runs",
        "",
        *sections,
    ]
    args.out.write_text("\n".join(document).rstrip() + "\n")
    print(f"\nwrote {args.out}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
