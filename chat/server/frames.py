"""The write path's building blocks: server frames built by hand (the hot path of every
delivery) and the batch that sends each connection's frames of one event-loop iteration
in one system call."""

from __future__ import annotations

import asyncio
import struct
from typing import Protocol

#: Bytes of frames gathered for the end of an event-loop iteration before they are sent
#: at once anyway.
MAX_BATCH_BYTES = 1024 * 1024


class Flushable(Protocol):
    def flush_frames(self) -> None:
        """Send the frames gathered for this connection, if any."""


_SHORT_FRAME_HEADERS = [bytes((0x82, n)) for n in range(126)]
_MEDIUM_FRAME_HEADER = struct.Struct("!BBH")
_LONG_FRAME_HEADER = struct.Struct("!BBQ")


def binary_frame(payload: bytes) -> bytes:
    """A final, unmasked binary WebSocket frame (RFC 6455 section 5.2): what a server
    sends, so no mask and no extensions (compression is off)."""
    size = len(payload)
    if size < 126:
        return _SHORT_FRAME_HEADERS[size] + payload
    if size < 1 << 16:
        return _MEDIUM_FRAME_HEADER.pack(0x82, 126, size) + payload
    return _LONG_FRAME_HEADER.pack(0x82, 127, size) + payload


class WriteBatch:
    """The connections with frames waiting to be sent at the end of this event-loop
    iteration. Several broadcasts handled in one iteration (one read can carry many) then
    cost each recipient one ``send()`` system call, not one per broadcast. The wait is one
    iteration of the loop: microseconds when it is idle."""

    def __init__(self) -> None:
        self._waiting: list[Flushable] = []
        self._bytes = 0

    def add(self, connection: Flushable) -> None:
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self.flush)
        self._waiting.append(connection)

    def count(self, size: int) -> None:
        """Bound what waits: one iteration announcing a batch of logins to 10,000 users
        would otherwise hold every copy at once."""
        self._bytes += size
        if self._bytes > MAX_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        self._bytes = 0
        for connection in waiting:
            connection.flush_frames()
