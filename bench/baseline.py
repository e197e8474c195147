"""Plaintext baseline relay on plain ``websockets`` (no encryption, no envelopes).

Every binary or text message received is relayed to every other connected client with
``websockets.asyncio.server.broadcast()``. With two clients this forwards a file stream;
with idle clients it is a bare ``websockets`` server holding connections. Run as
``python -m bench.serve baseline --port 0``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve

from chat.protocol.limits import MAX_FRAME_BYTES

CLIENTS: set[ServerConnection] = set()


async def relay(websocket: ServerConnection) -> None:
    """Relay each message from this client to all the others."""
    CLIENTS.add(websocket)
    try:
        async for message in websocket:
            broadcast([c for c in CLIENTS if c is not websocket], message)
    finally:
        CLIENTS.discard(websocket)


async def run(host: str, port: int, ping_interval: float) -> None:
    async with serve(
        relay, host, port, max_size=MAX_FRAME_BYTES, compression=None,
        ping_interval=ping_interval, ping_timeout=ping_interval,
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"Baseline relay listening on ws://{host}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    args = parser.parse_args(argv)
    asyncio.run(run(args.host, args.port, args.ping_interval))
    return 0
