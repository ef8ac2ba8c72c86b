"""`huleedu demo` (what `make demo` runs): the whole system in embedded mode on this machine, fed the
bundled sample batch through the real teacher API, with progress bars, the results table, the email
file and a signed-in dashboard link on screen.

Embedded whatever the environment says: a fresh SQLite file and mail folder under `--dir`, the
in-process bus, the memory cache, the heuristic CJ judge. The progress bars read the teacher API
(`GET /v1/batches/{id}`) a few times a second; that is this script watching, not how the dashboard
learns of changes (it listens on the WebSocket).
"""

import asyncio
import errno
import os
import shutil
import sys
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any, TextIO

import httpx
import typer

from huleedu.demo_data import sample
from huleedu.platform import runner
from huleedu.platform.bootstrap import build_adapters
from huleedu.platform.cli_settings import load_settings
from huleedu.platform.demo_report import Progress, display_host, results_table
from huleedu.platform.logging import configure_logging
from huleedu.platform.security import encode_token
from huleedu.platform.settings import Settings
from huleedu.storage.migrations import upgrade_async

DEMO_USER = "demo-teacher"
DEMO_EMAIL = "demo-teacher@example.org"
TOKEN_TTL_SECONDS = 12 * 3600
POLL_SECONDS = 0.2
RESULTS_DEADLINE_SECONDS = 300.0
EMAIL_DEADLINE_SECONDS = 30.0
FINISHED = {"completed_successfully", "completed_with_failures", "failed", "cancelled"}


class DemoFailed(RuntimeError):
    """The demo could not show what it promises; the message says what went wrong."""


# --- the run ---


async def _watch(client: httpx.AsyncClient, batch_id: str, out: TextIO) -> dict[str, Any]:
    """Show the phases until the batch is finished; its final status document."""
    progress = Progress(out)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESULTS_DEADLINE_SECONDS
    while True:
        response = await client.get(f"/v1/batches/{batch_id}")
        if response.status_code == 200:
            batch: dict[str, Any] = response.json()
            progress.show(batch)
            if batch["overall_status"] in FINISHED:
                return batch
        elif response.status_code != 404:  # 404: the results service has not heard of it yet
            raise DemoFailed(f"GET /v1/batches/{batch_id} answered {response.status_code}: {response.text}")
        if loop.time() > deadline:
            raise DemoFailed(f"the batch did not finish within {RESULTS_DEADLINE_SECONDS:.0f} s")
        await asyncio.sleep(POLL_SECONDS)


def _emails_of(mail_dir: Path, batch_id: str) -> list[Path]:
    return sorted(path.resolve() for path in mail_dir.glob(f"*{batch_id}*.eml")) if mail_dir.is_dir() else []


