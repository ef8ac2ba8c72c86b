"""Running `huleedu ops ...` in a process of its own, as an operator would: only the HULEEDU_*
settings given, none of the test's environment."""

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path

HULEEDU = Path(sys.executable).with_name("huleedu")
DEADLINE_SECONDS = 90.0


async def run_ops(settings: Mapping[str, str], *arguments: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `huleedu ops ARGUMENTS` with the `HULEEDU_*` `settings`."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("HULEEDU_")}
    environment.update({"HULEEDU_LOG_LEVEL": "WARNING", **settings})
    process = await asyncio.create_subprocess_exec(
        str(HULEEDU),
        "ops",
        *arguments,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), DEADLINE_SECONDS)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
