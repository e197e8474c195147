"""One client's WebSocket connection: the asyncio shell around the protocol core.

It runs the handshake (a coroutine waiting for each handshake message), then takes the
records its wire (wire.py) pushes to it, opens and decodes them, and hands each request to
its handler, in order: a task runs only while requests wait, so an idle connection holds
none. Outgoing events are sealed in order as they are delivered. While the
socket keeps up, a record is written at once as one frame; otherwise it waits in a queue
that a writer task (started only then) drains, so routing to a slow reader never blocks
anyone else. The queue is bounded in bytes, and a connection that overflows it is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable

from websockets.exceptions import ConnectionClosed

from chat.protocol.codes import CloseCode, ErrorCode, Feature, NoticeCode
from chat.protocol.envelope import Envelope, encode_event
from chat.protocol.errors import RecordError
from chat.server.context import Context, encode_reply
from chat.server.dispatch import dispatch
from chat.server.frames import binary_frame
from chat.server.handshaking import run_handshake
from chat.server.host import Host
from chat.server.hub import SessionState
from chat.server.inbound import Inbound
from chat.server.login import logout
from chat.server.login_throttle import address_prefix
from chat.server.ratelimit import TokenBucket
from chat.server.resumable import Resumable
from chat.server.session import ServerSession
from chat.server.wire import Message, Wire

log = logging.getLogger("chat.server")
_ids = itertools.count(1)


#: Below this many bytes waiting in the socket's buffer, an event is written directly.
DIRECT_LIMIT = 64 * 1024



class ClientConnection(Inbound, Resumable, SessionState):
    """Implements the hub's Outbox for one logged-in user."""

    # Slots: an idle connection's attributes take a few hundred bytes instead of a
    # dictionary of 1.5 KiB (more than 30 attributes defeat CPython's shared-key dicts).
    __slots__ = (
        "_backlog",
        "_batch",
        "_bucket",
        "_close_code",
        "_close_queued",
        "_close_reason",
        "_closer",
        "_closing",
        "_drop_above",
        "_frames",
        "_inbox",
        "_linger_timer",
        "_login_timer",
        "_logout_task",
        "_missed",
        "_network",
        "_pending",
        "_presence",
        "_reader",
        "_seal",
        "_server",
        "_session",
        "_transfers_ended",
        "_transport",
        "_writer",
        "_ws",
        "id",
        "ip",
        "peer",
    )  # fmt: skip

    def __init__(self, websocket: Wire, server: Host) -> None:
        super().__init__()  # the session's state before login (hub.SessionState)
        self.id = next(_ids)
        self._ws = websocket
        self._server = server
        #: The protocol's state for this peer, without I/O (session.py).
        self._session = ServerSession(server.private_key, ticket_lifetime=server.config.ticket_lifetime)
        #: The session's seal once established (None before: nothing is delivered).
        self._seal: Callable[[bytes], bytes] | None = None
        assert websocket.transport is not None
        self._transport = websocket.transport
        #: Messages pushed by the wire and not yet read, and the task reading them (both
        #: exist only while messages wait).
        self._inbox: deque[Message] | None = None
        self._reader: asyncio.Task[None] | None = None
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
        peer = self._transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else "?"
        self._network = address_prefix(self.ip)
        self.peer = f"{self.ip}:{peer[1]}" if peer else "?"

    # --- Outbox ---------------------------------------------------------------------

    def deliver(self, payload: bytes, *, bulk: bool = False, droppable: bool = False) -> None:
        seal = self._seal
        if self._closing or seal is None:
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
            record = seal(payload)
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
        self._ws.write(data)

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
        """The handshake; then the wire pushes each message to :meth:`_message`, and
        :meth:`_ended` runs when it is gone."""
        log.debug("connection opened conn=%d peer=%s", self.id, self.peer)
        if not await self._handshake():
            self._finished()
            return
        self._seal = self._session.sealer
        config = self._server.config
        loop = asyncio.get_running_loop()
        self._login_timer = loop.call_later(config.login_timeout, self._login_deadline)
        if config.rate_limit > 0:
            self._bucket = TokenBucket(config.rate_limit, config.rate_burst, loop.time())
        if self._ws.closed:
            await self._ended()
            return
        self._ws.on_lost = self._lost
        self._ws.on_message = self._message
        self._ws.deliver_waiting()

    def _lost(self) -> None:
        asyncio.get_running_loop().create_task(self._ended())

    async def _ended(self) -> None:
        """The wire is gone: the request being handled finishes, then the user lingers
        (to resume) or logs out."""
        try:
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    await self._reader
            if self._login_timer is not None:
                self._login_timer.cancel()
            if self._may_linger():
                self._linger()
            else:
                await (self._logout_task or self._logout())
            await self._shutdown_writer()
        finally:
            self._finished()

    def _finished(self) -> None:
        log.debug("connection closed conn=%d peer=%s code=%s", self.id, self.peer, self._ws.close_code)
        self._server.connections.discard(self)

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
        if self._writer is None and self._ws.closed:
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