async def _email_file(mail_dir: Path, batch_id: str) -> Path:
    """The .eml the email worker wrote for the batch (it is named by the job, which names the batch)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EMAIL_DEADLINE_SECONDS
    while True:
        found = await asyncio.to_thread(_emails_of, mail_dir, batch_id)
        if found:
            return found[0]
        if loop.time() > deadline:
            raise DemoFailed(f"no email for the batch in {mail_dir} after {EMAIL_DEADLINE_SECONDS:.0f} s")
        await asyncio.sleep(POLL_SECONDS)


async def _show_sample(settings: Settings, base_url: str, out: TextIO) -> None:
    token = encode_token(settings, DEMO_USER, ttl_seconds=TOKEN_TTL_SECONDS)
    headers = {"Authorization": f"Bearer {token}"}
    body = sample.submission(notify_email=DEMO_EMAIL)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30.0) as client:
        response = await client.post("/v1/batches", json=body)
        if response.status_code != 202:
            raise DemoFailed(f"POST /v1/batches answered {response.status_code}: {response.text}")
        batch_id = str(response.json()["batch_id"])
        out.write(
            f"\nSubmitted {len(body['essays'])} essays and {len(body['anchors'])} graded anchors as "
            f"{DEMO_USER} (POST /v1/batches): batch {batch_id}\n\n"
        )
        batch = await _watch(client, batch_id, out)
    failed = f", {batch['failed_essay_count']} failed" if batch["failed_essay_count"] else ""
    out.write(
        f"\nResults of {batch['title']!r}: {batch['overall_status'].replace('_', ' ')}, "
        f"{batch['completed_essay_count']} of {batch['essay_count']} essays assessed{failed}\n\n"
    )
    out.write("".join(f"  {line}\n" for line in results_table(batch)))
    email = await _email_file(settings.mail_dir, batch_id)
    out.write(f"\nEmail to {DEMO_EMAIL}: {email}\n")
    shown = {
        "Dashboard (signed in)": f"{base_url}/?batch={batch_id}#token={token}",
        "Dashboard": f"{base_url}/",
        f"Token of {DEMO_USER}": token,
        "API docs": f"{base_url}/docs",
    }
    width = max(len(label) for label in shown) + 2
    out.write("\n" + "".join(f"{label + ':':<{width}}{value}\n" for label, value in shown.items()))
    out.flush()


async def run_demo(settings: Settings, *, exit_after: bool, out: TextIO) -> None:
    """Migrate, start every service, show the sample batch, then serve until a signal (or stop
    right away with `exit_after`). Raises DemoFailed."""
    await upgrade_async(settings.database_url)
    base_url = f"http://{display_host(settings.http_host)}:{settings.http_port}"
    async with build_adapters(settings) as adapters:
        units = [runner.build_unit(name, adapters) for name in runner.SERVICES]
        stop, started = asyncio.Event(), asyncio.Event()
        system = asyncio.create_task(runner.run_units(units, adapters, stop=stop, started=started))
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait([system, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if system.done():
            system.result()  # it failed to start: raise its error
            return
        out.write(f"HuleEdu Results runs at {base_url} (embedded mode, data in {settings.mail_dir.parent})\n")
        script = asyncio.create_task(_show_sample(settings, base_url, out))
        await asyncio.wait([system, script], return_when=asyncio.FIRST_COMPLETED)
        error: BaseException | None = None
        if not script.done():  # Ctrl-C (or a crash of the system) while the sample was running
            script.cancel()
            with suppress(asyncio.CancelledError):
                await script
        elif (error := script.exception()) is not None or exit_after:
            stop.set()
        else:
            out.write("\nServing until Ctrl-C.\n")
            out.flush()
        await system
        if error is not None:
            raise error


def _port_is_free(host: str, port: int) -> bool:
    try:
        runner.bind_socket(host, port).close()
    except OSError:
        return False
    return True


def _free_port(host: str) -> int:
    sock = runner.bind_socket(host, 0)
    try:
        port: int = sock.getsockname()[1]
    finally:
        sock.close()
    return port


def demo_settings(base: Settings, directory: Path, port: int) -> Settings:
    """`base` with everything the embedded mode of the demo fixes: its own SQLite file and mail
    folder, no Kafka, Redis, SMTP or remote services, the heuristic judge, quick pollers."""
    host = display_host(base.http_host)
    return base.model_copy(
        update={
            "database_url": f"sqlite+aiosqlite:///{(directory / 'huleedu.sqlite').resolve()}",
            "mail_dir": (directory / "mail").resolve(),
            "kafka_bootstrap_servers": None,
            "redis_url": None,
            "smtp_host": None,
            "content_url": None,
            "ras_url": None,
            "cj_judge": "heuristic",
            "http_port": port,
            "public_url": f"http://{host}:{port}",
            "email_poll_seconds": 0.2,
            "log_level": base.log_level if "HULEEDU_LOG_LEVEL" in os.environ else "WARNING",
        }
    )


def demo(
    exit_after: Annotated[
        bool, typer.Option("--exit", help="stop after printing the results (for scripts and tests)")
    ] = False,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="HTTP port (default HULEEDU_HTTP_PORT; a free one if taken)"),
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="the demo's data folder; its database and mail are replaced")
    ] = Path("var/demo"),
) -> None:
    """Run the whole system with a sample batch of 24 essays and 6 anchors; print the results, the
    email file, the dashboard URL and a login token; keep serving until Ctrl-C."""
    base = load_settings(development=True)  # the demo is development by definition
    wanted = port if port is not None else base.http_port
    chosen = wanted if wanted and _port_is_free(base.http_host, wanted) else _free_port(base.http_host)
    if wanted and chosen != wanted:
        typer.echo(f"port {wanted} is taken; using {chosen}", err=True)
    for stale in (
        directory / "huleedu.sqlite",
        directory / "huleedu.sqlite-wal",
        directory / "huleedu.sqlite-shm",
    ):
        stale.unlink(missing_ok=True)
    shutil.rmtree(directory / "mail", ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(base, directory, chosen)
    configure_logging(settings)
    try:
        asyncio.run(run_demo(settings, exit_after=exit_after, out=sys.stdout))
    except DemoFailed as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        # the port was taken between our check and the bind, or the host is not ours
        typer.echo(f"cannot serve on {settings.http_host}:{settings.http_port}: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
