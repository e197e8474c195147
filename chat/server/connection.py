"""One client's WebSocket connection: the asyncio shell around the protocol core.

It runs the handshake, then reads records, opens and decodes them, and hands each request
to its handler. Outgoing events are sealed in order as they are delivered. While the
socket keeps up, a record is written at once as one frame; otherwise it waits in a queue
that a writer task (started only then) drains, so routing to a slow reader never blocks
anyone else. The queue is bounded in bytes, and a connection that overflows it is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from chat.protocol.codes import CloseCode, ErrorCode, Feature, NoticeCode
from chat.protocol.envelope import Envelope, encode_event
from chat.protocol.errors import RecordError
from chat.server.context import Context, encode_reply
from chat.server.dispatch import dispatch
from chat.server.frames import binary_frame
from chat.server.handshaking import run_handshake
from chat.server.host import Host
from chat.server.hub import SessionState
from chat.server.login import logout
from chat.server.login_throttle import address_prefix
from chat.server.ratelimit import TokenBucket, Verdict
from chat.server.resumable import Resumable
from chat.server.session import Action, End, Refuse, Serve, ServerSession

log = logging.getLogger("chat.server")
_ids = itertools.count(1)


#: Below this many bytes waiting in the socket's buffer, an event is written directly.
DIRECT_LIMIT = 64 * 1024

#: Requests exempt from the rate limit: file data, which flow control paces instead.
UNMETERED = frozenset({"file_chunk", "file_ack"})


class ClientConnection(Resumable, SessionState):
    """Implements the hub's Outbox for one logged-in user."""

    # Slots: an idle connection's attributes take a few hundred bytes instead of a
    # dictionary of 1.5 KiB (more than 30 attributes defeat CPython's shared-key dicts).
    __slots__ = (
        "_backlog", "_batch", "_bucket", "_close_code", "_close_queued", "_close_reason", "_closer",
        "_closing", "_drop_above", "_frames", "_linger_timer", "_login_timer", "_logout_task", "_missed",
        "_network", "_pending", "_presence", "_server", "_session", "_transfers_ended", "_transport",
        "_writer", "_ws", "id", "ip", "peer",
    )  # fmt: skip

    def __init__(self, websocket: ServerConnection, server: Host) -> None:
        super().__init__()  # the session's state before login (hub.SessionState)
        self.id = next(_ids)
        self._ws = websocket
        self._server = server
        #: The protocol's state for this peer, without I/O (session.py).
        self._session = ServerSession(server.private_key, ticket_lifetime=server.config.ticket_lifetime)
        self._transport = websocket.transport
        #: Frames written during this event-loop iteration, sent together at its end.
        self._frames: list[bytes] | None = None
        self._batch = server.write_batch
        # Sealed records waiting to be written, in order, each marked bulk (file data) or
        # not; None asks the writer to close the WebSocket. Made only while records wait
        # (an empty deque takes 600 bytes).
        self._pending: deque[tuple[bytes, bool] | None] | None = None
        #: The task writing ``_pending``; it exists only while something waits, so an idle
        #: connection holds no task (memory) and a fresh one costs none to set up.
        self._writer: asyncio.Task[None] | None = None
        self._close_queued = False
        self._backlog = 0
        #: Past this backlog broadcasts are dropped for this reader; ``_missed`` counts them.
        self._drop_above = server.config.max_backlog_bytes // 2
        self._missed = 0
        self._closing = False
        self._close_code = CloseCode.NORMAL
        self._close_reason = ""
        self._bucket: TokenBucket | None = None
        self._login_timer: asyncio.TimerHandle | None = None
        self._logout_task: asyncio.Task[None] | None = None
        #: Set while a lost session waits for its client to resume it.
        self._linger_timer: asyncio.TimerHandle | None = None
        self._transfers_ended: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        #: Logins and exits are announced through this feed; ``presence_seen`` is how far
        #: into it this connection has been sent (UNSUBSCRIBED until logged in).
        self._presence = server.services.presence
        peer = websocket.remote_address
        self.ip = str(peer[0]) if peer else "?"
        self._network = address_prefix(self.ip)
        self.peer = f"{self.ip}:{peer[1]}" if peer else "?"

    # --- Outbox ---------------------------------------------------------------------

    def deliver(self, payload: bytes, *, bulk: bool = False, droppable: bool = False) -> None:
        if self._closing or not self._session.established:
            return
        if droppable and self._backlog > self._drop_above:
            # A reader this far behind misses broadcasts (told by a ``missed`` event once
            # it catches up) rather than being cut off (review M4). Checked before
            # sealing: a sealed record must be sent, its sequence number is taken.
            self._missed += 1
            return
        if self.presence_seen != self._presence.end:
            # Announcements not yet sent go first: a join is seen before anything the
            # user who joined causes to arrive here.
            self._presence.catch_up(self)
        try:
            record = self._session.seal(payload)
        except RecordError as exc:
            # The session's key has protected all it may (records.MAX_BYTES_PER_KEY): end
            # the session; the client reconnects with fresh keys.
            log.warning("closing conn=%d user=%s: %s", self.id, self.name, exc)
            self._abort(CloseCode.GOING_AWAY, "session key limit reached; reconnect")
            return
        if not bulk and self._writer is None and self._transport.get_write_buffer_size() < DIRECT_LIMIT:
            # Nothing waits before it and the socket keeps up: write it straight away, as
            # websockets' broadcast() does, instead of waking a writer task. (File data
            # goes through the writer, whose flow control it needs and loses nothing by.)
            self._write_now(record)
            return
        if not bulk:
            self._backlog += len(record)
        if self._backlog > self._server.config.max_backlog_bytes:
            log.warning("dropping slow reader conn=%d user=%s backlog=%d", self.id, self.name, self._backlog)
            self._abort(CloseCode.POLICY_VIOLATION, "too much unread data")
            # The writer may be stuck waiting for this reader: close from outside it.
            self._closer = asyncio.get_running_loop().create_task(
                self._ws.close(CloseCode.POLICY_VIOLATION, "too much unread data")
            )
            return
        self._enqueue((record, bulk))

    def _write_now(self, record: bytes) -> None:
        """Write ``record`` as one binary frame without waiting, as websockets'
        ``broadcast()`` does, but with the frame built by :func:`binary_frame` (the hot
        path of every delivery: websockets' general frame writer costs more than the
        encryption). Frames for this connection from the same event-loop iteration go
        out together in one ``send()`` at its end (:class:`WriteBatch`)."""
        frame = binary_frame(record)
        if self._frames is None:
            self._frames = [frame]
            self._batch.add(self)
        else:
            self._frames.append(frame)
        self._batch.count(len(frame))

    def flush_frames(self) -> None:
        """Write the frames gathered by :meth:`_write_now`, if any."""
        frames, self._frames = self._frames, None
        if frames:
            self._send(frames[0] if len(frames) == 1 else b"".join(frames))

    def _send(self, data: bytes) -> None:
        """Hand frames to the transport, unless the connection is closing: no data frames
        after a close frame, and uvloop raises on a write to a closed transport."""
        if self._ws.protocol.state is State.OPEN and not self._transport.is_closing():
            self._transport.write(data)

    def _enqueue(self, item: tuple[bytes, bool] | None) -> None:
        self.flush_frames()  # what was written before goes first
        if self._pending is None:
            self._pending = deque()
        self._pending.append(item)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())

    def _queue_close(self) -> None:
        """Close the WebSocket once what is queued before this has been written."""
        if not self._close_queued:
            self._close_queued = True
            self._enqueue(None)

    # --- lifecycle ------------------------------------------------------------------

    async def serve(self) -> None:
        log.debug("connection opened conn=%d peer=%s", self.id, self.peer)
        try:
            if not await self._handshake():
                return
            config = self._server.config
            loop = asyncio.get_running_loop()
            self._login_timer = loop.call_later(config.login_timeout, self._login_deadline)
            if config.rate_limit > 0:
                self._bucket = TokenBucket(config.rate_limit, config.rate_burst, loop.time())
            try:
                await self._read_loop()
            finally:
                self._login_timer.cancel()
                if self._may_linger():
                    self._linger()
                else:
                    await (self._logout_task or self._logout())
                await self._shutdown_writer()
        finally:
            log.debug(
                "connection closed conn=%d peer=%s code=%s", self.id, self.peer, self._ws.close_code
            )

    def close_soon(self, code: CloseCode, reason: str) -> None:
        """Stop reading; send what is queued, then close with ``code``. The user is
        logged out at once, not when the peer finishes closing."""
        if self._closing:
            return
        self._closing = True
        self._close_code, self._close_reason = code, reason
        self._queue_close()
        self._logout_now()

    def _logout_now(self) -> None:
        if self.name is not None and self._logout_task is None:
            self._logout_task = asyncio.get_running_loop().create_task(self._logout())

    def notice(self, code: NoticeCode) -> None:
        self.deliver(encode_event("notice", code=code))

    async def _handshake(self) -> bool:
        """The session's handshake over this WebSocket (handshaking.py)."""
        return await run_handshake(self._ws, self._session, self._server, self.ip, self._send)

    async def _read_loop(self) -> None:
        try:
            async for message in self._ws:
                if self._closing:
                    break
                for action in self._session.receive(message):
                    if isinstance(action, End):
                        log.warning("session ended conn=%d user=%s: %s", self.id, self.name, action.reason)
                        self._abort(action.code, action.reason)
                        return
                    if self._bucket is not None and self._metered(action) and not self._within_rate():
                        return
                    if isinstance(action, Refuse):
                        if action.code is ErrorCode.BAD_REQUEST:
                            log.info("bad envelope conn=%d user=%s: %s", self.id, self.name, action.detail)
                        fields = {"detail": action.detail} if action.detail is not None else {}
                        self._error(action.rid, action.code, **fields)
                    elif isinstance(action, Serve):
                        await self._serve(action)
        except ConnectionClosed:
            pass

    async def _serve(self, action: Serve) -> None:
        envelope = action.envelope
        if self._metered(action) and not self._network_allows(envelope, action.size):
            self._error(envelope.get("rid"), ErrorCode.NETWORK_TOO_FAST)
            return
        await self._handle(envelope)

    def _metered(self, action: Action) -> bool:
        """File data that flow control bounds (a chunk from a transfer's sender within its
        window, an ack of new bytes from one of its recipients) is paced by it; all else,
        refused requests and file requests from anyone else included, is metered (M3)."""
        if not isinstance(action, Serve) or action.envelope.type not in UNMETERED or self.name is None:
            return True
        return not self._server.services.transfers.paced(action.envelope, self.name)

    def _within_rate(self) -> bool:
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

    def _network_allows(self, envelope: Envelope, size: int) -> bool:
        """The requests and bytes of every connection from this network (IPv4 /24, IPv6
        /64) together stay within their budget (review M4: 40 connections from one
        address, each within its own limit, could send 20 MB/s to everyone). Over it, a
        request is refused with an error, not dropped silently."""
        return self._server.network_allows(self._network, size, broadcast=envelope.type == "broadcast")

    def _login_deadline(self) -> None:
        if self.name is None and not self._closing:
            log.info("login timed out conn=%d peer=%s", self.id, self.peer)
            self.close_soon(CloseCode.POLICY_VIOLATION, "login timed out")

    async def _handle(self, envelope: Envelope) -> None:
        ctx = self._context(self.name or "", envelope.get("rid"))
        await dispatch(ctx, envelope)
        if ctx.quitting:
            # Released before the reply, so the name is free once the client sees ``ok``.
            await self._logout()
            ctx.reply("ok")
            self.close_soon(CloseCode.NORMAL, "bye")

    @property
    def closing(self) -> bool:
        return self._closing

    def logged_in(self, name: str, registered: bool, features: set[Feature]) -> None:
        """The login handler accepted ``name`` for this connection."""
        self.name, self.registered, self.features = name, registered, features
        ticket = self._session.logged_in(features)
        if ticket is not None:
            self.deliver(ticket)  # a session ticket (PROTOCOL.md 2.7), just before the welcome
        self._server.logins += 1
        if self._login_timer is not None:
            self._login_timer.cancel()
        log.info("login conn=%d user=%s", self.id, name)

    def _context(self, user: str, rid: int | None) -> Context:
        return Context(user, rid, self, self._server.services, address=self.ip, registered=self.registered)

    async def _logout(self) -> None:
        if self.name is None:
            return
        name, self.name = self.name, None
        await logout(self._context(name, None))
        log.info("exit conn=%d user=%s", self.id, name)

    def _reply(self, rid: int | None, kind: str, **fields: object) -> None:
        reply = encode_reply(rid, kind, **fields)
        if reply is not None:
            self.deliver(reply)

    def _error(self, rid: int | None, code: ErrorCode, **fields: object) -> None:
        self._reply(rid, "error", code=code, **fields)

    def _abort(self, code: CloseCode, reason: str) -> None:
        """Close without flushing what is queued (bad input, or a reader too slow)."""
        self._closing = True
        self._close_code, self._close_reason = code, reason
        if self._pending is not None:
            self._pending.clear()  # the writer stops at the close marker queued next
        self._frames = None
        self._backlog = 0
        self._close_queued = False
        self._queue_close()
        self._logout_now()

    async def _write_pending(self) -> None:
        """Send queued records in order; on the end marker, close the WebSocket. Ends
        when nothing is left, so the next record may be written directly again."""
        pending = self._pending
        assert pending is not None
        try:
            while pending:
                item = pending.popleft()
                if item is None:
                    await self._ws.close(self._close_code, self._close_reason)
                    return
                record, bulk = item
                await self._ws.send(record)  # waits while the peer is slow to read
                if not bulk:
                    self._backlog -= len(record)
                if self._missed and self._backlog <= self._drop_above // 2 and not self._closing:
                    self._tell_missed()
        except ConnectionClosed:
            pass
        finally:
            self._writer = None
            if not pending:
                self._pending = None

    def _tell_missed(self) -> None:
        """The reader caught up after broadcasts were dropped for it: say how many (to a
        client that asked for Feature.MISSED; others were dropped for silently)."""
        log.info("broadcasts dropped for a slow reader conn=%d count=%d", self.id, self._missed)
        count, self._missed = self._missed, 0
        if Feature.MISSED not in self.features:
            return
        record = self._session.seal(encode_event("missed", count=count))
        self._backlog += len(record)
        assert self._pending is not None  # called by the writer only
        self._pending.append((record, False))

    async def _shutdown_writer(self) -> None:
        """Flush what is queued and close, bounded by the close timeout."""
        self._closing = True
        if self._writer is None and self._ws.protocol.state is State.CLOSED:
            return  # the peer closed and nothing waits: no writer task just to find that out
        self._queue_close()
        writer = self._writer
        if writer is None:
            return
        try:
            async with asyncio.timeout(self._server.config.close_timeout):
                await writer
        except TimeoutError:
            writer.cancel()
            self._transport.abort()
