"""Ten thousand browsers on one WebSocket gateway, beside a bare `websockets` server holding as many.

    .venv/bin/python bench/ws_scale.py [--teachers 1000] [--per-teacher 10] [--workers 3]

`huleedu serve websocket` runs as a process of its own on PostgreSQL + Redis + the Tansu broker,
with this process's open-file limit raised (it inherits it). Client worker processes open
teachers x per-teacher sockets at once (a connect storm); like browsers they offer
permessage-deflate and answer the gateway's pings. Then, with every socket open:

- memory per idle connection: the gateway's resident memory after the storm minus before, per socket;
- bus -> frame: BatchResultsReadyV1 for one teacher published on the broker, until the frame is at
  each of that teacher's sockets (one teacher at a time, `--samples` of them);
- storm: one BatchResultsReadyV1 for each of 1,000 teachers published over one second; when the
  last of their frames arrived, counted from the first publish, and how many never came or whose
  socket was closed.

The floor: the same clients against a bare `websockets` server (`support.ws_floor`, compression
off) that pushes the same frame when told over a control socket instead of the broker.
"""

import argparse
import asyncio
import gc
import statistics
import time
import uuid
from dataclasses import dataclass

import httpx
import orjson
from websockets.asyncio.client import connect

from huleedu.contracts.topics import Topics
from huleedu.messaging.kafka import KafkaBus
from huleedu.platform.security import encode_token
from huleedu.platform.settings import Settings
from huleedu.storage.migrations import upgrade_async
from huleedu.websocket.messages import results_ready
from support import gateway as gw
from support import servers
from support.processes import ModuleProcess, ServiceProcess
from support.stats import percentile
from support.ws_crowd import Crowd, raise_file_limit, wait_until

STORM_SECONDS = 1.0
STORM_CHUNKS = 20


@dataclass
class Figures:
    opened: int
    wanted: int
    failed: dict[str, int]
    extensions: dict[str, int]
    connect_seconds: float
    kb_per_socket: float
    latency_ms: list[float]
    storm_batches: int
    storm_seconds: float
    storm_delivered: int
    storm_wanted: int
    closed: dict[int | None, int]
    gc_pauses: str = ""

    def lines(self, name: str) -> list[str]:
        return [
            f"{name}:",
            f"  connect storm: {self.opened:,} of {self.wanted:,} open in {self.connect_seconds:.1f} s"
            + (f"; refused or failed: {self.failed}" if self.failed else ""),
            f"  permessage-deflate answered: {self.extensions}",
            f"  memory per idle connection: {self.kb_per_socket:.1f} KB",
            f"  bus -> frame, one teacher ({len(self.latency_ms)} frames): p50 {statistics.median(self.latency_ms):.1f} ms"
            f"   p99 {percentile(self.latency_ms, 0.99):.1f} ms   max {max(self.latency_ms):.1f} ms",
            f"  storm of {self.storm_batches:,} batches over {STORM_SECONDS:g} s: {self.storm_delivered:,} of"
            f" {self.storm_wanted:,} frames, the last {self.storm_seconds:.2f} s after the first publish",
            f"  sockets closed by the server during the run: {sum(self.closed.values())}"
            + (f" {self.closed}" if self.closed else ""),
        ] + ([f"  garbage collector: {self.gc_pauses}"] if self.gc_pauses else [])


GcCounts = dict[str, list[tuple[float, float]]]  # generation -> cumulative (bucket bound, count)


def gc_counts(base_url: str) -> GcCounts:
    """The gateway's GC pause histogram (/metrics)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    buckets: GcCounts = {}
    for line in text.splitlines():
        if line.startswith("huleedu_gc_pause_seconds_bucket{"):
            labels, value = line.rsplit(" ", 1)
            generation = labels.split('generation="')[1].split('"')[0]
            bound = labels.split('le="')[1].split('"')[0]
            buckets.setdefault(generation, []).append((float(bound), float(value)))
    return buckets


def gc_pauses(before: GcCounts, after: GcCounts) -> str:
    """Collections per generation between two snapshots, and the bucket of the longest pause."""
    parts = []
    for generation, counts in sorted(after.items()):
        earlier = dict(before.get(generation, []))
        delta = [(bound, count - earlier.get(bound, 0.0)) for bound, count in counts]
        total = delta[-1][1]
        if total:
            longest = next(bound for bound, count in delta if count == total)
            parts.append(f"generation {generation}: {total:.0f} collections, longest <= {longest:g} s")
    return "; ".join(parts) or "no collections"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid: int, seconds: float = 3.0) -> int:
    """The process's resident memory once it stopped moving (allocations after a storm settle)."""
    time.sleep(seconds)
    return rss_kb(pid)


