"""End to end: the server survives clients that send garbage.

A raw WebSocket client (``websockets`` plus the sans-I/O handshake of chat.protocol)
misbehaves at every stage: a text frame or random bytes instead of a ClientHello, random
bytes instead of a record after a real handshake, a well-sealed record holding no valid
envelope, a text frame after login, plain TCP garbage. The server must drop only the
offender (announcing a logged-in one as exited) and keep serving everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import sys
from pathlib import Path

from e2e_harness import HOST
from local_chat import LocalChat as Chat
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chat.keys import load_public_key
from chat.protocol.envelope import Envelope, decode_event, encode_request
from chat.protocol.handshake import ClientHandshake
from chat.protocol.limits import MAX_FRAME_BYTES
from chat.protocol.records import SecureChannel

TIMEOUT = 5.0


class RawClient:
    """A hand-driven connection: handshake and records by hand, so it can break the rules."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.channel: SecureChannel | None = None

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        ws = await connect(f"ws://{HOST}:{port}/", max_size=MAX_FRAME_BYTES, open_timeout=TIMEOUT)
        return cls(ws)

    async def handshake(self, public_pem: Path) -> None:
        machine = ClientHandshake(load_public_key(public_pem))
        await self.ws.send(machine.client_hello())
        server_hello = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        assert isinstance(server_hello, bytes)
        await self.ws.send(machine.receive_server_hello(server_hello))
        assert machine.keys is not None
        self.channel = SecureChannel(machine.keys)

    async def send_plaintext(self, plaintext: bytes) -> None:
        assert self.channel is not None
        await self.ws.send(self.channel.seal(plaintext))

    async def recv(self) -> Envelope:
        assert self.channel is not None
        record = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        assert isinstance(record, bytes)
        return decode_event(self.channel.open(record))

    async def assert_closed_by_server(self) -> None:
        """The server ends the connection within TIMEOUT (whatever it says first)."""

        async def drain() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.ws.recv()

        await asyncio.wait_for(drain(), TIMEOUT)

    async def close(self) -> None:
        await self.ws.close()


async def _tcp_garbage(port: int) -> None:
    """Plain TCP, no WebSocket upgrade: random bytes, then hang up."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(os.urandom(4096) + b"\r\n\r\n")
    await writer.drain()
    with contextlib.suppress(ConnectionError, TimeoutError):
        await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_server_survives_garbage_and_others_keep_chatting(chat: Chat) -> None:
    port = chat.server.port
    public_pem = chat.public_pem
    (watcher,) = await chat.login("watcher")

    # A text frame instead of a ClientHello.
    raw = await RawClient.connect(port)
    await raw.ws.send("hello, is this the chat?")
    await raw.assert_closed_by_server()

    # Random bytes instead of a ClientHello.
    raw = await RawClient.connect(port)
    await raw.ws.send(os.urandom(300))
    await raw.assert_closed_by_server()

    # A ClientHello, then hanging up mid-handshake.
    raw = await RawClient.connect(port)
    await raw.ws.send(ClientHandshake(load_public_key(public_pem)).client_hello())
    await raw.close()

    # Plain TCP garbage (no WebSocket upgrade at all).
    await _tcp_garbage(port)

    # A real handshake, then random bytes instead of a record: the session ends.
    raw = await RawClient.connect(port)
    await raw.handshake(public_pem)
    await raw.ws.send(os.urandom(200))
    await raw.assert_closed_by_server()

    # A well-sealed record that holds no valid envelope: a bad_request error and the
    # session continues (PROTOCOL.md 6.3); then a login works on the same session.
    raw = await RawClient.connect(port)
    await raw.handshake(public_pem)
    await raw.send_plaintext(os.urandom(64))
    event = await raw.recv()
    assert (event.type, event.get("code")) == ("error", "bad_request"), event
    await raw.send_plaintext(b"\x00\x00\x00\x02{}")
    event = await raw.recv()
    assert (event.type, event.get("code")) == ("error", "bad_request"), event
    await raw.send_plaintext(encode_request("login", name="mallory", rid=7))
    event = await raw.recv()
    assert (event.type, event.get("name"), event.get("re")) == ("welcome", "mallory", 7), event
    await watcher.expect("[mallory joined]")

    # Logged in, then a text frame: the session ends and mallory is announced as exited.
    await raw.ws.send("\x00garbage")
    await raw.assert_closed_by_server()
    await watcher.expect("[mallory exited]")

    # A logged-in raw client that just vanishes (TCP reset) is announced too.
    raw = await RawClient.connect(port)
    await raw.handshake(public_pem)
    await raw.send_plaintext(encode_request("login", name="trudy", rid=1))
    event = await raw.recv()
    assert event.type == "welcome", event
    await watcher.expect("[trudy joined]")
    sock = raw.ws.transport.get_extra_info("socket")
    assert sock is not None
    linger = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)  # on, 0 s: reset
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    raw.ws.transport.abort()
    await watcher.expect("[trudy exited]")

    # The server is still alive and a fresh pair chats.
    assert chat.server.returncode is None, chat.server.report()
    sophia, jojo = await chat.login("sophia", "jojo")
    sophia.send("Hello everyone!")
    await jojo.expect("[Broadcast from sophia]: Hello everyone!")
    await watcher.expect("[Broadcast from sophia]: Hello everyone!")
    sophia.send("/msg jojo How are you?")
    await jojo.expect("Private message from sophia: How are you?")
    await sophia.expect("Private message to jojo: How are you?")
    jojo.send("/list")
    await jojo.expect("watcher, sophia, jojo")
    assert chat.server.problems() == [], chat.server.report()
