"""CJ jobs with the llm judge against the local model server (answers in 0.3 to 2 s), on PostgreSQL
and the Tansu broker, one `huleedu serve cj` worker process with default settings (the default
design: uncertainty-driven rankings of 6, stopping on the expected rank correlation).

    .venv/bin/python bench/cj_llm_run.py [--essays 30] [--per-essay 20] [--latency 0.3 2.0] [--no-pairs]

Part 1, one run: a batch of `--essays` essays with a budget of `--per-essay` essay-reads per essay;
model calls, judgements, essay-reads, tokens, wall time and the Spearman rho of the scores with the
server's hidden qualities (normal, SD `--spread` logits, judged with discrimination 1); while it judges, a second (smaller) batch is requested, and the script
says when it was recorded and when its first judgement was stored, against the end of the first
run. Then (unless `--no-pairs`) the same essays with random pairs at `--per-essay` comparisons per
essay (a second worker, HULEEDU_CJ_STRATEGY=random, HULEEDU_CJ_RANKING_SIZE=2): the design the
default replaces, measured the same way. Throughout, pg_stat_activity is sampled every 50 ms: the
longest transaction of the CJ worker seen open (now() - xact_start of every backend in the bench's
database but the sampler).

Part 2, a kill: the same batch again; the worker is SIGKILLed once about half as many judgements as
part 1 made are stored, and started again. Reported: calls served (plus the calls in flight at the
kill), how long after the kill and after the restart judging went on, and that the batch completed
exactly once (one rich event, one thin event, one BatchResultsReadyV1 from RAS, which runs in this
process).

Creates its own database, broker and model server and removes them when done.
"""

import argparse
import asyncio
import contextlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from scipy.stats import spearmanr
from sqlalchemy import func, select, text

from huleedu.cj_assessment.tables import cj_jobs, cj_judgements
from huleedu.messaging.kafka import KafkaBus
from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions, create_engine, session_factory
from huleedu.storage.migrations import upgrade_async
from support import servers
from support.cj_jobs import Batch, essay_texts, llm_env, new_batch, stored_judgements
from support.gateway import publish
from support.model_server import ModelServer
from support.processes import ServiceProcess
from support.running import running
from support.topic_reader import TopicReader

SAMPLE_SECONDS = 0.05


def local_tcp_ports(pid: int) -> set[int]:
    """The local ports of the TCP sockets process `pid` holds (its database connections among them)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass
class Transactions:
    """The longest open transaction of the CJ worker's database connections (those whose client
    port is one of the worker process's sockets), by sampling pg_stat_activity."""

    worker: ServiceProcess
    longest: dict[int, tuple[float, str, str]] = field(
        default_factory=dict
    )  # backend -> (seconds, state, query)
    samples: int = 0

    async def sample_forever(self, sessions: Sessions) -> None:
        query = text(
            "SELECT pid, client_port, state, EXTRACT(EPOCH FROM now() - xact_start) AS age, "
            "left(query, 80) AS query FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
        )
        async with sessions() as session:
            while True:
                rows = (await session.execute(query)).all()
                await session.commit()  # our own sampling transaction stays short too
                pid = self.worker.pid
                ports = await asyncio.to_thread(local_tcp_ports, pid) if pid is not None and rows else set()
                self.samples += 1
                for row in rows:
                    if row.client_port not in ports:
                        continue  # the bench's own reads, or RAS in part 2
                    if row.pid not in self.longest or row.age > self.longest[row.pid][0]:
                        self.longest[row.pid] = (float(row.age), row.state, row.query)
                await asyncio.sleep(SAMPLE_SECONDS)

    def worst(self) -> tuple[float, str, str]:
        return max(self.longest.values(), default=(0.0, "-", "-"))