class Trigger:
    """How one teacher's frame is set off: the broker (the gateway) or a control socket (the floor)."""

    async def start(self) -> None: ...
    async def push(self, teacher: str, batch_id: str) -> None: ...
    async def stop(self) -> None: ...


class BusTrigger(Trigger):
    def __init__(self, settings: Settings) -> None:
        self._bus = KafkaBus(settings)
        self._topics: Topics = settings.topics

    async def start(self) -> None:
        await self._bus.start()

    async def push(self, teacher: str, batch_id: str) -> None:
        await gw.publish(self._bus, [gw.results_ready(self._topics, teacher, batch_id)])

    async def stop(self) -> None:
        await self._bus.stop()


class ControlTrigger(Trigger):
    """Sends the frame the gateway would send (same bytes but the cursor) to the floor server."""

    def __init__(self, port: int) -> None:
        self._url = f"ws://127.0.0.1:{port}/control"

    async def start(self) -> None:
        self._socket = await connect(self._url, compression=None)

    async def push(self, teacher: str, batch_id: str) -> None:
        message = results_ready(gw.ready_batch(teacher, batch_id))
        frame = orjson.dumps(
            {"event": message.event, "id": "0-0", "data": orjson.Fragment(message.data_json)}
        ).decode()
        await self._socket.send(orjson.dumps({"user": teacher, "frame": frame}).decode())

    async def stop(self) -> None:
        await self._socket.close()


