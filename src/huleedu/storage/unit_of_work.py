"""One transaction, plus the actions that may only run once it has committed."""

from collections.abc import Awaitable, Callable
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.storage.engine import Sessions, WriteTurn

AfterCommit = Callable[[], Awaitable[None]]


class UnitOfWork:
    """Repositories work inside `uow.session` and never commit; the owner of the unit commits.

    Actions in `after_commit` run only after a successful commit (cache invalidation, waking a
    relay): the cache must never be ahead of the database. On SQLite the unit writes in this
    process's write turn (see storage.engine), from entering to commit or exit: do not open a
    second unit inside one, it would wait for the first.
    """

    session: AsyncSession

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self.after_commit: list[AfterCommit] = []

    async def __aenter__(self) -> Self:
        self.session = self._sessions()
        self._turn = WriteTurn(self.session)
        try:
            await self._turn.begin()
        except BaseException:
            await self.session.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.session.rollback()  # a no-op after commit; undoes everything otherwise
            await self.session.close()
        finally:
            self._turn.end()

    async def commit(self) -> None:
        await self.session.commit()
        self._turn.end()  # the actions below may write themselves (in a unit of their own)
        actions, self.after_commit = self.after_commit, []
        for action in actions:
            await action()
