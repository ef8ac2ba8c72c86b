"""The Kafka adapter of the event bus (aiokafka), for any Kafka-protocol broker (Kafka, Tansu).

Publishing: one producer with `acks="all"`; the idempotent producer only when configured (Tansu does
not support it); every wait is bounded by `kafka_request_timeout_ms`, so a dead broker yields
`PublishError(broker_unavailable=True)` outcomes, never a hang. A record the broker refuses (an error
answer about it, such as Tansu's INVALID_RECORD from its schema registry, which aiokafka knows only
as UnknownError) or the client cannot send (too large) is a `PublishError(broker_unavailable=False)`:
the record's fault, not an outage. Topics are created on first use (`kafka_partitions` each), and
before consuming for every subscribed topic and its `.dlq`.

Consuming: one `AIOKafkaConsumer` per `subscribe()`, in the broker group `<topic prefix>.<group>`
(deployments and tests sharing a broker never share a group), offsets committed by hand per
partition after the handler returned. A failing partition is rewound to its first unhandled record
and paused for a capped backoff while the other partitions go on. A rebalance waits for the running handler and
its commit, and drops what was fetched but not handled, so no unfinished work is ever committed.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    BrokerResponseError,
    KafkaError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
    UnsupportedCodecError,
    for_code,
)
from aiokafka.structs import ConsumerRecord

from huleedu.contracts.topics import DLQ_SUFFIX, dlq_topic
from huleedu.messaging import metrics
from huleedu.messaging.bus import BatchHandler, OutboundRecord, PublishOutcome, Record
from huleedu.messaging.errors import PublishError
from huleedu.messaging.retry import backoff_seconds
from huleedu.platform.settings import Settings

log = structlog.get_logger(__name__)

_LINGER_MS = 1  # enough to batch one publish() call's records, invisible in latency
_JOIN_TIMEOUT_SESSIONS = 6  # a join waits for every member to rejoin: up to a session timeout or two
_IDLE_POLL_MS = 1_000  # getmany's wait when nothing is paused; stop() cancels it anyway

# What the client itself refuses to send, about the record (size, encoding, types).
_CLIENT_REFUSALS = (RecordTooLargeError, UnsupportedCodecError, TypeError, ValueError)


def to_record(message: ConsumerRecord) -> Record:
    """Kafka allows a null header value; the port's headers are bytes, so it becomes b""."""
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=tuple((name, value if value is not None else b"") for name, value in message.headers or ()),
        timestamp_ms=message.timestamp,
    )


def broker_group_id(settings: Settings, group: str) -> str:
    """The group id the broker sees: namespaced by the topic prefix, like the topics it reads."""
    return f"{settings.topic_prefix}.{group}"


def with_dead_letter_topics(topics: Iterable[str]) -> set[str]:
    names = set(topics)
    return names | {dlq_topic(name) for name in names if not name.endswith(DLQ_SUFFIX)}


def is_refusal(exc: BaseException) -> bool:
    """True when `exc` is an answer about the record: the broker refused it (an error code it will
    not take back on a retry: invalid record, too large, bad or forbidden topic, ...) or the client
    could not send it. Silence, a dropped connection, or a retriable code until the deadline
    (leader moving, too few replicas) say nothing about the record: False."""
    if isinstance(exc, _CLIENT_REFUSALS):
        return True
    return isinstance(exc, BrokerResponseError) and not exc.retriable


def publish_error(exc: BaseException, *, unavailable: bool = False) -> PublishError:
    """The port's error for `exc`; `unavailable` when the call failed before reaching any record."""
    if isinstance(exc, PublishError):
        return exc
    text = str(exc)
    if not text.startswith(type(exc).__name__):  # aiokafka's errors name themselves already
        text = f"{type(exc).__name__}: {text}"
    refused = not unavailable and is_refusal(exc)
    if refused:
        text = f"refused: {text}"
    error = PublishError(text, broker_unavailable=not refused)
    error.__cause__ = exc
    return error


