"""One TCP connection of the server: its HTTP request and WebSocket frames, through
websockets' sans-I/O ``ServerProtocol``, in an ``asyncio.Protocol`` of our own.

websockets' asyncio server keeps a task, futures, a message assembler and the upgrade's
headers for every connection while it lives. Here an idle connection holds no task and no
future: messages are pushed to the chat connection (:attr:`Wire.on_message`); a coroutine
waits (:meth:`Wire.recv`) only during the handshake. websockets parses every frame, answers
pings and closes; the chat code writes its data frames itself (frames.py).

What a peer may make the server spend is bounded here (admission.py): a connection is
counted from accept, refused over the limits, given ``upgrade_timeout`` for its upgrade,
limited in pings per second, and not read while ``MAX_QUEUED`` messages wait for the chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.frames import Frame, Opcode
from websockets.http11 import SERVER, Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from chat.protocol.codes import CloseCode
from chat.protocol.limits import MAX_HANDSHAKE_BYTES
from chat.server.admission import Admission, peer_ip
from chat.server.config import ServerConfig
from chat.server.keepalive import Keepalive

log = logging.getLogger("chat.server")

#: Complete messages waiting for the chat code before the socket is read no further: the
#: chat reads each one at once, so more would only let a peer park memory here.
MAX_QUEUED = 4

_DATA = (Opcode.TEXT, Opcode.BINARY)

#: A complete WebSocket message: bytes, or str for a text message.
Message = bytes | str


class WireHost(Protocol):
    """What a wire uses of its server (app.ChatServer)."""

    config: ServerConfig
    admission: Admission
    #: Every open wire.
    wires: set[Wire]

    @property
    def serving(self) -> bool: ...

    def process_request(self, request: Request) -> Response | Awaitable[Response | None] | None:
        """The answer to a plain HTTP request, or None to go on with the upgrade."""

    def upgraded(self, wire: Wire) -> None:
        """The WebSocket is open."""


class Wire(Keepalive, asyncio.Protocol):
    """A server-side WebSocket connection, from accept to close."""

    __slots__ = (
        "_admission", "_closed", "_counted", "_drained", "_fragments", "_inbox", "_keepalive",
        "_paused", "_ping_clock", "_ping_sent", "_pings", "_refusal", "_server", "_text", "_timer",
        "_told", "_unanswered", "_waiter", "ip", "on_lost", "on_message", "protocol", "transport",
        "upgrading",
    )  # fmt: skip

    def __init__(self, server: WireHost) -> None:
        self._server = server
        self._admission: Admission = server.admission
        self.protocol = ServerProtocol(max_size=MAX_HANDSHAKE_BYTES)
        self.transport: asyncio.Transport | None = None
        self.ip = "?"
        self.upgrading = True
        self._counted = False
        self._told = False
        #: Why this connection is refused, if it is (told with close 1013 after the upgrade).
        self._refusal: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        #: The keepalive ping not answered yet, and when it was sent.
        self._unanswered: bytes | None = None
        self._ping_sent = 0.0
        self._pings = 0.0
        self._ping_clock = 0.0
        #: Frames of a fragmented message so far (the first says whether it is text).
        self._fragments: list[bytes] | None = None
        self._text = False
        #: Messages not yet taken by :meth:`recv` or :attr:`on_message`.
        self._inbox: deque[Message] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        #: Set while the transport's buffer is over its high-water mark.
        self._drained: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        #: Complete messages go here once set (else they wait for :meth:`recv`).
        self.on_message: Callable[[Message], None] | None = None
        #: Called once when the TCP connection is gone.
        self.on_lost: Callable[[], None] | None = None

    # --- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.ip = peer_ip(transport)
        server = self._server
        server.wires.add(self)
        self._ping_clock = asyncio.get_running_loop().time()
        self._refusal = self._admission.admit(self.ip)
        self._counted = self._refusal is None
        if self._refusal is not None:
            self._told = self._admission.tell(self.ip)
            if not self._told:
                self.transport.abort()  # not told: just closed
                return
        size = server.config.socket_send_buffer
        sock = transport.get_extra_info("socket")
        if size > 0 and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        timeout = min(server.config.upgrade_timeout, server.config.handshake_timeout)
        self._timer = asyncio.get_running_loop().call_later(timeout, self._upgrade_timed_out)

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        events = self.protocol.events_received()
        self._flush()  # pongs, the closing handshake, errors
        for event in events:
            if isinstance(event, Request):
                self._request(event)
            else:
                self._frame(cast(Frame, event))

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        protocol = self.protocol
        protocol.receive_eof()  # idempotent: the state is CLOSED from here on
        self._server.wires.discard(self)
        for timer in (self._timer, self._keepalive):
            if timer is not None:
                timer.cancel()
        self._timer = self._keepalive = None
        if self._told:
            self._told = False
            self._admission.untell(self.ip)
        if self._counted:
            self._counted = False
            self._admission.release(self.ip, upgrading=self.upgrading)
        for future in (self._waiter, self._drained, self._closed):
            if future is not None and not future.done():
                future.set_result(None)
        self._waiter = self._drained = None
        # Nothing more arrives. Without the chat's method, websockets' parser and its error,
        # nothing holds this wire or its protocol in a cycle for the garbage collector.
        self.on_message = None
        protocol.parser.close()
        if protocol.parser_exc is not None:
            protocol.parser_exc.__traceback__ = None
        self._peer_left()

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # --- the HTTP upgrade -----------------------------------------------------------

    def _request(self, request: Request) -> None:
        try:
            answer = self._server.process_request(request)
        except Exception:
            log.exception("answering an HTTP request failed")
            answer = self.protocol.reject(500, "Internal error.\n")
        if isinstance(answer, Awaitable):
            asyncio.get_running_loop().create_task(self._respond_later(request, answer))
        else:
            self._respond(request, answer)

    async def _respond_later(self, request: Request, answer: Awaitable[Response | None]) -> None:
        try:
            response = await answer
        except Exception:
            log.exception("answering an HTTP request failed")
            response = self.protocol.reject(500, "Internal error.\n")
        if self.protocol.state is State.CONNECTING:
            self._respond(request, response)

    def _respond(self, request: Request, response: Response | None) -> None:
        upgrading = response is None
        if response is None:
            response = self.protocol.accept(request)
        if upgrading and response.status_code == 101 and not self._server.serving:
            response = self.protocol.reject(503, "Server is shutting down.\n")
        response.headers["Server"] = SERVER
        self.protocol.send_response(response)
        self._flush()
        # websockets' parser keeps the request while the connection lives: its headers
        # (about 2 KiB) are not needed again.
        request.headers.clear()
        if self.protocol.state is not State.OPEN:
            return  # a plain answer, or a refused upgrade: websockets closes after it
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._refusal is not None:
            asyncio.get_running_loop().create_task(self.close(CloseCode.TRY_AGAIN_LATER, self._refusal))
            return
        if self._counted:
            self.upgrading = False
            self._admission.upgraded(self.ip)
        interval = self._server.config.ping_interval
        if interval:
            self._keepalive = asyncio.get_running_loop().call_later(interval, self._keepalive_due)
        self._server.upgraded(self)

    def _upgrade_timed_out(self) -> None:
        self._timer = None
        if self.protocol.state is State.CONNECTING and self.transport is not None:
            self.transport.abort()

    # --- frames ---------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode in _DATA or opcode is Opcode.CONT:
            if self._fragments is None:
                self._text = opcode is Opcode.TEXT
                if frame.fin:
                    self._message(_whole(bytes(frame.data), self._text))
                    return
                self._fragments = []
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), None
                self._message(_whole(data, self._text))
        elif opcode is Opcode.PING:
            if not self._ping_allowed():
                log.info("too many pings: closing peer=%s", self.ip)
                self.protocol.fail(CloseCode.POLICY_VIOLATION, "too many pings")
                self._flush()
        elif opcode is Opcode.PONG:
            self._pong(bytes(frame.data))
        elif opcode is Opcode.CLOSE:
            # The peer is leaving: its session ends now (logout, or lingering to resume),
            # not once the TCP connection is gone, so that a client that closed and
            # reconnects at once finds its name free, as with websockets' own server.
            self._peer_left()

    def _peer_left(self) -> None:
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def _message(self, data: Message) -> None:
        if self.on_message is not None and not self._inbox:
            self.on_message(data)
            return
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(data)
        if len(self._inbox) >= MAX_QUEUED:
            self.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def deliver_waiting(self) -> None:
        """Hand the messages that arrived before :attr:`on_message` was set to it."""
        inbox, self._inbox = self._inbox, None
        if inbox and self.on_message is not None:
            for data in inbox:
                if self.on_message is None:
                    break
                self.on_message(data)
        self.resume_reading()

    async def recv(self) -> Message:
        """The next message (during the handshake; afterwards they are pushed)."""
        while not self._inbox:
            if self.protocol.state is State.CLOSED or self.transport is None:
                raise self.protocol.close_exc
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        data = self._inbox.popleft()
        if len(self._inbox) < MAX_QUEUED:
            self.resume_reading()
        return data

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    # --- writing and closing --------------------------------------------------------

    @property
    def open(self) -> bool:
        transport = self.transport
        return self.protocol.state is State.OPEN and transport is not None and not transport.is_closing()

    @property
    def closed(self) -> bool:
        return self.protocol.state is State.CLOSED

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    def write(self, data: bytes) -> None:
        """Frames made by the chat code (frames.py), written as they are."""
        if self.open:
            assert self.transport is not None
            self.transport.write(data)

    async def send(self, message: bytes) -> None:
        """One binary message; waits while the peer is slow to read."""
        if self.protocol.state is not State.OPEN:
            raise self.protocol.close_exc if self.closed else ConnectionClosedError(None, None)
        self.protocol.send_binary(message)
        self._flush()
        while self._drained is not None and not self.closed:
            await self._drained
        if self.closed:
            raise self.protocol.close_exc

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """The closing handshake: a close frame, then the peer's, within the close timeout;
        the TCP connection is closed either way."""
        if self.transport is None:
            return
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        elif self.protocol.state is State.CONNECTING:
            self.transport.abort()
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        closed = self._closed
        if not self.closed:
            try:
                async with asyncio.timeout(self._server.config.close_timeout):
                    await closed
            except TimeoutError:
                self.transport.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        """Write what websockets' protocol has to send; an empty chunk asks to end TCP."""
        transport = self.transport
        if transport is None:
            return
        for data in self.protocol.data_to_send():
            if data:
                if not transport.is_closing():
                    transport.write(data)
            elif transport.can_write_eof():
                with contextlib.suppress(Exception):  # uvloop may raise RuntimeError
                    transport.write_eof()
            else:
                transport.close()
        if self.protocol.close_expected() and self._timer is None and not transport.is_closing():
            # The peer has close_timeout to finish the closing handshake.
            timeout = self._server.config.close_timeout
            self._timer = asyncio.get_running_loop().call_later(timeout, transport.abort)

def _whole(data: bytes, text: bool) -> Message:
    """A text message is passed on as ``str`` (websockets checked its UTF-8): the
    protocol is binary only, and the session refuses it."""
    return data.decode("utf-8", "replace") if text else data


__all__ = ["MAX_QUEUED", "ConnectionClosed", "Message", "Wire"]
