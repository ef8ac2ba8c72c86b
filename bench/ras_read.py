"""RAS reads beside the floor of the stack, measured by wrk (a C load generator), on PostgreSQL +
Redis + the Tansu broker, against a real `huleedu serve ras` process.

    .venv/bin/python bench/ras_read.py [--seconds 5] [--grow-batches 5000]

Each figure is printed beside its floor, measured in the same run:
- cached `/status` of a 30-essay batch, 8 connections, against FastAPI answering the same bytes
  from memory (`support.floor`, served as `huleedu serve` serves);
- uncached `/status` (`Cache-Control: no-cache`: the database, every request) of 30 and 1,000
  essays, against a raw asyncpg query of the same rows (8 concurrent clients on one pool);
- a teacher's list of 1,000 batches at offset 0 and 980, uncached;
- the uncached figures again after the database has grown by `--grow-batches` 20-essay batches of
  other teachers (100,000 essay rows by default) and a VACUUM ANALYZE, as a ratio to the small
  database.

Server CPU per request (from /proc, not wall time) is printed too: it stays meaningful when other
work shares the machine, which wall-clock figures do not.
"""

import argparse
import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import asyncpg
import httpx

from huleedu.storage.migrations import upgrade_async
from support import ras_seed, servers
from support import wrk as load
from support.processes import ModuleProcess, ServiceProcess
from support.ras_app import API_KEY, SERVICE_ID, ras_process, ras_settings
from support.stats import percentile

HEADERS = {"X-Internal-API-Key": API_KEY, "X-Service-ID": SERVICE_ID}
FRESH = {**HEADERS, "Cache-Control": "no-cache"}
SMALL, LARGE, VOLUME = "status-30", "status-1000", "volume-20"

BATCH_SQL = (
    "SELECT batch_id, user_id, title, assignment_id, status, essay_count, completed_essay_count,"
    " failed_essay_count, requested_phases, phase_summary, created_at, updated_at, processing_started_at,"
    " processing_completed_at, results_ready_at FROM batch_results WHERE batch_id = $1"
)
ESSAYS_SQL = (
    "SELECT essay_id, display_name, coalesce(spellcheck_status, 'pending'), spellcheck_correction_count,"
    " spellcheck_metrics, spellcheck_error_detail, coalesce(cj_status, 'pending'), cj_rank, cj_score, cj_se,"
    " letter_grade, normalized_score, confidence_score, confidence_label, cj_comparison_count,"
    " cj_error_detail, updated_at FROM essay_results WHERE batch_id = $1 AND is_registered"
    " ORDER BY cj_rank IS NULL, cj_rank, essay_id"
)


@dataclass(frozen=True)
class Floor:
    p50_ms: float
    p99_ms: float
    cpu_ms: float

    def summary(self) -> str:
        return (
            f"p50 {self.p50_ms:6.2f} ms   p99 {self.p99_ms:6.2f} ms   client CPU {self.cpu_ms:.3f} ms/query"
        )


async def asyncpg_floor(database_url: str, batch_id: str, clients: int, seconds: float) -> Floor:
    """The same two statements on a raw asyncpg pool, `clients` at a time: the database's floor."""
    pool = await asyncpg.create_pool(database_url.replace("+asyncpg", ""), min_size=clients, max_size=clients)
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + seconds
        cpu = time.process_time()

        async def client() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with pool.acquire() as connection:
                    await connection.fetchrow(BATCH_SQL, batch_id)
                    await connection.fetch(ESSAYS_SQL, batch_id)
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(client() for _ in range(clients)))
        cpu = time.process_time() - cpu
    finally:
        await pool.close()
    return Floor(statistics.median(latencies), percentile(latencies, 0.99), cpu * 1000 / len(latencies))


def line(name: str, text: str) -> None:
    print(f"  {name:<44} {text}")


def ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}" if floor else "n/a"


async def seed(database: str, redis_prefix: str) -> bytes:
    """The measured batches; returns the cached status document of the 30-essay batch."""
    settings = ras_settings(database_url=database, redis_url=servers.REDIS_URL, redis_key_prefix=redis_prefix)
    async with ras_process(settings, migrate=False) as ras:
        await ras_seed.store_batch(ras, SMALL, 30, user_id="teacher-1")
        await ras_seed.store_batch(ras, LARGE, 1000, user_id="teacher-2")
        await ras_seed.store_batch(ras, VOLUME, 20, user_id="teacher-3")
        await ras_seed.copy_batch(
            ras, SMALL, 1000, id_prefix="listed", user_id="teacher-list", with_essays=False
        )
        return (await ras.status(SMALL)).content