class _GroupMember(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no type hints
    """One subscription: an AIOKafkaConsumer in `group`, its consume loop and its rebalance hooks."""

    def __init__(
        self,
        settings: Settings,
        group: str,
        topics: Sequence[str],
        handler: BatchHandler,
        *,
        recreate_topics: Callable[[Iterable[str]], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._group = group
        self._topics = list(topics)
        self._handler = handler
        self._recreate_topics = recreate_topics
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=settings.kafka_client_id,
            group_id=broker_group_id(settings, group),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        )
        # Held while a handler runs and its offsets are committed; a revoke and stop() wait for it.
        self._handling = asyncio.Lock()
        self._generation = 0  # bumped by every revoke: records fetched before it are not handled
        self._settled = asyncio.Event()  # set while no rebalance is under way
        self._stopping = False
        self._attempts: dict[TopicPartition, int] = {}
        self._paused_until: dict[TopicPartition, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Returns once the group has given this member its partitions; raises TimeoutError when
        that takes longer than a handful of session timeouts (a wedged group must not hang us)."""
        self._consumer.subscribe(self._topics, listener=self)
        timeout_seconds = _JOIN_TIMEOUT_SESSIONS * self._settings.kafka_session_timeout_ms / 1000
        try:
            await asyncio.wait_for(self._consumer.start(), timeout_seconds)
        except TimeoutError as exc:
            await self._consumer.stop()
            raise TimeoutError(
                f"consumer group {self._group!r} gave no partitions within {timeout_seconds:.0f}s"
            ) from exc
        except BaseException:
            await self._consumer.stop()
            raise
        self._task = asyncio.create_task(self._consume(), name=f"kafka-bus {self._group}")

    async def stop(self) -> None:
        """Let the running handler finish and commit, then close (leaving the group only when configured)."""
        self._stopping = True
        if self._task is not None:
            async with self._handling:
                self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
            if self._settings.kafka_leave_group_on_stop:
                await self._settle_before_leaving()
        if not self._settings.kafka_leave_group_on_stop:
            self._stay_in_group_on_close()
        await self._consumer.stop()

    async def _settle_before_leaving(self) -> None:
        # Leaving while the group waits for this member to rejoin wedges the group on Tansu (no
        # member can join it again). A member learns of a rebalance from its next heartbeat:
        # wait for that, then for the rebalance to finish (aiokafka completes it on its own).
        await asyncio.sleep(self._settings.kafka_heartbeat_interval_ms * 1.5 / 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), self._settings.kafka_session_timeout_ms / 1000)

    def _stay_in_group_on_close(self) -> None:
        """Close without LeaveGroup: the broker drops this member when its session times out.
        Members that leave together can wedge a Tansu group for good (no member can join it again;
        seen even with the settling above), and a deployment's members are often stopped together;
        a restart waits out one session instead. aiokafka has no switch for this, so the leave step
        of its group coordinator (a private part, pinned by requirements.lock) is replaced."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is None:
            return  # never started: nothing to leave
        if not hasattr(coordinator, "_maybe_leave_group"):
            raise RuntimeError("aiokafka changed: its group coordinator has no _maybe_leave_group to replace")

        async def forget_generation_only() -> None:
            coordinator.reset_generation()

        coordinator._maybe_leave_group = forget_generation_only

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._settled.clear()
        async with self._handling:  # the running handler finishes and commits before the revoke
            self._generation += 1
            for tp in revoked:
                self._attempts.pop(tp, None)
                self._paused_until.pop(tp, None)
                metrics.partition_revoked(self._group, tp.topic, tp.partition)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        # Positions of a new assignment start at the committed offsets: nothing to restore.
        for tp in assigned:
            metrics.partition_assigned(self._group, tp.topic, tp.partition)
        self._settled.set()

    async def _consume(self) -> None:
        failures = 0
        while True:
            try:
                batches = await self._consumer.getmany(
                    timeout_ms=self._resume_due(), max_records=self._settings.kafka_max_batch_records
                )
                generation = self._generation
                for tp, messages in batches.items():
                    async with self._handling:
                        if self._stopping or generation != self._generation:
                            break  # revoked or stopping: the records come again from the commit
                        await self._handle(tp, messages)
                failures = 0
            except Exception as exc:  # the loop must outlive a broker outage or a surprise
                failures += 1
                # Whatever was fetched and not handled must come again: rewind to the commits.
                with contextlib.suppress(Exception):
                    await self._consumer.seek_to_committed()
                delay = backoff_seconds(
                    failures,
                    initial_seconds=self._settings.consumer_retry_initial_seconds,
                    max_seconds=self._settings.consumer_retry_max_seconds,
                )
                log.warning("kafka consume loop failed", group=self._group, error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)

    async def _handle(self, tp: TopicPartition, messages: Sequence[ConsumerRecord]) -> None:
        try:
            await self._handler([to_record(message) for message in messages])
        except Exception as exc:
            self._report_lag(tp, messages[0].offset)
            attempt = self._attempts[tp] = self._attempts.get(tp, 0) + 1
            delay = backoff_seconds(
                attempt,
                initial_seconds=self._settings.consumer_retry_initial_seconds,
                max_seconds=self._settings.consumer_retry_max_seconds,
            )
            log.warning(
                "batch handler failed; retrying the same records",
                group=self._group,
                topic=tp.topic,
                partition=tp.partition,
                offset=messages[0].offset,
                attempt=attempt,
                retry_in_seconds=round(delay, 3),
                error=repr(exc),
            )
            self._consumer.seek(tp, messages[0].offset)
            self._consumer.pause(tp)
            self._paused_until[tp] = asyncio.get_running_loop().time() + delay
            return
        self._attempts.pop(tp, None)
        metrics.CONSUMED_RECORDS.labels(self._group, tp.topic).inc(len(messages))
        self._report_lag(tp, messages[-1].offset + 1)
        timeout_seconds = self._settings.kafka_request_timeout_ms / 1000
        try:
            # aiokafka retries a commit for as long as the broker is away: bound it.
            await asyncio.wait_for(self._consumer.commit({tp: messages[-1].offset + 1}), timeout_seconds)
        except (KafkaError, TimeoutError) as exc:
            # Handled but not committed: a later commit of this partition covers it; if none comes,
            # whoever owns the partition next gets these records again (at-least-once).
            log.warning(
                "offset commit failed",
                group=self._group,
                topic=tp.topic,
                partition=tp.partition,
                offset=messages[-1].offset + 1,
                error=repr(exc),
            )
            # A broker that restarted without its topics (Tansu keeps them in memory) refuses
            # commits until they exist again.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._recreate_topics(with_dead_letter_topics(self._topics)), timeout_seconds
                )

    def _report_lag(self, tp: TopicPartition, next_offset: int) -> None:
        end = self._consumer.highwater(tp)  # as of the last fetch of this partition
        if end is not None:
            metrics.partition_lag(self._group, tp.topic, tp.partition, end - next_offset)

    def _resume_due(self) -> int:
        """Resume partitions whose backoff is over; return how long getmany may wait (ms)."""
        now = asyncio.get_running_loop().time()
        wait_ms = _IDLE_POLL_MS
        assigned = self._consumer.assignment()
        for tp, until in list(self._paused_until.items()):
            if until <= now:
                del self._paused_until[tp]
                if tp in assigned:
                    self._consumer.resume(tp)
            else:
                wait_ms = min(wait_ms, int((until - now) * 1000) + 1)
        return wait_ms


class KafkaBus:
    """The event bus over a Kafka-protocol broker. The producer and admin client connect on first
    use, so a bus that only publishes starts even while the broker is away."""

    def __init__(self, settings: Settings) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ValueError("KafkaBus needs kafka_bootstrap_servers")
        self._settings = settings
        self._timeout_seconds = settings.kafka_request_timeout_ms / 1000
        self._subscriptions: list[tuple[str, tuple[str, ...], BatchHandler]] = []
        self._members: list[_GroupMember] = []
        self._running = False
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._connecting = asyncio.Lock()
        self._known_topics: set[str] = set()

    async def start(self) -> None:
        """Create the subscribed topics and their dead-letter topics, then join every group.
        Raises (and leaves nothing running) when the broker cannot be reached."""
        if self._running:
            return
        await self._ensure_topics(
            with_dead_letter_topics(topic for _, names, _ in self._subscriptions for topic in names)
        )
        members = [
            _GroupMember(self._settings, *subscription, recreate_topics=self._recreate_topics)
            for subscription in self._subscriptions
        ]
        results = await asyncio.gather(*(member.start() for member in members), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await asyncio.gather(*(member.stop() for member in members), return_exceptions=True)
            raise failures[0]
        self._members = members
        self._running = True

    async def stop(self) -> None:
        members, self._members = self._members, []
        self._running = False
        await asyncio.gather(*(member.stop() for member in members))
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):  # flushing into a dead broker
                await asyncio.wait_for(producer.stop(), self._timeout_seconds)
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    def subscribe(self, group: str, topics: Sequence[str], handler: BatchHandler) -> None:
        """Raises RuntimeError on a running bus: subscribe, then start."""
        if self._running:
            raise RuntimeError("subscribe before start(): the bus is running")
        if not topics:
            raise ValueError("subscribe to at least one topic")
        self._subscriptions.append((group, tuple(dict.fromkeys(topics)), handler))

    async def publish(self, records: Sequence[OutboundRecord]) -> list[PublishOutcome]:
        """Sends in order and waits at most `kafka_request_timeout_ms` (plus a second) in all, and
        as long again when the broker refused some records (each is then asked about alone).

        A broker answers for a partition's batch as a whole, so a record refused beside others may
        be innocent: each refused record is sent once more on its own, and only those refused
        again keep their refusal. When a record cannot even be queued, the later records of its key
        are not sent: they would overtake it when the caller retries it."""
        if not records:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_seconds + 1.0
        try:
            producer = await asyncio.wait_for(self._started_producer(), self._timeout_seconds)
            refused_topics = await asyncio.wait_for(
                self._create_topics({record.topic for record in records}), max(deadline - loop.time(), 0)
            )
        except Exception as exc:
            self._known_topics.clear()
            return [publish_error(exc, unavailable=True)] * len(records)

        outcomes: list[PublishOutcome] = [None] * len(records)
        to_send = []
        for index, record in enumerate(records):
            if record.topic in refused_topics:
                outcomes[index] = publish_error(refused_topics[record.topic])
            else:
                to_send.append(index)
        refused = await self._send(producer, records, to_send, outcomes, deadline)
        if refused and len(to_send) > 1:
            deadline = loop.time() + self._timeout_seconds + 1.0
            refused_keys: set[bytes] = set()
            for index in refused:
                key = records[index].key
                if key is not None and key in refused_keys:
                    continue  # an earlier record of its key stays refused: this one must wait for it
                await self._send(producer, records, [index], outcomes, deadline)
                if outcomes[index] is not None and key is not None:
                    refused_keys.add(key)
        if any(outcome is not None for outcome in outcomes):
            self._known_topics.clear()  # a restarted broker may have lost them
        return outcomes

    async def _send(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[OutboundRecord],
        indexes: Sequence[int],
        outcomes: list[PublishOutcome],
        deadline: float,
    ) -> list[int]:
        """Send `records[i]` for each i of `indexes` in order and write its outcome; returns the
        indexes the broker answered with a refusal."""
        loop = asyncio.get_running_loop()
        sent: list[tuple[int, asyncio.Future[object]]] = []
        unsendable: dict[bytes, PublishError] = {}  # key -> why its first record could not be queued
        for index in indexes:
            record = records[index]
            if record.key is not None and record.key in unsendable:
                outcomes[index] = PublishError(
                    f"not sent: an earlier record of its key was not ({unsendable[record.key]})",
                    broker_unavailable=unsendable[record.key].broker_unavailable,
                )
                continue
            try:
                future = await asyncio.wait_for(
                    producer.send(
                        record.topic, record.value, key=record.key, headers=list(record.headers.items())
                    ),
                    max(deadline - loop.time(), 0),
                )
            except Exception as exc:
                error = outcomes[index] = publish_error(exc)
                if record.key is not None:
                    unsendable[record.key] = error
                continue
            sent.append((index, future))
        refused = []
        if sent:
            done, _ = await asyncio.wait(
                [future for _, future in sent], timeout=max(deadline - loop.time(), 0)
            )
            for index, future in sent:
                if future in done:
                    failure = future.exception()
                    outcomes[index] = None if failure is None else publish_error(failure)
                    if failure is not None and is_refusal(failure):
                        refused.append(index)
                else:
                    future.add_done_callback(_consume_outcome)
                    outcomes[index] = PublishError(
                        f"no acknowledgement within {self._timeout_seconds + 1.0:.1f}s",
                        broker_unavailable=True,
                    )
        return refused

    async def ping(self) -> None:
        """Raises when the broker does not answer a metadata request within the request timeout."""
        admin = await asyncio.wait_for(self._started_admin(), self._timeout_seconds)
        await asyncio.wait_for(admin.describe_cluster(), self._timeout_seconds)

    async def _recreate_topics(self, names: Iterable[str]) -> None:
        names = set(names)
        self._known_topics -= names
        await self._ensure_topics(names)

    async def _ensure_topics(self, names: Iterable[str]) -> None:
        """Create the missing topics of `names`; raises the first refusal."""
        refused = await self._create_topics(names)
        if refused:
            raise next(iter(refused.values()))

    async def _create_topics(self, names: Iterable[str]) -> dict[str, KafkaError]:
        """Create the missing topics of `names`; returns those the broker refused, with why.
        Raises when the broker does not answer."""
        missing = sorted(set(names) - self._known_topics)
        if not missing:
            return {}
        admin = await self._started_admin()
        response = await admin.create_topics(
            [
                NewTopic(name, self._settings.kafka_partitions, self._settings.kafka_replication_factor)
                for name in missing
            ]
        )
        refused: dict[str, KafkaError] = {}
        for topic_error in response.topic_errors:
            topic, code = topic_error[0], topic_error[1]
            if code not in (0, TopicAlreadyExistsError.errno):
                message = topic_error[2] if len(topic_error) > 2 else ""
                refused[topic] = for_code(code)(f"cannot create topic {topic}: {message}")
        self._known_topics.update(name for name in missing if name not in refused)
        return refused

    async def _started_producer(self) -> AIOKafkaProducer:
        async with self._connecting:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._settings.kafka_bootstrap_servers,
                    client_id=self._settings.kafka_client_id,
                    acks="all",
                    enable_idempotence=self._settings.kafka_enable_idempotence,
                    linger_ms=_LINGER_MS,
                    request_timeout_ms=self._settings.kafka_request_timeout_ms,
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def _started_admin(self) -> AIOKafkaAdminClient:
        async with self._connecting:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self._settings.kafka_bootstrap_servers,
                    client_id=self._settings.kafka_client_id,
                    request_timeout_ms=self._settings.kafka_request_timeout_ms,
                )
                try:
                    await admin.start()
                except BaseException:
                    await admin.close()
                    raise
                self._admin = admin
            return self._admin


def _consume_outcome(future: "asyncio.Future[object]") -> None:
    # An acknowledgement that came too late: read it so asyncio does not warn it was never retrieved.
    if not future.cancelled():
        future.exception()
