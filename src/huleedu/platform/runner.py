"""Running service units in one process: the registry of services, and the start and graceful stop of
their consumers, one outbox relay, background tasks and the HTTP server.

Start order: consumers attach, the HTTP socket is bound (so a taken port fails before anything
runs), the background tasks start (the units' own, then retention and the database gauges of
huleedu.operations.housekeeping; they need no bus: a CJ job runner must not wait for a consumer group
to rebalance before it takes over a dead worker's job), the bus starts, then the relay and HTTP. On
SIGINT/SIGTERM, or when any of them dies, the reverse: HTTP stops taking requests, background tasks
are cancelled, the relay finishes its pass, and the bus stops, committing the offsets of what
finished.
"""

import asyncio
import contextlib
import importlib
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import structlog
import uvicorn

from huleedu.messaging.relay import OutboxRelay
from huleedu.operations.housekeeping import housekeeping_jobs
from huleedu.platform import gc_pauses
from huleedu.platform.bootstrap import Adapters, ServiceUnit, build_adapters
from huleedu.platform.http import create_app
from huleedu.platform.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")

# `huleedu serve NAME` -> "module:function"; the function takes Adapters and returns a ServiceUnit.
# A service's module is imported only when it is run: `huleedu token` need not load every service.
SERVICES: dict[str, str] = {
    "intake": "huleedu.intake.app:build",
    "spellcheck": "huleedu.spellcheck.app:build",
    "cj": "huleedu.cj_assessment.app:build",
    "els": "huleedu.essay_lifecycle.app:build",
    "ras": "huleedu.result_aggregator.app:build",
    "websocket": "huleedu.websocket.app:build",
    "email": "huleedu.notifications.app:build",
    "dashboard": "huleedu.dashboard.app:build",
}

HTTP_GRACE_SECONDS = 10
RELAY_GRACE_SECONDS = 10.0


class UnknownService(LookupError):
    """No service of that name is registered."""


def service_builder(name: str) -> Callable[[Adapters], ServiceUnit]:
    """The build function of service `name`. Raises UnknownService."""
    if name not in SERVICES:
        raise UnknownService(f"unknown service {name!r}; known: {', '.join(sorted(SERVICES))}")
    module_name, _, attribute = SERVICES[name].partition(":")
    function = getattr(importlib.import_module(module_name), attribute)

    def build(adapters: Adapters) -> ServiceUnit:
        unit = function(adapters)
        if not isinstance(unit, ServiceUnit):
            raise TypeError(f"{SERVICES[name]} returned {type(unit).__name__}, not a ServiceUnit")
        return unit

    return build


def build_unit(name: str, adapters: Adapters) -> ServiceUnit:
    return service_builder(name)(adapters)


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a taken port is an OSError here, before anything started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio turns Nagle off (TCP_NODELAY) only for sockets that say they
    # are TCP, and accepted sockets inherit proto 0 otherwise; with Nagle on, every response whose
    # headers and body are written apart waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the runner owns SIGINT/SIGTERM for the whole process),
    telling when it accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.listening.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM)
    for number in handled:
        loop.add_signal_handler(number, stop.set)
    try:
        yield
    finally:
        for number in handled:
            loop.remove_signal_handler(number)


def _relay_for(units: Sequence[ServiceUnit], adapters: Adapters) -> OutboxRelay | None:
    services = sorted({service for unit in units for service in unit.outbox_services})
    if not services:
        return None
    settings = adapters.settings
    return OutboxRelay(
        adapters.sessions,
        adapters.engine,
        adapters.bus,
        services,
        batch_size=settings.relay_batch_size,
        poll_seconds=settings.relay_poll_seconds,
        max_attempts=settings.relay_max_attempts,
        backoff_initial_seconds=settings.relay_backoff_initial_seconds,
        backoff_max_seconds=settings.relay_backoff_max_seconds,
        wakeup=adapters.relay_wakeup,
    )