async def until(check: Callable[[], Any], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {seconds:.0f} s")
        await asyncio.sleep(0.05)


async def first_judged_at(sessions: Sessions, batch_id: str) -> float | None:
    async with sessions() as session:
        value = await session.scalar(
            select(func.min(cj_judgements.c.judged_at)).where(cj_judgements.c.batch_id == batch_id)
        )
    return value.timestamp() if value is not None else None


async def run_totals(sessions: Sessions, batch_id: str) -> dict[str, Any]:
    async with sessions() as session:
        row = (
            await session.execute(
                select(
                    func.count(),
                    func.sum(cj_judgements.c.attempts),
                    func.sum(cj_judgements.c.tokens_in),
                    func.sum(cj_judgements.c.tokens_out),
                ).where(cj_judgements.c.batch_id == batch_id)
            )
        ).one()
        job = (await session.execute(select(cj_jobs).where(cj_jobs.c.batch_id == batch_id))).mappings().one()
    return {
        "judgements": row[0],
        "attempts": row[1],
        "tokens_in": row[2],
        "tokens_out": row[3],
        "job": dict(job),
    }


def worker_env(settings: Settings, model_url: str, **more: object) -> dict[str, str]:
    return {
        "HULEEDU_DATABASE_URL": settings.database_url,
        "HULEEDU_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "HULEEDU_TOPIC_PREFIX": settings.topic_prefix,
        "HULEEDU_LOG_LEVEL": "WARNING",
    } | llm_env(model_url, **more)


def hidden_qualities(n: int, spread: float, seed: int) -> dict[str, float]:
    """The model server's hidden quality of each text the bench may send: normal, SD `spread`."""
    draw = random.Random(seed)
    return {text: draw.gauss(0.0, spread) for text in essay_texts(n)}


def figures(
    rich: dict[str, Any], totals: dict[str, Any], essays: int, calls: int, qualities: dict[str, float]
) -> list[str]:
    """What a run cost and how well it ranked: judgements, calls, essay-reads, tokens, rho."""
    metadata = rich["data"]["assessment_metadata"]
    texts = essay_texts(essays)
    scored = [r for r in rich["data"]["essay_results"] if r["bt_score"] is not None]
    truth = [qualities[texts[int(r["essay_id"].removeprefix("essay-"))]] for r in scored]
    rho = float(spearmanr([r["bt_score"] for r in scored], truth).statistic)
    reads = metadata["essay_reads"]
    tokens = (metadata["tokens_in"] or 0) + (metadata["tokens_out"] or 0)
    return [
        f"   judgements stored {totals['judgements']} (stop: {metadata['stop_reason']}), model calls for them "
        f"{totals['attempts']} (all calls served meanwhile: {calls}, ranking checks included)",
        f"   essay-reads {reads} ({reads / essays:.1f} per essay), tokens in {metadata['tokens_in']}, out "
        f"{metadata['tokens_out']} ({tokens / max(reads, 1):.0f} per essay-read; stored: {totals['tokens_in']} / "
        f"{totals['tokens_out']})",
        f"   Spearman rho with the server's hidden qualities: {rho:.3f}",
    ]


async def part_one(
    settings: Settings,
    sessions: Sessions,
    server: ModelServer,
    worker: ServiceProcess,
    args: argparse.Namespace,
) -> None:
    topics = settings.topics
    reader = TopicReader(settings, [topics.cj_assessment_result])
    bus = KafkaBus(settings)
    await reader.start()
    await bus.start()
    try:
        first = await new_batch(sessions, topics, args.essays, args.per_essay)
        second = await new_batch(sessions, topics, 10, 6, offset=args.essays)
        calls_before = server.stats.calls
        sent = time.monotonic()
        sent_wall = time.time()
        await publish(bus, [first.request])
        await until(lambda: stored_judgements(sessions, first.batch_id), 60, "first judgement")
        await asyncio.sleep(5.0)  # the first run is under way
        second_sent = time.time()
        await publish(bus, [second.request])
        await until(lambda: first_judged_at(sessions, second.batch_id), 120, "second batch's first judgement")
        second_started = await first_judged_at(sessions, second.batch_id)
        await until(
            lambda: bool(reader.of_batch(topics.cj_assessment_result, first.batch_id)), 600, "first result"
        )
        first_done = time.time()
        wall = time.monotonic() - sent
        await until(
            lambda: bool(reader.of_batch(topics.cj_assessment_result, second.batch_id)), 300, "second result"
        )
    finally:
        await bus.stop()
        await reader.stop()
    totals = await run_totals(sessions, first.batch_id)
    [rich] = reader.of_batch(topics.cj_assessment_result, first.batch_id)
    print(
        f"\n1. One run, the default design: {args.essays} essays, a budget of {args.per_essay} essay-reads per "
        "essay"
    )
    print(f"   wall time, request published -> rich event read: {wall:.1f} s")
    for line in figures(rich, totals, args.essays, server.stats.calls - calls_before, server.qualities):
        print(line)
    args.judged = totals["judgements"]
    assert second_started is not None
    print(
        f"   second batch: requested {second_sent - sent_wall:.1f} s into the first run, first judgement stored "
        f"{second_started - second_sent:.1f} s later, {first_done - second_started:.1f} s before the first run ended"
    )
    del worker


async def part_two(
    settings: Settings,
    sessions: Sessions,
    server: ModelServer,
    worker: ServiceProcess,
    args: argparse.Namespace,
) -> None:
    topics = settings.topics
    watched = [topics.cj_assessment_result, topics.cj_assessment_completed, topics.batch_results_ready]
    reader = TopicReader(settings, watched)
    bus = KafkaBus(settings)
    async with running(settings, ["ras"]):
        await reader.start()
        await bus.start()
        try:
            batch: Batch = await new_batch(
                sessions, topics, args.essays, args.per_essay, offset=args.essays + 10
            )
            calls_before = server.stats.calls
            await publish(bus, [batch.registration, batch.request])

            async def half() -> bool:  # about half of what part 1 made: in the middle of the run
                return await stored_judgements(sessions, batch.batch_id) >= max(args.judged // 2, 3)

            await until(half, 600, "half the judgements")
            await asyncio.to_thread(worker.kill)
            killed = time.monotonic()
            calls_at_kill = server.stats.calls
            stored_at_kill = await stored_judgements(sessions, batch.batch_id)
            starting = asyncio.create_task(asyncio.to_thread(worker.start))  # restarted right away
            await until(lambda: server.stats.calls > calls_at_kill, 120, "judging after the restart")
            resumed = time.monotonic()
            await starting
            answering = time.monotonic()
            await until(
                lambda: bool(reader.of_batch(topics.batch_results_ready, batch.batch_id)),
                600,
                "results ready",
            )
            await asyncio.sleep(3.0)  # anything announced twice would show up now
        finally:
            await bus.stop()
            await reader.stop()
    calls = server.stats.calls - calls_before
    in_flight = calls_at_kill - calls_before - stored_at_kill
    counts = {topic.split(".", 1)[1]: len(reader.of_batch(topic, batch.batch_id)) for topic in watched}
    print(
        f"\n2. SIGKILL half-way: {args.essays} essays, the default design ({args.judged} judgements in part 1)"
    )
    print(f"   killed with {stored_at_kill} judgements stored and {in_flight} calls in flight")
    print(
        f"   judging went on {resumed - killed:.1f} s after the SIGKILL and the restart (default lease "
        f"{settings.cj_job_lease_seconds:g} s; the restarted worker answered /healthz after {answering - killed:.1f} s, "
        "once its consumer group had rebalanced)"
    )
    print(f"   model calls in all: {calls} ({in_flight} in flight at the kill)")
    print(f"   events of the batch: {counts}")


async def pairs_part(
    settings: Settings, sessions: Sessions, server: ModelServer, logs: Path, args: argparse.Namespace
) -> None:
    """The same essays with random pairs at `--per-essay` comparisons per essay, the old design."""
    env = worker_env(settings, server.base_url, cj_strategy="random", cj_ranking_size=2)
    worker = ServiceProcess("cj", env, log_path=logs / "cj-pairs.log")
    await asyncio.to_thread(worker.start)
    topics = settings.topics
    reader = TopicReader(settings, [topics.cj_assessment_result])
    bus = KafkaBus(settings)
    await reader.start()
    await bus.start()
    try:
        batch = await new_batch(sessions, topics, args.essays, args.per_essay)
        calls_before = server.stats.calls
        sent = time.monotonic()
        await publish(bus, [batch.request])
        await until(
            lambda: bool(reader.of_batch(topics.cj_assessment_result, batch.batch_id)), 1200, "pairs result"
        )
        wall = time.monotonic() - sent
    finally:
        await bus.stop()
        await reader.stop()
        await asyncio.to_thread(worker.stop)
    totals = await run_totals(sessions, batch.batch_id)
    [rich] = reader.of_batch(topics.cj_assessment_result, batch.batch_id)
    print(f"\n1b. The same essays, random pairs at {args.per_essay} comparisons per essay (the old design)")
    print(f"   wall time, request published -> rich event read: {wall:.1f} s")
    for line in figures(rich, totals, args.essays, server.stats.calls - calls_before, server.qualities):
        print(line)


async def bench(url: str, broker: servers.TansuBroker, args: argparse.Namespace) -> None:
    engine = create_engine(url)
    sessions = session_factory(engine)
    sampler: asyncio.Task[None] | None = None
    try:
        await upgrade_async(url)
        settings = Settings(
            database_url=url,
            kafka_bootstrap_servers=broker.bootstrap,
            topic_prefix="bench-cj",
            log_level="WARNING",
        )
        qualities = hidden_qualities(3 * args.essays + 20, args.spread, seed=1)
        async with ModelServer(
            latency_min=args.latency[0], latency_max=args.latency[1], qualities=qualities, discrimination=1.0
        ) as server:
            with TemporaryDirectory() as logs:
                worker = ServiceProcess(
                    "cj", worker_env(settings, server.base_url), log_path=Path(logs) / "cj.log"
                )
                await asyncio.to_thread(worker.start)
                transactions = Transactions(worker)
                sampler = asyncio.create_task(transactions.sample_forever(sessions))
                try:
                    await part_one(settings, sessions, server, worker, args)
                    longest = transactions.worst()
                    await part_two(settings, sessions, server, worker, args)
                finally:
                    await asyncio.to_thread(worker.stop)
                if args.pairs:
                    await pairs_part(settings, sessions, server, Path(logs), args)
        overall = transactions.worst()
        print(
            f"\n3. Transactions of the CJ worker ({transactions.samples} samples of pg_stat_activity, every 50 ms)"
        )
        print(
            f"   longest seen open during part 1: {longest[0] * 1000:.0f} ms ({longest[1]}: {longest[2]!r})"
        )
        print(
            f"   longest seen open overall:       {overall[0] * 1000:.0f} ms ({overall[1]}: {overall[2]!r})"
        )
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        await engine.dispose()


def main(args: argparse.Namespace) -> None:
    url = servers.create_database("huleedu_bench_cj")
    broker = servers.TansuBroker()
    try:
        broker.start()
        asyncio.run(bench(url, broker, args))
    finally:
        broker.stop()
        servers.drop_database(url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--essays", type=int, default=30)
    parser.add_argument("--per-essay", type=int, default=20, help="the budget, essay-reads per essay")
    parser.add_argument("--pairs", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--spread", type=float, default=1.5, help="SD of the hidden qualities, logits")
    parser.add_argument("--latency", type=float, nargs=2, default=(0.3, 2.0), metavar=("MIN", "MAX"))
    main(parser.parse_args())