async def grow(database: str, batches: int) -> int:
    async with ras_process(ras_settings(database_url=database), migrate=False) as ras:
        await ras_seed.copy_batch(ras, VOLUME, batches, id_prefix="grown", user_id="teacher-grown")
        rows = await ras_seed.essay_rows(ras)
    # A database that grew over months has been vacuumed and analysed by autovacuum; right after a
    # bulk load, autovacuum would run beside the measurement, which would time it, not the read.
    connection = await asyncpg.connect(database.replace("+asyncpg", ""))
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return rows


def measure_uncached(ras: ServiceProcess, seconds: float) -> dict[str, load.WrkRun]:
    figures: dict[str, load.WrkRun] = {}
    base = f"{ras.url}/internal/v1/batches"
    assert ras.pid is not None
    for name, url, connections in (
        ("uncached /status, 30 essays, 8 connections", f"{base}/{SMALL}/status", 8),
        ("uncached /status, 1,000 essays, 4 connections", f"{base}/{LARGE}/status", 4),
        ("uncached /status, 1,000 essays, 8 connections", f"{base}/{LARGE}/status", 8),
        ("uncached list of 1,000 batches, offset 0", f"{base}/user/teacher-list?limit=20&offset=0", 8),
        ("uncached list of 1,000 batches, offset 980", f"{base}/user/teacher-list?limit=20&offset=980", 8),
    ):
        figures[name] = load.run(
            url, server_pid=ras.pid, connections=connections, seconds=seconds, headers=FRESH
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument(
        "--grow-batches", type=int, default=5000, help="20-essay batches added for the volume run"
    )
    args = parser.parse_args()
    load.wrk_binary()
    servers.check_redis(servers.REDIS_URL)
    database = servers.create_database("huleedu_bench")
    broker = servers.TansuBroker()
    prefix = f"brd{uuid.uuid4().hex[:6]}"
    ras: ServiceProcess | None = None
    floor: ModuleProcess | None = None
    try:
        broker.start()
        asyncio.run(upgrade_async(database))
        document = asyncio.run(seed(database, f"{prefix}:"))
        ras = ServiceProcess(
            "ras",
            {
                "HULEEDU_DATABASE_URL": database,
                "HULEEDU_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "HULEEDU_REDIS_URL": servers.REDIS_URL,
                "HULEEDU_REDIS_KEY_PREFIX": f"{prefix}:",
                "HULEEDU_TOPIC_PREFIX": prefix,
                "HULEEDU_INTERNAL_API_KEY": API_KEY,
                "HULEEDU_ALLOWED_SERVICE_IDS": SERVICE_ID,
                "HULEEDU_LOG_LEVEL": "WARNING",
            },
        )
        ras.start()
        assert ras.pid is not None
        with TemporaryDirectory() as scratch:
            body = Path(scratch) / "body.json"
            body.write_bytes(document)
            floor = ModuleProcess("support.floor", ["--body-file", str(body)])
            floor.start()
            status = f"{ras.url}/internal/v1/batches/{SMALL}/status"
            httpx.get(status, headers=HEADERS).raise_for_status()  # cached from here on
            print(
                f"RAS reads, wrk -t1 (load generator: wrk), {args.seconds:g} s per run; body of /status: {len(document):,} bytes"
            )
            print("cached:")
            fixed = load.run(f"{floor.url}/fixed", server_pid=floor.pid, seconds=args.seconds)
            cached = load.run(status, server_pid=ras.pid, seconds=args.seconds, headers=HEADERS)
            line("floor: FastAPI, fixed body from memory", fixed.summary())
            line("cached /status, 30 essays, 8 connections", cached.summary())
            line(
                "ratio to the floor",
                f"throughput {ratio(cached.requests_per_second, fixed.requests_per_second)}"
                f"   CPU per request {ratio(cached.server_cpu_ms_per_request, fixed.server_cpu_ms_per_request)}x",
            )
        print("uncached (Cache-Control: no-cache), small database:")
        for batch_id, essays in ((SMALL, 30), (LARGE, 1000)):
            floor_figure = asyncio.run(asyncpg_floor(database, batch_id, 8, args.seconds))
            line(f"floor: raw asyncpg, same rows ({essays} essays), 8 clients", floor_figure.summary())
        small = measure_uncached(ras, args.seconds)
        for name, figure in small.items():
            line(name, figure.summary())
        rows = asyncio.run(grow(database, args.grow_batches))
        print(f"uncached, after growing the database to {rows:,} essay rows (then VACUUM ANALYZE):")
        large = measure_uncached(ras, args.seconds)
        for name, figure in large.items():
            line(
                name,
                f"{figure.summary()}   p50 x{ratio(figure.p50_ms, small[name].p50_ms)} of the small database",
            )
    finally:
        if floor is not None:
            floor.stop()
        if ras is not None:
            ras.stop()
        broker.stop()
        servers.drop_database(database)
        servers.delete_keys(servers.REDIS_URL, f"{prefix}:")


if __name__ == "__main__":
    main()
