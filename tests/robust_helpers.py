"""Helpers for the robustness tests: a server with chosen options, hand-driven connections
that can break every rule, an event-collecting peer, and the closing check every test ends
with (the server is alive and a fresh pair of clients still chats).

Everything runs against the real server process on 127.0.0.1 over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_harness import HOST, ServerProcess
from local_chat import LocalServer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chat.client.transport import Disconnected, open_session
from chat.protocol.envelope import Envelope, decode_event, encode_request
from chat.protocol.handshake import ClientHandshake
from chat.protocol.limits import MAX_FRAME_BYTES
from chat.protocol.records import SecureChannel

#: Server options that lift the per-address limits on opening connections and handshakes,
#: for tests whose many clients all come from 127.0.0.1 (with ``--max-per-ip 0``).
NO_ADDRESS_LIMITS = ("--max-upgrading-per-ip", "0", "--handshakes-per-ip", "0", "--network-rate-limit", "0",
                     "--network-byte-rate", "0", "--network-fanout-rate", "0",
                     "--group-creations-per-hour", "0", "--max-owned-groups", "0")  # fmt: skip

#: Time to wait for something that should happen at once.
TIMEOUT = 5.0
_fresh = itertools.count(1)


@asynccontextmanager
async def running_server(
    private_pem: Path, cwd: Path, *extra: str, process: bool = False
) -> AsyncIterator[Any]:
    """A server started with ``extra`` options, in this event loop (local_chat.py) or,
    with ``process``, as a process (to measure it, or to flood it from another process);
    fails the test if it died or printed a traceback, like the ``server`` fixture."""
    running: LocalServer | ServerProcess
    if process:
        running = await ServerProcess.start(private_pem, cwd, *extra)
    else:
        running = await LocalServer.start(private_pem, cwd, *extra)
    try:
        yield running
    finally:
        problems = await running.stop()
    if problems:
        pytest.fail("; ".join(problems) + "\n" + running.report())


async def opened_from(port: int, source: str) -> RawSession:
    """An upgraded WebSocket (no chat handshake yet) whose source address is ``source``
    (any 127.x works on loopback), so one test can play several client addresses."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    return await RawSession.open(port, sock=sock)


def server_ps(server: ServerProcess) -> psutil.Process:
    return psutil.Process(server.proc.pid)


class RawSession:
    """A WebSocket connection driven by hand: handshake, records and frames one by one,
    so a test can send anything at any stage."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.channel: SecureChannel | None = None
        self._rid = itertools.count(1)

    @classmethod
    async def open(cls, port: int, **options: Any) -> RawSession:
        options.setdefault("max_size", MAX_FRAME_BYTES)
        options.setdefault("open_timeout", TIMEOUT)
        options.setdefault("compression", None)
        ws = await connect(f"ws://{HOST}:{port}/", proxy=None, **options)
        return cls(ws)

    @classmethod
    async def established(cls, port: int, public_key: rsa.RSAPublicKey, **options: Any) -> RawSession:
        """A connection that completed the handshake."""
        session = await cls.open(port, **options)
        await session.handshake(public_key)
        return session

    async def handshake(self, public_key: rsa.RSAPublicKey) -> None:
        machine = ClientHandshake(public_key)
        await self.ws.send(machine.client_hello())
        server_hello = await self.recv_frame()
        assert isinstance(server_hello, bytes), server_hello
        await self.ws.send(machine.receive_server_hello(server_hello))
        assert machine.keys is not None
        self.channel = SecureChannel(machine.keys)

    async def recv_frame(self, timeout: float = TIMEOUT) -> bytes | str:
        return await asyncio.wait_for(self.ws.recv(), timeout)

    def seal(self, plaintext: bytes) -> bytes:
        assert self.channel is not None
        return self.channel.seal(plaintext)

    async def send_plaintext(self, plaintext: bytes) -> None:
        await self.ws.send(self.seal(plaintext))

    async def send(self, kind: str, **fields: Any) -> int:
        """Seal and send one request numbered with a fresh rid; returns the rid."""
        rid = next(self._rid)
        await self.send_plaintext(encode_request(kind, rid=rid, **fields))
        return rid

    async def recv(self, timeout: float = TIMEOUT) -> Envelope:
        assert self.channel is not None
        record = await self.recv_frame(timeout)
        assert isinstance(record, bytes), record
        return decode_event(self.channel.open(record))

    async def reply(self, rid: int, timeout: float = TIMEOUT) -> Envelope:
        """Receive events until the reply to ``rid``; notifications before it are skipped."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.recv()
                if event.get("re") == rid:
                    return event

    async def request(self, kind: str, **fields: Any) -> Envelope:
        return await self.reply(await self.send(kind, **fields))

    async def login(self, name: str, features: list[str] | None = None) -> None:
        """Log in; ``features`` are the extensions asked for (PROTOCOL.md 6.6)."""
        welcome = await self.request("login", name=name, **({"features": features} if features else {}))
        assert (welcome.type, welcome.get("name")) == ("welcome", name), welcome

    async def closed_by_server(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """Read (and ignore) everything until the server closes; returns the close code
        and reason the server sent (code None: no close frame)."""

        async def drain() -> tuple[int | None, str]:
            try:
                while True:
                    await self.ws.recv()
            except ConnectionClosed as exc:
                return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")

        return await asyncio.wait_for(drain(), timeout)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        self.ws.transport.abort()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), TIMEOUT)