async def drive(
    trigger: Trigger, crowd: Crowd, teachers: list[str], per_teacher: int, samples: int
) -> tuple[list[float], float, int]:
    await trigger.start()
    try:
        # One teacher at a time, every teacher's 10 sockets timed.
        published: dict[str, float] = {}
        for n in range(samples):
            teacher = teachers[(n * 7) % len(teachers)]
            batch_id = f"one-{n}"
            published[batch_id] = time.monotonic()
            await trigger.push(teacher, batch_id)
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        latency = [
            (arrival.at - published[arrival.batch_id]) * 1000
            for arrival in crowd.arrivals()
            if arrival.batch_id in published
        ]
        # The storm: one batch per teacher, in STORM_CHUNKS chunks over STORM_SECONDS.
        started = time.monotonic()
        chunk = max(len(teachers) // STORM_CHUNKS, 1)
        for index in range(0, len(teachers), chunk):
            due = started + STORM_SECONDS * index / len(teachers)
            await asyncio.sleep(max(due - time.monotonic(), 0))
            await asyncio.gather(
                *(trigger.push(teacher, f"storm-{teacher}") for teacher in teachers[index : index + chunk])
            )
        wanted = len(teachers) * per_teacher
        arrived: list[float] = []

        def all_in() -> bool:
            arrived.extend(a.at for a in crowd.arrivals() if a.batch_id.startswith("storm-"))
            return len(arrived) >= wanted

        await asyncio.to_thread(wait_until, all_in, 30.0, 0.5)
        storm_seconds = (max(arrived) - started) if arrived else float("nan")
        return latency, storm_seconds, len(arrived)
    finally:
        await trigger.stop()


def run_crowd(
    name: str,
    pid: int,
    urls: list[str],
    teachers: list[str],
    per_teacher: int,
    workers: int,
    samples: int,
    trigger: Trigger,
    metrics_url: str | None = None,
) -> Figures:
    gc.collect()
    before = settle(pid, 1.0)
    crowd = Crowd(urls, workers)
    pauses = ""
    try:
        report = crowd.connect()
        after = settle(pid)
        counts = gc_counts(metrics_url) if metrics_url else None
        latency, storm_seconds, delivered = asyncio.run(drive(trigger, crowd, teachers, per_teacher, samples))
        if metrics_url and counts is not None:
            pauses = "while measuring latency and the storm, " + gc_pauses(counts, gc_counts(metrics_url))
        closed_codes: dict[int | None, int] = {}
        for code in crowd.closed().values():
            closed_codes[code] = closed_codes.get(code, 0) + 1
    finally:
        crowd.close()
    return Figures(
        opened=report.opened,
        wanted=len(urls),
        failed=report.failed,
        extensions=report.extensions,
        connect_seconds=report.seconds,
        kb_per_socket=(after - before) / max(report.opened, 1),
        latency_ms=latency or [float("nan")],
        storm_batches=len(teachers),
        storm_seconds=storm_seconds,
        storm_delivered=delivered,
        storm_wanted=len(teachers) * per_teacher,
        closed=closed_codes,
        gc_pauses=pauses,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teachers", type=int, default=1000)
    parser.add_argument("--per-teacher", type=int, default=10)
    parser.add_argument("--workers", type=int, default=3, help="client processes")
    parser.add_argument("--samples", type=int, default=100, help="one-teacher events timed")
    parser.add_argument(
        "--compression", action="store_true", help="let the gateway accept permessage-deflate"
    )
    parser.add_argument("--skip-floor", action="store_true")
    args = parser.parse_args()
    limit = raise_file_limit()
    teachers = [f"teacher-{n:05d}" for n in range(args.teachers)]
    sockets = args.teachers * args.per_teacher
    print(
        f"{sockets:,} sockets ({args.teachers:,} teachers x {args.per_teacher}), {args.workers} client processes, open-file limit {limit:,}"
    )

    servers.check_redis(servers.REDIS_URL)
    database = servers.create_database("huleedu_bench")
    broker = servers.TansuBroker()
    prefix = f"bws{uuid.uuid4().hex[:6]}"
    settings = Settings(
        database_url=database,
        kafka_bootstrap_servers="",
        redis_url=servers.REDIS_URL,
        redis_key_prefix=f"{prefix}:",
        topic_prefix=prefix,
        ws_max_connections_per_user=args.per_teacher,
        log_level="WARNING",
    )
    gateway: ServiceProcess | None = None
    try:
        broker.start()
        settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap})
        asyncio.run(upgrade_async(database))
        env = {
            "HULEEDU_DATABASE_URL": database,
            "HULEEDU_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "HULEEDU_REDIS_URL": servers.REDIS_URL,
            "HULEEDU_REDIS_KEY_PREFIX": f"{prefix}:",
            "HULEEDU_TOPIC_PREFIX": prefix,
            "HULEEDU_WS_MAX_CONNECTIONS_PER_USER": str(args.per_teacher),
            "HULEEDU_WS_COMPRESSION": "true" if args.compression else "false",
            "HULEEDU_LOG_LEVEL": "WARNING",
        }
        gateway = ServiceProcess("websocket", env)
        gateway.start()
        assert gateway.pid is not None
        urls = [
            gw.ws_url(gateway.port, token=encode_token(settings, teacher, ttl_seconds=3600))
            for teacher in teachers
            for _ in range(args.per_teacher)
        ]
        ours = run_crowd(
            "gateway",
            gateway.pid,
            urls,
            teachers,
            args.per_teacher,
            args.workers,
            args.samples,
            BusTrigger(settings),
            metrics_url=gateway.url,
        )
    finally:
        if gateway is not None:
            gateway.stop()
        broker.stop()
        servers.drop_database(database)
        servers.delete_keys(servers.REDIS_URL, f"{prefix}:")
    for line in ours.lines(
        f"huleedu serve websocket (compression {'accepted' if args.compression else 'declined'})"
    ):
        print(line)
    if args.skip_floor:
        return
    floor = ModuleProcess("support.ws_floor")
    floor.start()
    try:
        urls = [
            f"ws://127.0.0.1:{floor.port}/ws?user={teacher}"
            for teacher in teachers
            for _ in range(args.per_teacher)
        ]
        bare = run_crowd(
            "floor",
            floor.pid,
            urls,
            teachers,
            args.per_teacher,
            args.workers,
            args.samples,
            ControlTrigger(floor.port),
        )
    finally:
        floor.stop()
    for line in bare.lines("floor: bare websockets server, compression off, pushing the same frame"):
        print(line)
    ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
    print(
        "gateway / floor: memory per connection "
        f"{ratio(ours.kb_per_socket, bare.kb_per_socket):.2f}x, bus->frame p99 "
        f"{ratio(percentile(ours.latency_ms, 0.99), percentile(bare.latency_ms, 0.99)):.2f}x, storm "
        f"{ratio(ours.storm_seconds, bare.storm_seconds):.2f}x"
    )


if __name__ == "__main__":
    main()