async def run_units(
    units: Sequence[ServiceUnit],
    adapters: Adapters,
    *,
    http: bool = True,
    stop: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
    handle_signals: bool = True,
    freeze_heap: bool = False,
) -> None:
    """Run `units` until SIGINT/SIGTERM (or `stop` is set), then shut down gracefully.

    `started` is set once everything runs and HTTP accepts connections; `freeze_heap` (a process of
    its own, `huleedu serve`/`up`) then freezes what start-up built out of later collections. If a background task, the
    relay or the server dies, everything is stopped and its exception re-raised. Closing the
    adapters is the caller's (`async with adapters`), after this returns.
    """
    settings = adapters.settings
    stop = stop or asyncio.Event()
    for unit in units:
        for consumer in unit.consumers:
            consumer.attach()
    relay = _relay_for(units, adapters)
    sock = bind_socket(settings.http_host, settings.http_port) if http else None
    server: _Server | None = None
    tasks: dict[asyncio.Task[Any], str] = {}

    def spawn(name: str, work: Awaitable[Any]) -> None:
        tasks[asyncio.create_task(_awaited(work), name=name)] = name

    failure: BaseException | None = None
    with _signals_set(stop, handle_signals):
        try:
            for unit in units:
                for job in unit.background:
                    spawn(f"{unit.name}:{getattr(job, '__name__', 'background')}", job())
            for name, job in housekeeping_jobs(units, adapters):
                spawn(name, job())
            await adapters.bus.start()
            if relay is not None:
                spawn("outbox-relay", relay.run())
            if sock is not None:
                config = uvicorn.Config(
                    create_app(units, adapters),
                    log_config=None,
                    access_log=settings.log_level == "DEBUG",
                    lifespan="off",
                    timeout_graceful_shutdown=HTTP_GRACE_SECONDS,
                    ws_per_message_deflate=settings.ws_compression,
                    # The gateway pings in its own protocol, for every socket from one task (its
                    # keepalive); uvicorn's per-socket protocol pings would double that with a timer each.
                    ws_ping_interval=None,
                    ws_ping_timeout=None,
                )
                server = _Server(config)
                serving = asyncio.create_task(_awaited(server.serve(sockets=[sock])), name="http")
                tasks[serving] = "http"
                listening = asyncio.create_task(server.listening.wait())
                await asyncio.wait([listening, serving], return_when=asyncio.FIRST_COMPLETED)
                listening.cancel()
            if freeze_heap:
                gc_pauses.freeze_startup_heap()
            host, port = sock.getsockname()[:2] if sock is not None else (None, None)
            log.info("running", units=[unit.name for unit in units], http_host=host, http_port=port)
            if started is not None:
                started.set()
            failure = await _until_stopped(stop, tasks)
        finally:
            await _shut_down(server, relay, tasks, adapters)
            if sock is not None:
                sock.close()
    if failure is not None:
        raise failure


async def _until_stopped(stop: asyncio.Event, tasks: dict[asyncio.Task[Any], str]) -> BaseException | None:
    """Wait for `stop`; return the failure of a part that crashed first. A background task that simply
    returns is done with its work; HTTP or the relay returning unasked is a failure."""
    stopping = asyncio.create_task(stop.wait())
    watched = set(tasks)
    try:
        while not stop.is_set():
            done, _ = await asyncio.wait([stopping, *watched], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopping}:
                watched.discard(task)
                name = tasks[task]
                error = None if task.cancelled() else task.exception()
                if error is None and name not in ("http", "outbox-relay"):
                    log.info("background task finished", task=name)
                    continue
                failure = error or RuntimeError(f"{name} stopped on its own")
                log.error("a part of the process stopped; shutting down", part=name, error=repr(failure))
                return failure
        return None
    finally:
        stopping.cancel()


async def _awaited(work: Awaitable[Any]) -> Any:
    return await work


async def _shut_down(
    server: _Server | None, relay: OutboxRelay | None, tasks: dict[asyncio.Task[Any], str], adapters: Adapters
) -> None:
    log.info("shutting down")
    http_task = next((task for task, name in tasks.items() if name == "http"), None)
    relay_task = next((task for task, name in tasks.items() if name == "outbox-relay"), None)
    if server is not None and http_task is not None:
        server.should_exit = True  # stop accepting, finish requests in flight
        await asyncio.gather(http_task, return_exceptions=True)
    background = [task for task in tasks if task not in (http_task, relay_task)]
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    # The relay before the bus: its pass in flight needs the bus to publish and mark rows.
    if relay is not None and relay_task is not None:
        relay.stop()
        try:
            await asyncio.wait_for(asyncio.shield(relay_task), RELAY_GRACE_SECONDS)
        except TimeoutError:
            relay_task.cancel()
            await asyncio.gather(relay_task, return_exceptions=True)
        except Exception as exc:  # a crashed relay was reported already; shutdown goes on
            log.debug("relay ended with an error", error=repr(exc))
    await adapters.bus.stop()
    log.info("stopped")


def run_in_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop, the event loop of every `huleedu` process: its transports and timers are
    written in C, which shows on every request and every socket (asyncio's own loop is the fallback
    where uvloop is not installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        return loop_runner.run(main)


async def run_services(names: Sequence[str], settings: Settings, *, http: bool = True) -> None:
    """Build the adapters and the named units and run them until a signal (`huleedu serve`/`up`)."""
    async with build_adapters(settings) as adapters:
        units = [build_unit(name, adapters) for name in names]
        gc_pauses.measure_pauses()
        await run_units(units, adapters, http=http, freeze_heap=True)
