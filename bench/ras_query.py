"""RAS cache hit rate on the production stack (PostgreSQL + Redis + Tansu), against a real
`huleedu serve ras` process: a mixed run where 8 readers poll a teacher's batches while their
results keep changing (updates arrive through the broker).

    .venv/bin/python bench/ras_query.py [--clients 8] [--writes-per-second 10]

Latency is `bench/ras_read.py`'s, measured with wrk; this script's readers are a minimal Python
HTTP/1.1 keep-alive client, good for counting hits, not for timing.
"""

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx

from huleedu.contracts.topics import Topics
from huleedu.messaging.kafka import KafkaBus
from huleedu.platform.settings import Settings
from huleedu.storage.migrations import upgrade_async
from support import ras_events as ev
from support import servers
from support.processes import ServiceProcess
from support.ras_app import API_KEY, SERVICE_ID
from support.ras_load import ReadyCollector, publish_all, workload


@dataclass
class Connection:
    """One keep-alive HTTP/1.1 connection: request, read status + headers + Content-Length body."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def open(cls, port: int) -> "Connection":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: ras\r\nX-Internal-API-Key: {API_KEY}\r\n"
            f"X-Service-ID: {SERVICE_ID}\r\n\r\n".encode()
        )
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return int(status_line.split()[1]), body

    def close(self) -> None:
        self.writer.close()


async def measure(
    port: int, path: str, total: int, clients: int, before: Callable[[], Awaitable[None]] | None = None
) -> list[float]:
    latencies: list[float] = []

    async def client(count: int) -> None:
        connection = await Connection.open(port)
        try:
            for _ in range(count):
                if before is not None:
                    await before()
                started = time.perf_counter()
                status, _ = await connection.get(path)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}")
        finally:
            connection.close()

    await asyncio.gather(*(client(total // clients) for _ in range(clients)))
    return latencies


async def counter(port: int, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


async def run(clients: int, writes_per_second: float) -> None:
    database = await asyncio.to_thread(servers.create_database, "huleedu_bench")
    broker = servers.TansuBroker()
    broker.start()
    prefix = f"bq{uuid.uuid4().hex[:6]}"
    redis_prefix = f"{prefix}:"
    env = {
        "HULEEDU_DATABASE_URL": database,
        "HULEEDU_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "HULEEDU_REDIS_URL": servers.REDIS_URL,
        "HULEEDU_REDIS_KEY_PREFIX": redis_prefix,
        "HULEEDU_TOPIC_PREFIX": prefix,
        "HULEEDU_INTERNAL_API_KEY": API_KEY,
        "HULEEDU_ALLOWED_SERVICE_IDS": SERVICE_ID,
        "HULEEDU_LOG_LEVEL": "WARNING",
    }
    ras = ServiceProcess("ras", env)
    topics = Topics(prefix)
    bus = KafkaBus(Settings(kafka_bootstrap_servers=broker.bootstrap, topic_prefix=prefix))
    try:
        await upgrade_async(database)
        await asyncio.to_thread(ras.start)
        collector = ReadyCollector()
        bus.subscribe(f"{prefix}-observer", [topics.batch_results_ready], collector.handle)
        await bus.start()
        load = workload(topics, batches=20, essays=30, duplicate_fraction=0.0)
        await publish_all(bus, load.events)
        await collector.wait_for(set(load.batch_ids), 120)
        batch_id = load.batch_ids[0]
        path = f"/internal/v1/batches/{batch_id}/status"

        await measure(ras.port, path, 200, clients)  # warm up connections, pools and the cache

        # Mixed: readers poll status and list pages of one teacher while results keep changing.
        hits0 = await counter(ras.port, "huleedu_ras_cache_hits_total")
        misses0 = await counter(ras.port, "huleedu_ras_cache_misses_total")
        coalesced0 = await counter(ras.port, "huleedu_ras_cache_coalesced_total")
        stop = asyncio.Event()

        async def writer() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                target = load.batch_ids[n % len(load.batch_ids)]
                at = ev.BASE_TIME + timedelta(days=1, milliseconds=n)
                essay = f"{target}-e{n % 30:03d}"
                await publish_all(
                    bus, [ev.spellcheck_result(topics, target, essay, corrections=n % 7, at=at)]
                )
                await asyncio.sleep(1 / writes_per_second)

        async def reader(index: int) -> None:
            connection = await Connection.open(ras.port)
            try:
                n = 0
                while not stop.is_set():
                    n += 1
                    if n % 5 == 0:
                        await connection.get("/internal/v1/batches/user/teacher-1?limit=20")
                    else:
                        await connection.get(
                            f"/internal/v1/batches/{load.batch_ids[(index + n) % 20]}/status"
                        )
            finally:
                connection.close()

        tasks = [asyncio.create_task(writer())] + [asyncio.create_task(reader(i)) for i in range(clients)]
        await asyncio.sleep(10)
        stop.set()
        await asyncio.gather(*tasks)
        hits = await counter(ras.port, "huleedu_ras_cache_hits_total") - hits0
        misses = await counter(ras.port, "huleedu_ras_cache_misses_total") - misses0
        coalesced = await counter(ras.port, "huleedu_ras_cache_coalesced_total") - coalesced0
        reads = hits + misses + coalesced
        print(
            f"  mixed     hit rate {hits / (hits + misses):.1%}  ({reads:.0f} reads in 10 s: {hits:.0f} hits,"
            f" {misses:.0f} database loads, {coalesced:.0f} served by a concurrent load;"
            f" {writes_per_second:g} result updates/s across 20 batches)"
        )
    finally:
        await bus.stop()
        await asyncio.to_thread(ras.stop)
        broker.stop()
        await asyncio.to_thread(servers.drop_database, database)
        servers.delete_keys(servers.REDIS_URL, redis_prefix)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--writes-per-second", type=float, default=10.0, help="result updates in the mixed run"
    )
    args = parser.parse_args()
    asyncio.run(run(args.clients, args.writes_per_second))


if __name__ == "__main__":
    main()
