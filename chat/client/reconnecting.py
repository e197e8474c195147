"""The chat client's half that survives a lost connection (terminal mode, or line mode
with ``--reconnect``): say so, reconnect with backoff, log back in resuming the session
(resume_state.py: what was missed is replayed, unacknowledged messages sent again),
carry on.

A mixin of :class:`client.ChatClient`; ``_Client`` names what it uses of it."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Protocol

from chat.client import own_lines
from chat.client.commands import Parsed, Send
from chat.client.inputs import LineInput
from chat.client.output import Output
from chat.client.pacing import Pacer
from chat.client.reconnect import backoff_delays, loss_reason, relogin, worth_retrying
from chat.client.resume_state import ResumeState
from chat.client.style import ERROR, SYSTEM
from chat.client.transfers import TransferManager
from chat.client.transport import ClientError, ClientSession
from chat.protocol.codes import Feature
from chat.protocol.envelope import Envelope

LOST = "the connection to the server was lost"
#: Extensions this client understands (PROTOCOL.md section 6.6).
FEATURES = [str(Feature.OFFLINE_PAGES), str(Feature.MISSED), str(Feature.UNREAD)]
#: A client that reconnects also resumes: the server keeps a lost session for it, and
#: gives it a session ticket, so that the reconnection skips the server's RSA work.
RESUMING = [*FEATURES, str(Feature.RESUME), str(Feature.TICKET)]


class _Client(Protocol):
    _session: ClientSession
    _lines: LineInput
    _out: Output
    _pacer: Pacer
    _transfers: TransferManager
    _name: str | None
    _login_password: str | None
    _quitting: bool
    _online: bool
    _ordered_local_output: bool
    _resume: ResumeState
    _held: deque[Parsed]

    @property
    def _reconnect(self) -> Any: ...

    def _note(self, event: Envelope) -> None: ...

    def _present(self, event: Envelope) -> None: ...

    def _new_transfers(self) -> TransferManager: ...

    def _say(self, line: str) -> None: ...

    def _set_online(self, online: bool) -> None: ...

    async def _login_reply(self, session: ClientSession, fields: dict[str, Any]) -> Envelope: ...


class Reconnecting:
    """Reconnecting and logging back in."""

    def _may_reconnect(self: _Client, error: ClientError) -> bool:
        return (
            self._reconnect is not None
            and self._name is not None
            and not self._quitting
            and worth_retrying(error)
        )

    def _set_online(self: _Client, online: bool) -> None:
        self._online = online
        if self._name is not None:
            self._lines.show_identity(self._name, online)

    async def _recover(self: _Client, error: ClientError) -> None:
        """Say the connection was lost, then reconnect with backoff and log back in.
        Returns once logged in; raises ClientError when trying again cannot help (the
        server's key changed, the name or password is refused)."""
        assert self._reconnect is not None
        self._set_online(False)
        await self._transfers.close(LOST)  # says which transfers were interrupted
        with contextlib.suppress(Exception):
            await self._session.close()
        # Line mode says it once, in the words a script can rely on (README).
        line_mode = self._ordered_local_output
        if line_mode:
            self._out.show(own_lines.LINE_MODE_LOST, SYSTEM)
        what, first = own_lines.connection_lost(loss_reason(error)), True
        for delay in backoff_delays():
            if not line_mode:
                self._out.show(own_lines.reconnecting_in(what, delay, first=first), ERROR)
            await asyncio.sleep(delay)
            first = False
            try:
                session = await self._reconnect()
            except ClientError as failure:
                if not worth_retrying(failure):
                    raise
                what = failure.message.rstrip(".") + "."
                continue
            try:
                assert self._name is not None
                say = self._say if not line_mode else _quiet
                welcome = await relogin(session, self._name, self._login_password, self._login_reply, say)
            except ClientError as failure:
                with contextlib.suppress(Exception):
                    await session.close()
                if not worth_retrying(failure):
                    raise
                what = own_lines.connection_lost(loss_reason(failure), again=True)
                continue
            self._session = session
            self._transfers = self._new_transfers()
            self._note(welcome)
            self._set_online(True)
            self._out.show(own_lines.reconnected(self._name, bracketed=line_mode), SYSTEM)
            # Messages never acknowledged go again first, with their ids: stored once.
            for request in reversed(self._resume.to_resend()):
                self._held.appendleft(Send(request.kind, request.fields))
            return

    async def _login_reply(self: _Client, session: ClientSession, fields: dict[str, Any]) -> Envelope:
        """Send ``login`` and receive until its reply (nothing else is expected before)."""
        await self._pacer.wait()
        rid = await session.send("login", features=RESUMING, **fields, **self._resume.login_fields())
        while True:
            event = await session.recv()
            if event.get("re") == rid:
                return event
            for shown in self._resume.received(event):
                self._note(shown)
                self._present(shown)


def _quiet(line: str) -> None:
    """Line mode does not say why logging back in takes a while."""
