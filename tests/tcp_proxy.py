"""A TCP proxy on 127.0.0.1 for cutting connections under a test's control: ``cut``
closes every connection through it abruptly (both sides), ``black_hole`` stops
forwarding and then drops only the client's side, so the server still holds a
connection that is dead (as after a network failure it has not noticed yet)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field


@dataclass
class _Pair:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    forwarding: bool = True


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # RST, not FIN: as a failed network
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.pairs: list[_Pair] = []
        #: Black-holed pairs: the server's side is left open until ``close``.
        self._dead: list[_Pair] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = _Pair(writer, upstream_writer)
        self.pairs.append(pair)
        pair.tasks = [
            asyncio.create_task(self._pump(reader, upstream_writer, pair)),
            asyncio.create_task(self._pump(upstream_reader, writer, pair)),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if not pair.forwarding:
                    continue  # black-holed: swallowed
                writer.write(data)
                await writer.drain()
            if pair.forwarding:  # a black-holed pair's other side is left as it is
                writer.close()

    def cut(self) -> None:
        """Every connection through the proxy ends abruptly, on both sides."""
        for pair in self.pairs:
            _abort(pair.client)
            _abort(pair.server)
        self.pairs.clear()

    async def black_hole(self, seconds: float) -> None:
        """Stop forwarding for ``seconds``, then drop the clients' side only."""
        pairs, self.pairs = self.pairs, []
        for pair in pairs:
            pair.forwarding = False
        await asyncio.sleep(seconds)
        for pair in pairs:
            _abort(pair.client)
        self._dead += pairs  # the server's side left open: the server has to find out

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in [*self.pairs, *self._dead]:
            _abort(pair.client)
            _abort(pair.server)
            for task in pair.tasks:
                task.cancel()