class Peer:
    """A logged-in connection whose events are collected by a background reader."""

    def __init__(self, session: RawSession, name: str) -> None:
        self.session = session
        self.name = name
        self.events: list[Envelope] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._consumed: set[int] = set()
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def join(
        cls, port: int, public_key: rsa.RSAPublicKey, name: str,
        features: list[str] | None = None, **options: Any,
    ) -> Peer:  # fmt: skip
        session = await RawSession.established(port, public_key, **options)
        await session.login(name, features)
        return cls(session, name)

    async def _read(self) -> None:
        try:
            while True:
                self.events.append(await self.session.recv(timeout=3600))
                self._changed.set()
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                self.close_code, self.close_reason = exc.rcvd.code, exc.rcvd.reason
        finally:
            self._changed.set()

    @property
    def ended(self) -> bool:
        return self._reader.done()

    async def send(self, kind: str, **fields: Any) -> int:
        return await self.session.send(kind, **fields)

    async def wait_for(
        self, predicate: Callable[[Envelope], bool], what: str, timeout: float = TIMEOUT
    ) -> Envelope:
        """The first event not yet consumed that matches; it is consumed."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for index, event in enumerate(self.events):
                        if index not in self._consumed and predicate(event):
                            self._consumed.add(index)
                            return event
                    if self.ended:
                        break
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        recent = [(e.type, e.fields) for e in self.events[-8:]]
        raise AssertionError(f"{self.name}: no {what} within {timeout}s (ended={self.ended}); last: {recent}")

    async def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        """Wait until ``condition()`` holds (checked whenever an event arrives)."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    if self.ended:
                        break
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        if not condition():
            raise AssertionError(f"{self.name}: no {what} in {timeout}s (ended={self.ended}); {self.tally()}")

    async def wait_type(self, kind: str, timeout: float = TIMEOUT, **fields: Any) -> Envelope:
        def match(event: Envelope) -> bool:
            return event.type == kind and all(event.get(k) == v for k, v in fields.items())

        return await self.wait_for(match, f"{kind} {fields}", timeout)

    async def wait_presence(self, kind: str, name: str, timeout: float = TIMEOUT) -> Envelope:
        """The first unconsumed ``user_joined`` / ``user_exited`` (``kind``) naming ``name``
        (the server may list several names in one event; the event is consumed)."""
        assert kind in ("user_joined", "user_exited"), kind
        return await self.wait_for(
            lambda e: e.type == kind and name in e.get("names", []), f"{kind} naming {name}", timeout
        )

    async def request(self, kind: str, timeout: float = TIMEOUT, **fields: Any) -> Envelope:
        rid = await self.send(kind, **fields)
        return await self.wait_for(lambda e: e.get("re") == rid, f"the reply to {kind}", timeout)

    async def sync(self, timeout: float = TIMEOUT) -> None:
        """A round trip: everything the server routed here before it has arrived."""
        reply = await self.request("list", timeout)
        assert reply.type == "user_list", reply

    async def wait_ended(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """Wait until the server closes the connection; its close code and reason."""
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name}: open after {timeout}s; got {self.tally()}") from None
        return self.close_code, self.close_reason

    async def wait_close_frame(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """The close code and reason as soon as the server's close frame arrives, without
        waiting for the closing handshake and the TCP connection to end; then the
        connection is dropped, and everything received before the close frame is in
        ``events``."""
        try:
            async with asyncio.timeout(timeout):
                while not self.ended and self.session.ws.protocol.close_rcvd is None:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"{self.name}: not closed after {timeout}s; got {self.tally()}") from None
        self.session.abort()
        await self.wait_ended()
        return self.close_code, self.close_reason

    def tally(self) -> dict[str, int]:
        """How many events of each type (and error/notice code) arrived."""
        counts: dict[str, int] = {}
        for event in self.events:
            label = f"{event.type}:{event.get('code')}" if "code" in event.fields else event.type
            counts[label] = counts.get(label, 0) + 1
        return counts

    def notifications(self, kind: str) -> list[Envelope]:
        return [e for e in self.events if e.type == kind and "re" not in e.fields]

    async def close(self) -> None:
        await self.session.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


