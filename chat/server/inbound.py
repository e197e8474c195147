"""A connection's incoming messages, once its handshake is done: the wire (wire.py)
pushes each one; they are read in order by a task that runs only while some wait (so an
idle connection holds no task), each request metered (review M3, M4) and handed to its
handler.

A mixin of :class:`connection.ClientConnection`; ``_Connection`` names what it uses."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed

from chat.protocol.codes import CloseCode, ErrorCode, NoticeCode
from chat.protocol.envelope import Envelope
from chat.server.host import Host
from chat.server.ratelimit import TokenBucket, Verdict
from chat.server.session import Action, End, Refuse, Serve, ServerSession
from chat.server.wire import MAX_QUEUED, Message, Wire

log = logging.getLogger("chat.server")

#: Requests exempt from the rate limit: file data, which flow control paces instead.
UNMETERED = frozenset({"file_chunk", "file_ack"})


class _Connection(Protocol):
    id: int
    name: str | None
    _server: Host
    _session: ServerSession
    _ws: Wire
    _bucket: TokenBucket | None
    _closing: bool
    _network: str
    _inbox: deque[Message] | None
    _reader: asyncio.Task[None] | None

    def _abort(self, code: CloseCode, reason: str) -> None: ...

    def _error(self, rid: int | None, code: ErrorCode, **fields: Any) -> None: ...

    async def _handle(self, envelope: Envelope) -> None: ...

    def close_soon(self, code: CloseCode, reason: str) -> None: ...

    def notice(self, code: NoticeCode) -> None: ...

    async def _read_inbox(self) -> None: ...

    async def _read(self, message: Message) -> bool: ...

    async def _serve(self, action: Serve) -> None: ...

    def _metered(self, action: Action) -> bool: ...

    def _within_rate(self) -> bool: ...

    def _network_allows(self, envelope: Envelope, size: int) -> bool: ...


class Inbound:
    """Reading the pushed messages, in order."""

    __slots__ = ()
    _inbox: deque[Message] | None
    _reader: asyncio.Task[None] | None

    def _message(self: _Connection, message: Message) -> None:
        """A message from the wire: read at once by a task started for it, or after the
        ones before it. Past MAX_QUEUED waiting, the socket is read no further for now."""
        if self._closing:
            return
        if self._inbox is not None:
            self._inbox.append(message)
            if len(self._inbox) >= MAX_QUEUED:
                self._ws.pause_reading()
            return
        self._inbox = deque((message,))
        self._reader = asyncio.get_running_loop().create_task(self._read_inbox())

    async def _read_inbox(self: _Connection) -> None:
        inbox = self._inbox
        assert inbox is not None
        try:
            while inbox and not self._closing:
                message = inbox.popleft()
                self._ws.resume_reading()
                if not await self._read(message):
                    break
        except ConnectionClosed:
            pass
        finally:
            self._inbox = self._reader = None

    async def _read(self: _Connection, message: Message) -> bool:
        """Carry out what one message asks; False once the session is over."""
        for action in self._session.receive(message):
            if isinstance(action, End):
                log.warning("session ended conn=%d user=%s: %s", self.id, self.name, action.reason)
                self._abort(action.code, action.reason)
                return False
            if self._bucket is not None and self._metered(action) and not self._within_rate():
                return False
            if isinstance(action, Refuse):
                if action.code is ErrorCode.BAD_REQUEST:
                    log.info("bad envelope conn=%d user=%s: %s", self.id, self.name, action.detail)
                fields = {"detail": action.detail} if action.detail is not None else {}
                self._error(action.rid, action.code, **fields)
            elif isinstance(action, Serve):
                await self._serve(action)
        return True

    async def _serve(self: _Connection, action: Serve) -> None:
        envelope = action.envelope
        if self._metered(action) and not self._network_allows(envelope, action.size):
            self._error(envelope.get("rid"), ErrorCode.NETWORK_TOO_FAST)
            return
        await self._handle(envelope)

    def _metered(self: _Connection, action: Action) -> bool:
        """File data that flow control bounds (a chunk from a transfer's sender within its
        window, an ack of new bytes from one of its recipients) is paced by it; all else,
        refused requests and file requests from anyone else included, is metered (M3)."""
        if not isinstance(action, Serve) or action.envelope.type not in UNMETERED or self.name is None:
            return True
        return not self._server.services.transfers.paced(action.envelope, self.name)

    def _within_rate(self: _Connection) -> bool:
        """Charge one request to the bucket; warn, or cut the sender off."""
        assert self._bucket is not None
        verdict = self._bucket.take(asyncio.get_running_loop().time())
        if verdict is Verdict.WARN:
            self.notice(NoticeCode.TOO_FAST)
        elif verdict is Verdict.CUT_OFF:
            log.warning("rate limit: disconnecting conn=%d user=%s", self.id, self.name)
            self.close_soon(CloseCode.POLICY_VIOLATION, "sending too fast")
            return False
        return True

    def _network_allows(self: _Connection, envelope: Envelope, size: int) -> bool:
        """The requests and bytes of every connection from this network (IPv4 /24, IPv6
        /64) together stay within their budget (review M4: 40 connections from one
        address, each within its own limit, could send 20 MB/s to everyone). Over it, a
        request is refused with an error, not dropped silently."""
        return self._server.network_allows(self._network, size, broadcast=envelope.type == "broadcast")
