"""One transaction, plus the actions that may only run once it has committed."""

from collections.abc import Awaitable, Callable
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.storage.engine import Sessions

AfterCommit = Callable[[], Awaitable[None]]


class UnitOfWork:
    """Repositories work inside `uow.session` and never commit; the owner of the unit commits.

    Actions in `after_commit` run only after a successful commit (cache invalidation, waking a
    relay): the cache must never be ahead of the database.
    """

    session: AsyncSession

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self.after_commit: list[AfterCommit] = []

    async def __aenter__(self) -> Self:
        self.session = self._sessions()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.session.rollback()  # a no-op after commit; undoes everything otherwise
        await self.session.close()

    async def commit(self) -> None:
        await self.session.commit()
        actions, self.after_commit = self.after_commit, []
        for action in actions:
            await action()
