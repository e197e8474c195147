"""A connection's session outliving the connection for a while (PROTOCOL.md 6.8): a
session that can resume (its client asked for Feature.RESUME) and was lost, not quit nor
closed by the server, stays logged in for ``resume_linger`` seconds, its name held and
its groups kept, nobody told it left. Its client's next connection takes it over
(``supersede``), or the time runs out and it logs out as any other.

A mixin of :class:`connection.ClientConnection`; ``_Connection`` names what it uses."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from chat.protocol.codes import CloseCode
from chat.server.context import Context
from chat.server.history import remember_read
from chat.server.host import Host

log = logging.getLogger("chat.server")


class _Connection(Protocol):
    id: int
    name: str | None
    resume_token: str | None
    superseded: bool
    _server: Host
    _closing: bool
    _logout_task: asyncio.Task[None] | None
    _linger_timer: asyncio.TimerHandle | None
    _transfers_ended: asyncio.Task[None] | None
    read_marked: bool

    def _context(self, user: str, rid: int | None) -> Context: ...

    def _logout_now(self) -> None: ...

    def close_soon(self, code: CloseCode, reason: str) -> None: ...

    def stop_lingering(self) -> asyncio.Task[None] | None: ...


async def _lost(ctx: Context) -> None:
    """What ends with the connection: its transfers; and what a registered user has seen
    of their groups is as of now."""
    await ctx.services.transfers.disconnected(ctx)
    await remember_read(ctx)


class Resumable:
    """Lingering after a lost connection, and being taken over."""

    __slots__ = ()  # a mixin: the connection's slots hold its state

    _linger_timer: asyncio.TimerHandle | None
    _transfers_ended: asyncio.Task[None] | None

    def _may_linger(self: _Connection) -> bool:
        """A session that can resume and was lost (not quit, not closed by the server)
        stays logged in for ``resume_linger`` seconds (PROTOCOL.md 6.8)."""
        return (
            self.name is not None and self.resume_token is not None and self._logout_task is None
            and not self.superseded and self._server.config.resume_linger > 0
        )  # fmt: skip

    def _linger(self: _Connection) -> None:
        self._closing = True  # nothing more is sent to it
        self._server.lingering.add(self)
        # Transfers do not survive the connection: their other sides learn it now.
        assert self.name is not None
        ctx = self._context(self.name, None)
        self._transfers_ended = asyncio.get_running_loop().create_task(_lost(ctx))
        self.read_marked = True
        delay = self._server.config.resume_linger
        self._linger_timer = asyncio.get_running_loop().call_later(delay, self.stop_lingering)
        log.info("lost conn=%d user=%s: kept %g s for a resume", self.id, self.name, delay)

    def stop_lingering(self: _Connection) -> asyncio.Task[None] | None:
        """Log out now (the time is up, or the server stops); the logout's task."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
            self._server.lingering.discard(self)
            self._logout_now()
        return self._logout_task

    def supersede(self: _Connection) -> None:
        self.superseded = True
        if self._linger_timer is not None:
            self.stop_lingering()
            return
        self.close_soon(CloseCode.POLICY_VIOLATION, "logged in again from a new connection")
