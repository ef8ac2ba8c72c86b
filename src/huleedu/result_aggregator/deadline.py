"""The batch deadline: a batch that never completes must not leave its teacher waiting forever.

Every RAS process sweeps; the batch lock and the results-ready guard make concurrent sweeps and a
sweep racing the last real result harmless.
"""

import asyncio

import structlog

from huleedu.result_aggregator.handlers import Deps, expire_batch
from huleedu.result_aggregator.repository import BatchRepository
from huleedu.storage.engine import Sessions, reading
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

SWEEP_BATCH = 100


async def expire_overdue_batches(sessions: Sessions, deps: Deps) -> int:
    """Complete every open batch past its deadline, one transaction each. Returns how many."""
    async with reading(sessions) as session:
        overdue = await BatchRepository(session).open_batches_past_deadline(deps.clock(), SWEEP_BATCH)
    expired = 0
    for batch_id in overdue:
        async with UnitOfWork(sessions) as uow:
            if await expire_batch(batch_id, uow, deps=deps):
                await uow.commit()
                expired += 1
                log.warning("batch completed by its deadline", batch_id=batch_id)
    return expired


async def sweep_forever(sessions: Sessions, deps: Deps, interval_seconds: float) -> None:
    while True:
        try:
            await expire_overdue_batches(sessions, deps)
        except Exception:  # the sweeper must outlive a database outage
            log.exception("deadline sweep failed; will retry")
        await asyncio.sleep(interval_seconds)
