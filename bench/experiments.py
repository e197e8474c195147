"""Experimental server changes, applied by monkeypatching at start-up (``bench.serve
--patch NAME``) so their gain can be measured before anyone edits ``chat/``.

These are measurement aids, not production code: each mirrors one suggestion in
BENCHMARKS.md as closely as a patch from outside allows. They were measured against the
server before commit 7c3c172, which adopted both; on a server that has them they change
nothing that matters (``--experiments`` then mostly measures ``MALLOC_TOP_PAD_``).

- ``direct-write``: ``ClientConnection.deliver`` writes a sealed record straight to the
  WebSocket (the primitives ``websockets.broadcast()`` uses: no ``await ws.send``, no
  queue, no writer-task wake-up) whenever nothing is queued before it and the transport's
  buffer is below the high-water mark; otherwise it queues as before, so the writer
  task and its flow control still handle slow readers.
- ``rsa-thread``: the handshake's RSA-OAEP unwrap (``receive_client_hello``) runs in the
  default thread pool; ``cryptography`` releases the GIL there, so several cores decrypt
  at once and the event loop is not blocked for ~0.65 ms per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Transport buffer size (bytes) below which a record is written directly.
DIRECT_WRITE_LIMIT = 64 * 1024


def direct_write() -> None:
    from websockets.asyncio.server import broadcast

    from chat.server import connection as module

    cls = module.ClientConnection
    queued_deliver = cls.deliver

    def deliver(self: module.ClientConnection, payload: bytes, *, bulk: bool = False) -> None:
        if self._closing or self._channel is None:
            return
        ws = self._ws
        if self._queue.empty() and ws.transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT:
            broadcast((ws,), self._channel.seal(payload))
            return
        queued_deliver(self, payload, bulk=bulk)

    cls.deliver = deliver  # type: ignore[method-assign]


def rsa_thread() -> None:
    from chat.server import connection as module

    cls = module.ClientConnection
    real = module.ServerHandshake

    class ThreadedHandshake(real):  # type: ignore[misc, valid-type]
        """Unwraps in a worker thread; ``receive_client_hello`` returns an awaitable."""

        def receive_client_hello(self, message: bytes) -> bytes:  # type: ignore[override]
            return _Deferred(lambda: real.receive_client_hello(self, message))  # type: ignore[return-value]

    async def handshake(self: module.ClientConnection) -> object:
        ws = self._ws
        send = ws.send

        async def send_resolving(message: object, *args: object, **kw: object) -> None:
            if isinstance(message, _Deferred):
                message = await asyncio.to_thread(message.compute)
            await send(message, *args, **kw)

        ws.send = send_resolving  # type: ignore[method-assign]
        try:
            return await unpatched(self)
        finally:
            del ws.send  # back to the class attribute

    unpatched = cls._handshake
    module.ServerHandshake = ThreadedHandshake  # type: ignore[misc]
    cls._handshake = handshake  # type: ignore[method-assign, assignment]


class _Deferred:
    """A computation handed from the handshake code to the patched ``send``."""

    def __init__(self, compute: Callable[[], bytes]) -> None:
        self.compute = compute


PATCHES: dict[str, Callable[[], None]] = {"direct-write": direct_write, "rsa-thread": rsa_thread}


def apply(names: list[str]) -> None:
    for name in names:
        PATCHES[name]()
