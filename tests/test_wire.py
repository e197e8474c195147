"""The server's connection shell (chat/server/wire.py, inbound.py, keepalive.py): an
asyncio protocol of its own around websockets' sans-I/O ``ServerProtocol``. What it does by
itself, beyond what every other test uses it for: fragmented messages are put back
together, a fragmented text message is refused as a text frame is, messages sent before
the server answered are kept in order, an idle connection holds no task, and a closed
one (closed properly or dropped) is freed without waiting for a garbage collection."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from local_chat import LocalServer
from robust_helpers import RawSession

from chat.keys import load_public_key
from chat.protocol.envelope import decode_event, encode_request
from chat.protocol.handshake import ClientHandshake
from chat.protocol.records import SecureChannel

#: The server's per-connection code (not its services, nor the test's clients).
PER_CONNECTION = tuple(f"/chat/server/{name}.py" for name in ("connection", "inbound", "wire", "handshaking"))


@pytest.fixture
def public_key(key_pair: tuple[Path, Path]) -> rsa.RSAPublicKey:
    return load_public_key(key_pair[1])


def _server_tasks() -> list[str]:
    """Tasks that are running, or waiting in, the server's per-connection code (whatever
    library coroutine they started from)."""
    found = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        while coro is not None and hasattr(coro, "cr_code"):
            if coro.cr_code.co_filename.endswith(PER_CONNECTION):
                found.append(coro.cr_code.co_qualname)
                break
            coro = coro.cr_await
    return found


async def test_fragmented_messages_are_put_back_together(
    server: LocalServer, public_key: rsa.RSAPublicKey
) -> None:
    """A ClientHello, a ClientFinished and a login record, each sent as several WebSocket
    frames (continuation frames), make the same session as whole messages do."""
    session = await RawSession.open(server.port)
    machine = ClientHandshake(public_key)
    hello = machine.client_hello()
    await session.ws.send([hello[:10], hello[10:100], hello[100:]])
    server_hello = await session.recv_frame()
    assert isinstance(server_hello, bytes)
    finished = machine.receive_server_hello(server_hello)
    await session.ws.send([finished[:1], finished[1:]])
    assert machine.keys is not None
    session.channel = SecureChannel(machine.keys)
    record = session.seal(encode_request("login", rid=1, name="frag"))
    await session.ws.send([record[:5], record[5:20], record[20:]])
    welcome = await session.recv()
    assert (welcome.type, welcome.get("name"), welcome.get("re")) == ("welcome", "frag", 1)
    await session.close()


async def test_a_fragmented_text_message_is_refused_like_a_text_frame(
    server: LocalServer, public_key: rsa.RSAPublicKey
) -> None:
    session = await RawSession.established(server.port, public_key)
    await session.ws.send(["{\"type\": ", "\"login\"}"])
    code, reason = await session.closed_by_server()
    assert (code, reason) == (1003, "text frames are not allowed")


async def test_requests_sent_at_once_are_answered_in_order(
    server: LocalServer, public_key: rsa.RSAPublicKey
) -> None:
    """Twenty requests written in one go (more than the server reads ahead before it
    stops reading the socket) are all answered, in the order they were sent."""
    session = await RawSession.established(server.port, public_key)
    await session.login("burst")
    records = [session.seal(encode_request("list", rid=rid)) for rid in range(100, 120)]
    for record in records:
        await session.ws.send(record)
    answered = []
    while len(answered) < len(records):
        record = await session.recv_frame()
        assert isinstance(record, bytes)
        assert session.channel is not None
        event = decode_event(session.channel.open(record))
        if event.get("re") is not None:
            answered.append(event.get("re"))
    assert answered == list(range(100, 120))
    await session.close()


async def test_idle_connections_hold_no_task(
    server: LocalServer, public_key: rsa.RSAPublicKey
) -> None:
    """Once logged in and idle, a connection is a protocol object and timers: no task
    waits for its next message (10,000 idle users would otherwise hold 10,000 tasks)."""
    sessions = [await RawSession.established(server.port, public_key) for _ in range(5)]
    for number, session in enumerate(sessions):
        await session.login(f"idle{number}")
    assert (await sessions[0].request("list")).get("users") is not None
    await asyncio.sleep(0.2)  # the last reply's task ends
    assert len(server.chat_server.connections) == 5
    assert _server_tasks() == []
    for session in sessions:
        await session.close()


@pytest.mark.parametrize("leaving", ["close frame", "connection dropped"])
async def test_a_closed_connection_is_freed_without_a_garbage_collection(
    server: LocalServer, public_key: rsa.RSAPublicKey, leaving: str
) -> None:
    """The wire, the chat connection and websockets' protocol do not keep each other
    alive once the socket is closed, whether the client said goodbye or just went away:
    reference counting frees them, so closed connections do not wait for a full
    collection (which, with thousands online, scans every connection; 10,000 clients
    going away at once left 180,000 objects for it)."""
    wanted = {"chat.server.connection.ClientConnection", "chat.server.wire.Wire",
              "websockets.server.ServerProtocol"}  # fmt: skip

    def alive() -> list[str]:
        names = (f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
        return [name for name in names if name in wanted]

    gc.collect()
    gc.disable()
    try:
        for number in range(3):
            session = await RawSession.established(server.port, public_key)
            await session.login(f"gone{number}")
            if leaving == "close frame":
                await session.close()
            else:
                session.ws.transport.abort()
        for _ in range(50):
            if not server.chat_server.connections and not server.chat_server.wires:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert alive() == []
    finally:
        gc.enable()
