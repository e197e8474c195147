"""A minimal asyncio WebSocket client for load generation.

The load generators must cost much less per message than the server they measure, so
they do not use the ``websockets`` client (whose per-message overhead is about the
server's own). This client does the HTTP upgrade, sends masked binary frames, parses the
server's unmasked frames in one tight loop, answers pings and hands each message's
payload to a callback. It speaks just enough RFC 6455 for the chat server and the
baseline relays: no extensions, no fragmentation on send.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - pure-Python fallback
    from websockets.utils import apply_mask

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")

MessageHandler = Callable[[bytes], None]


class WSClosed(ConnectionError):
    """The connection ended (close frame, EOF or error)."""


def frame(opcode: int, payload: bytes) -> list[bytes]:
    """One masked, final client frame, as (header, masked payload) to write together."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + _U16.pack(n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + _U64.pack(n)
    mask = os.urandom(4)
    return [head + mask, apply_mask(payload, mask)]


class RawWebSocket(asyncio.Protocol):
    """Client connection. Messages go to ``on_message`` (default: an internal queue
    read with :meth:`recv`); replace it with a fast callback once set up."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.on_message: MessageHandler = self._queue.put_nowait
        self.on_close: Callable[[], None] | None = None
        self.closed = False
        self._fragments: list[bytes] = []
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.frames_in = 0
        #: Count binary frames without copying them or handing them on (a receiver that
        #: only has to prove the server delivered; cheaper than any server's delivery).
        self.counting = False

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            del buf[: end + 4]
            if b" 101 " not in status + b" ":
                self._fail(WSClosed(f"upgrade refused: {status.decode(errors='replace')}"))
                return
            self._upgraded = True
            self._opened.set_result(None)
        self._parse()

    def _parse(self) -> None:
        buf = self._buffer
        pos = 0
        size = len(buf)
        messages: list[bytes] = []
        counted = 0
        with memoryview(buf) as view:  # slicing a view copies once (a bytearray slice: twice)
            while size - pos >= 2:
                b0 = buf[pos]
                n = buf[pos + 1] & 0x7F
                start = pos + 2
                if n == 126:
                    if size - pos < 4:
                        break
                    n = _U16.unpack_from(buf, pos + 2)[0]
                    start = pos + 4
                elif n == 127:
                    if size - pos < 10:
                        break
                    n = _U64.unpack_from(buf, pos + 2)[0]
                    start = pos + 10
                end = start + n
                if end > size:
                    break
                opcode = b0 & 0x0F
                if self.counting and opcode == OP_BINARY:
                    pos = end
                    counted += 1
                    continue
                payload = bytes(view[start:end])
                pos = end
                if opcode in (OP_BINARY, OP_TEXT, OP_CONT):
                    if not b0 & 0x80:
                        self._fragments.append(payload)
                        continue
                    if self._fragments:
                        self._fragments.append(payload)
                        payload = b"".join(self._fragments)
                        self._fragments.clear()
                    messages.append(payload)
                elif opcode == OP_PING:
                    self._write(frame(OP_PONG, payload))
                elif opcode == OP_CLOSE:
                    self._write(frame(OP_CLOSE, payload[:2]))
                    if self.transport is not None:
                        self.transport.close()
                    break
        if pos:
            del buf[:pos]
        self.frames_in += len(messages) + counted
        for payload in messages:
            self.on_message(payload)  # looked up each time: a callback may swap it

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(WSClosed(str(exc) if exc else "connection closed"))

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # --- API --------------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        if self.closed:
            return
        self.closed = True
        self._can_write.set()
        if not self._opened.done():
            self._opened.set_exception(exc)
        self._queue.put_nowait(None)
        if self.on_close is not None:
            self.on_close()
        if self.transport is not None:
            self.transport.close()

    def _write(self, data: list[bytes]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(data)  # uvloop writes the pieces without joining them

    def send(self, payload: bytes) -> None:
        """Queue one binary message (never blocks; see :meth:`drain`)."""
        if self.closed:
            raise WSClosed("connection closed")
        self._write(frame(OP_BINARY, payload))

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self._can_write.wait()
        if self.closed:
            raise WSClosed("connection closed")

    async def recv(self) -> bytes:
        """Next message from the internal queue (only while ``on_message`` is the default)."""
        message = await self._queue.get()
        if message is None:
            self._queue.put_nowait(None)
            raise WSClosed("connection closed")
        return message

    def take_queued(self) -> list[bytes]:
        """Remove and return the messages waiting in the internal queue."""
        taken = []
        while not self._queue.empty():
            message = self._queue.get_nowait()
            if message is None:
                self._queue.put_nowait(None)
                break
            taken.append(message)
        return taken

    def close(self) -> None:
        """Send a close frame and close the transport."""
        if not self.closed:
            self._write(frame(OP_CLOSE, _U16.pack(1000)))
            self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


async def connect(host: str, port: int, path: str = "/", timeout: float = 30.0) -> RawWebSocket:
    """Open a TCP connection and complete the WebSocket upgrade."""
    loop = asyncio.get_running_loop()
    _, ws = await asyncio.wait_for(loop.create_connection(RawWebSocket, host, port), timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert ws.transport is not None
    ws.transport.write(request.encode())
    try:
        await asyncio.wait_for(asyncio.shield(ws._opened), timeout)
    except BaseException:
        ws.abort()
        raise
    return ws