async def _recv_until(session: Any, predicate: Callable[[Envelope], bool]) -> list[Envelope]:
    events = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            events.append(await session.recv())
            if predicate(events[-1]):
                return events


async def assert_fresh_pair_chats(server: ServerProcess, public_key: rsa.RSAPublicKey) -> None:
    """The server is alive and two new clients (the real client transport) log in and
    exchange a private message, received exactly once and exactly as sent."""
    assert server.returncode is None, "the server died\n" + server.report()
    n = next(_fresh)
    first, second = f"fresh{n}a", f"fresh{n}b"
    sessions = []
    try:
        for name in (first, second):
            try:
                session = await open_session(HOST, server.port, public_key, connect_timeout=TIMEOUT)
            except Disconnected as exc:
                raise AssertionError(f"a fresh client cannot connect: {exc}\n{server.report()}") from None
            sessions.append(session)
            rid = await session.send("login", name=name)
            events = await _recv_until(session, lambda e, r=rid: e.get("re") == r)
            assert (events[-1].type, events[-1].get("name")) == ("welcome", name), events[-1]
        sender, receiver = sessions
        text = f"are you still there, {second}? ✓ {n}"
        rid = await sender.send("private", to=second, text=text)
        events = await _recv_until(sender, lambda e: e.get("re") == rid)
        sent = events[-1]
        assert (sent.type, sent.get("to"), sent.get("text")) == ("private_sent", second, text), sent
        got = await _recv_until(receiver, lambda e: e.type == "private")
        assert got[-1].fields == {"sender": first, "text": text}, got[-1]
        rid = await receiver.send("list")
        later = await _recv_until(receiver, lambda e: e.get("re") == rid)
        assert [e for e in later if e.type == "private"] == [], "the private message arrived twice"
        assert first in later[-1]["users"] and second in later[-1]["users"], later[-1]
    finally:
        for session in sessions:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.close(), TIMEOUT)
    assert server.returncode is None, "the server died\n" + server.report()
    assert server.problems() == [], server.report()


async def ask(session: RawSession, kind: str, **fields: Any) -> Envelope:
    """The reply to a request; notifications that arrive before it are skipped."""
    rid = await session.send(kind, **fields)
    while True:
        event = await session.recv()
        if event.get("re") == rid:
            return event


def outcome(event: Envelope) -> str:
    """An error's code, or the type of any other reply."""
    return str(event["code"]) if event.type == "error" else event.type
