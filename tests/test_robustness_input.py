"""Bad input of every kind against a real server (the "bad input matrix").

Each test feeds one family of bad input over real sockets, checks the server's answer
(an HTTP error, a HandshakeError, an ``error`` event, or a close code from PROTOCOL.md
6.4), checks that only the offender is affected, and ends by showing that the server is
alive and a fresh pair of clients still chats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_harness import HOST, ServerProcess
from robust_helpers import (
    NO_ADDRESS_LIMITS,
    TIMEOUT,
    Peer,
    RawSession,
    assert_fresh_pair_chats,
    running_server,
    server_ps,
)
from websockets.exceptions import ConnectionClosed

from chat.keys import generate_private_key, load_public_key
from chat.protocol.envelope import REQUESTS, decode_event, decode_request, encode_request
from chat.protocol.errors import EnvelopeError, HandshakeErrorCode
from chat.protocol.handshake import ClientHandshake, decode_handshake_error
from chat.protocol.kinds import Int, List, Str
from chat.protocol.limits import MAX_FRAME_BYTES, MAX_HANDSHAKE_BYTES
from chat.protocol.records import MAX_RECORD_LEN

#: --handshake-timeout used where a test waits for it, and the slack allowed on top.
HANDSHAKE_TIMEOUT = 1.0
SLACK = 4.0


@pytest.fixture
def public_key(key_pair: tuple[Path, Path]) -> rsa.RSAPublicKey:
    return load_public_key(key_pair[1])


@pytest.fixture
async def quick_server(key_pair: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A server with a 1 s handshake timeout, no per-address limits and no rate limit."""
    async with running_server(
        key_pair[0], tmp_path / "server",
        "--handshake-timeout", str(HANDSHAKE_TIMEOUT), "--max-per-ip", "0", "--rate-limit", "0",
        *NO_ADDRESS_LIMITS, process=True,
    ) as process:
        yield process


async def _tcp(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port)


async def _read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the TCP connection (fails on timeout)."""
    data = b""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                data += chunk
    return data


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()


async def _handshake_refusal(session: RawSession) -> HandshakeErrorCode:
    """The server answers with a HandshakeError, then closes the connection."""
    frame = await session.recv_frame()
    assert isinstance(frame, bytes) and frame[:1] == b"\x0f", frame[:64]
    code = decode_handshake_error(frame).code
    await session.closed_by_server()
    return code


# --- HTTP level ---------------------------------------------------------------------------


HTTP_REQUESTS = {
    # Not a file of the web client (those are served: test_web_serving.py).
    "plain GET": b"GET /admin HTTP/1.1\r\nHost: chat\r\n\r\n",
    "browser GET": (
        b"GET /index.php HTTP/1.1\r\nHost: chat\r\nAccept: text/html\r\nConnection: keep-alive\r\n\r\n"
    ),
    "upgrade without key": (
        b"GET / HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    ),
    "upgrade, wrong version": (
        b"GET / HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    ),
}


async def test_plain_http_requests_get_an_http_error(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """A browser or curl (no WebSocket upgrade) gets an HTTP 4xx answer and a closed connection."""
    for label, request in HTTP_REQUESTS.items():
        reader, writer = await _tcp(server.port)
        try:
            writer.write(request)
            data = await _read_until_closed(reader, TIMEOUT)
        finally:
            _close(writer)
        status = data.split(b"\r\n", 1)[0]
        assert status.startswith(b"HTTP/1.1 4"), f"{label}: {data[:300]!r}"
    await assert_fresh_pair_chats(server, public_key)


NON_WEBSOCKET_BYTES = {
    "random bytes and a blank line": os.urandom(2048) + b"\r\n\r\n",
    "NUL bytes and a blank line": bytes(512) + b"\r\n\r\n",
    "SSH banner": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "SMTP": b"HELO example.org\r\nMAIL FROM:<a@b>\r\n\r\n",
    "a 100 KiB request line": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
    "ten thousand headers": b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n",
    "a header without a colon": b"GET / HTTP/1.1\r\nHost chat\r\n\r\n",
}


async def test_non_websocket_bytes_are_refused(server: ServerProcess, public_key: rsa.RSAPublicKey) -> None:
    """Bytes that are not a WebSocket opening handshake: the server answers (an HTTP error
    or nothing) and closes the connection promptly, whatever the bytes."""
    watcher = await Peer.join(server.port, public_key, "watcher")

    async def one(label: str, payload: bytes) -> None:
        reader, writer = await _tcp(server.port)
        try:
            with contextlib.suppress(ConnectionError):
                writer.write(payload)
                await writer.drain()
            try:
                data = await _read_until_closed(reader, TIMEOUT)
            except TimeoutError:
                raise AssertionError(f"{label}: the server kept the connection open") from None
        finally:
            _close(writer)
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), f"{label}: {data[:200]!r}"

    await asyncio.gather(*(one(label, payload) for label, payload in NON_WEBSOCKET_BYTES.items()))
    await watcher.sync()
    assert not watcher.ended
    await watcher.close()
    await assert_fresh_pair_chats(server, public_key)


async def test_stalled_opening_handshakes_end_at_the_handshake_timeout(
    quick_server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """Connections that never finish the HTTP upgrade (silent, a TLS ClientHello, a
    partial request line, and a slowloris that trickles its headers one byte at a time)
    are closed within --handshake-timeout (plus slack), while other clients chat unhindered."""
    server = quick_server
    alice = await Peer.join(server.port, public_key, "alice")
    bob = await Peer.join(server.port, public_key, "bob")
    stalled = {
        "silent": b"",
        "TLS ClientHello": bytes.fromhex("160301020001000200fc0303") + os.urandom(64),
        "partial request line": b"GET / HTT",
        "headers without the blank line": b"GET / HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\n",
    }
    slowloris_headers = (
        b"GET / HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + b"X-Padding: slowloris\r\n" * 1000
    )

    async def stall(label: str, payload: bytes) -> float:
        reader, writer = await _tcp(server.port)
        start = time.monotonic()
        try:
            writer.write(payload)
            try:
                await _read_until_closed(reader, HANDSHAKE_TIMEOUT + SLACK)
            except TimeoutError:
                raise AssertionError(
                    f"{label}: still open {HANDSHAKE_TIMEOUT + SLACK:g}s after connecting, with "
                    f"--handshake-timeout {HANDSHAKE_TIMEOUT:g} (the WebSocket opening handshake "
                    "is not bounded by it)"
                ) from None
        finally:
            _close(writer)
        return time.monotonic() - start

    async def slowloris() -> float:
        reader, writer = await _tcp(server.port)
        start = time.monotonic()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in slowloris_headers:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)

        feeder = asyncio.create_task(trickle())
        try:
            await _read_until_closed(reader, HANDSHAKE_TIMEOUT + SLACK)
        except TimeoutError:
            raise AssertionError(
                f"slowloris: still open {HANDSHAKE_TIMEOUT + SLACK:g}s after connecting, with "
                f"--handshake-timeout {HANDSHAKE_TIMEOUT:g}"
            ) from None
        finally:
            feeder.cancel()
            _close(writer)
        return time.monotonic() - start

    async def chat_meanwhile() -> None:
        """Round trips between two logged-in users stay fast while the stalls are open."""
        for k in range(10):
            start = time.monotonic()
            await alice.send("private", to="bob", text=f"still here {k}")
            await bob.wait_type("private", sender="alice", text=f"still here {k}")
            assert time.monotonic() - start < 1.0, "a private message took over a second"
            await asyncio.sleep(0.2)

    tasks = [stall(label, payload) for label, payload in stalled.items()]
    results = await asyncio.gather(slowloris(), chat_meanwhile(), *tasks, return_exceptions=True)
    problems = [r for r in results if isinstance(r, BaseException)]
    assert not problems, "\n".join(map(str, problems))
    await assert_fresh_pair_chats(server, public_key)
    await alice.close()
    await bob.close()


# --- handshake level ----------------------------------------------------------------------


async def test_text_frames_are_refused_at_every_stage(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """A text frame instead of the ClientHello or the ClientFinished fails the handshake
    (HandshakeError MALFORMED, then close 1003); after the handshake it closes the
    connection with 1003;
    after login others see the user exit."""
    watcher = await Peer.join(server.port, public_key, "watcher")

    session = await RawSession.open(server.port)
    await session.ws.send("hello?")
    assert await _handshake_refusal(session) is HandshakeErrorCode.MALFORMED
    assert (await session.closed_by_server())[0] == 1003

    session = await RawSession.open(server.port)
    await session.ws.send(ClientHandshake(public_key).client_hello())
    assert isinstance(await session.recv_frame(), bytes)
    await session.ws.send("finished?")
    assert await _handshake_refusal(session) is HandshakeErrorCode.MALFORMED
    assert (await session.closed_by_server())[0] == 1003

    session = await RawSession.established(server.port, public_key)
    await session.ws.send('{"type": "login", "name": "eve"}')
    code, _ = await session.closed_by_server()
    assert code == 1003, code

    session = await RawSession.established(server.port, public_key)
    await session.login("mallory")
    await watcher.wait_presence("user_joined", "mallory")
    await session.ws.send('{"type": "broadcast", "text": "hi"}')
    code, _ = await session.closed_by_server()
    assert code == 1003, code
    await watcher.wait_presence("user_exited", "mallory")
    assert watcher.notifications("broadcast") == []

    await watcher.close()
    await assert_fresh_pair_chats(server, public_key)


async def test_garbage_bytes_before_during_and_after_the_handshake(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """Binary garbage in place of each handshake message gets the documented
    HandshakeError; after the handshake (and after login) it ends the session with 1008."""
    watcher = await Peer.join(server.port, public_key, "watcher")
    hello = ClientHandshake(public_key).client_hello()
    errors = HandshakeErrorCode
    before = {
        "random": (b"\x42" + os.urandom(300), HandshakeErrorCode.MALFORMED),
        "empty": (b"", HandshakeErrorCode.MALFORMED),
        "too short": (b"\x01\x00", HandshakeErrorCode.MALFORMED),
        "version 2": (b"\x01\x00\x02\x00\x01" + os.urandom(300), HandshakeErrorCode.VERSION_MISMATCH),
        "suite 7": (b"\x01\x00\x01\x00\x07" + os.urandom(300), HandshakeErrorCode.UNSUPPORTED_SUITE),
        "truncated hello": (hello[:100], HandshakeErrorCode.MALFORMED),
        "hello, cut wrapped secret": (hello[:-1], HandshakeErrorCode.MALFORMED),
        "hello, extra byte": (hello + b"\x00", HandshakeErrorCode.MALFORMED),
        "hello, wrong fingerprint": (hello[:69] + os.urandom(32) + hello[101:], errors.UNKNOWN_SERVER_KEY),
        "hello, garbage secret": (hello[:103] + os.urandom(len(hello) - 103), errors.DECRYPT_FAILED),
        "hello, low-order X25519 point": (hello[:37] + bytes(32) + hello[69:], HandshakeErrorCode.MALFORMED),
        "a ClientFinished first": (b"\x03" + os.urandom(32), HandshakeErrorCode.MALFORMED),
    }
    for label, (payload, expected) in before.items():
        session = await RawSession.open(server.port)
        await session.ws.send(payload)
        code = await _handshake_refusal(session)
        assert code is expected, f"{label}: {code!r}, expected {expected!r}"
    # A frame over the pre-handshake limit of MAX_HANDSHAKE_BYTES ends the connection
    # with 1009 before it is read whole (PROTOCOL.md section 5).
    session = await RawSession.open(server.port)
    with contextlib.suppress(ConnectionClosed):
        await session.ws.send(b"\x01\x00\x01\x00\x01" + bytes(MAX_HANDSHAKE_BYTES))
    assert (await session.closed_by_server())[0] == 1009

    during = {
        "random": (b"\x42" + os.urandom(40), HandshakeErrorCode.MALFORMED),
        "wrong confirm": (b"\x03" + os.urandom(32), HandshakeErrorCode.CONFIRMATION_FAILED),
        "short finished": (b"\x03" + os.urandom(31), HandshakeErrorCode.MALFORMED),
        "a second hello": (hello, HandshakeErrorCode.MALFORMED),
    }
    for label, (payload, expected) in during.items():
        session = await RawSession.open(server.port)
        await session.ws.send(ClientHandshake(public_key).client_hello())
        assert isinstance(await session.recv_frame(), bytes)
        await session.ws.send(payload)
        code = await _handshake_refusal(session)
        assert code is expected, f"during, {label}: {code!r}, expected {expected!r}"

    for label, payload in {"random": os.urandom(200), "a record header": b"\x17" + os.urandom(40)}.items():
        session = await RawSession.established(server.port, public_key)
        await session.ws.send(payload)
        code, _ = await session.closed_by_server()
        assert code == 1008, f"after the handshake, {label}: {code}"

        session = await RawSession.established(server.port, public_key)
        await session.login("mallory")
        await watcher.wait_presence("user_joined", "mallory")
        await session.ws.send(payload)
        code, _ = await session.closed_by_server()
        assert code == 1008, f"after login, {label}: {code}"
        await watcher.wait_presence("user_exited", "mallory")

    await watcher.sync()
    await watcher.close()
    await assert_fresh_pair_chats(server, public_key)


class _WrongWrap(ClientHandshake):
    """A ClientHello naming the right fingerprint but wrapping the secret for another key."""

    def __init__(self, server_key: rsa.RSAPublicKey, other_key: rsa.RSAPublicKey) -> None:
        super().__init__(server_key)
        self._other = other_key

    def _wrap(self, secret: bytes) -> bytes:
        from chat.protocol.handshake import OAEP

        return self._other.encrypt(secret, OAEP)


async def test_secret_wrapped_for_another_key_fails_to_decrypt(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """The right fingerprint but a secret wrapped with another RSA key of the same size:
    HandshakeError DECRYPT_FAILED, then the connection is closed."""
    other = generate_private_key(2048).public_key()
    session = await RawSession.open(server.port)
    await session.ws.send(_WrongWrap(public_key, other).client_hello())
    assert await _handshake_refusal(session) is HandshakeErrorCode.DECRYPT_FAILED
    await assert_fresh_pair_chats(server, public_key)


# --- record level -------------------------------------------------------------------------


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


async def test_tampered_records_end_the_session(server: ServerProcess, public_key: rsa.RSAPublicKey) -> None:
    """After login, a truncated, altered, replayed, reordered, dropped, reflected or
    mis-sized record closes the connection with 1008; others see the user exit, and
    nothing from the tampered records is delivered (the good record before them is,
    exactly once)."""
    watcher = await Peer.join(server.port, public_key, "watcher")
    # Each variant gets the sealed records 1, 2 and 3 (broadcasts) and returns what to send
    # after record 1 went out intact.
    variants: dict[str, Any] = {
        "truncated": lambda r2, r3, s: [r2[:-1]],
        "truncated to the header": lambda r2, r3, s: [r2[:1]],
        "empty": lambda r2, r3, s: [b""],
        "altered ciphertext": lambda r2, r3, s: [_flip(r2, 5)],
        "altered tag": lambda r2, r3, s: [_flip(r2, len(r2) - 1)],
        "altered header": lambda r2, r3, s: [b"\x18" + r2[1:]],
        "extended": lambda r2, r3, s: [r2 + b"\x00"],
        "replayed": None,  # record 1 again
        "reordered": lambda r2, r3, s: [r3, r2],
        "dropped": lambda r2, r3, s: [r3],
        "reflected": lambda r2, r3, s: [s],
        "oversize record": lambda r2, r3, s: [b"\x17" + bytes(MAX_RECORD_LEN)],
    }
    for label, make in variants.items():
        name = f"victim{len(watcher.events)}"
        session = await RawSession.established(server.port, public_key)
        await session.login(name)
        await watcher.wait_presence("user_joined", name)
        # A record the server sent, to reflect back to it: the reply to a list request.
        await session.ws.send(session.seal(encode_request("list", rid=50)))
        from_server = await session.recv_frame()
        assert isinstance(from_server, bytes) and session.channel is not None
        assert decode_event(session.channel.open(from_server)).get("re") == 50
        r1 = session.seal(encode_request("broadcast", text=f"{label}: first", rid=51))
        r2 = session.seal(encode_request("broadcast", text=f"{label}: second", rid=52))
        r3 = session.seal(encode_request("broadcast", text=f"{label}: third", rid=53))
        await session.ws.send(r1)
        await watcher.wait_type("broadcast", sender=name, text=f"{label}: first")
        bad = [r1] if make is None else make(r2, r3, from_server)
        with contextlib.suppress(ConnectionClosed):
            for record in bad:
                await session.ws.send(record)
        code, reason = await session.closed_by_server()
        assert code == 1008, f"{label}: close code {code} ({reason!r}), expected 1008"
        await watcher.wait_presence("user_exited", name)
        await watcher.sync()
        texts = [e["text"] for e in watcher.notifications("broadcast") if e["sender"] == name]
        assert texts == [f"{label}: first"], f"{label}: the watcher got {texts}"
    await watcher.close()
    await assert_fresh_pair_chats(server, public_key)


async def test_oversize_frames_are_refused_with_1009(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """A WebSocket message over MAX_FRAME_BYTES (whole or in fragments), before the
    handshake or after login, closes the connection with 1009."""
    watcher = await Peer.join(server.port, public_key, "watcher")
    oversize = os.urandom(MAX_FRAME_BYTES + 1)

    session = await RawSession.open(server.port)
    with contextlib.suppress(ConnectionClosed):
        await session.ws.send(oversize)
    code, _ = await session.closed_by_server()
    assert code == 1009, code

    async def fragments() -> AsyncIterator[bytes]:
        for _ in range(17):
            yield os.urandom(64 * 1024)

    for label in ("whole", "fragmented"):
        session = await RawSession.established(server.port, public_key)
        await session.login("bigmouth")
        await watcher.wait_presence("user_joined", "bigmouth")
        with contextlib.suppress(ConnectionClosed):
            await session.ws.send(oversize if label == "whole" else fragments())
        code, _ = await session.closed_by_server()
        assert code == 1009, f"{label}: {code}"
        await watcher.wait_presence("user_exited", "bigmouth")

    await watcher.close()
    await assert_fresh_pair_chats(server, public_key)


# --- envelope level -----------------------------------------------------------------------

#: A valid value for every request field (PROTOCOL.md 6).
VALID = {
    "name": "alice", "password": "secret", "text": "hi", "to": "bob", "group": "g1",
    "members": ["bob"], "user": "bob", "size": 10, "id": "ab12", "offset": 0, "received": 0,
    "sha256": "0" * 64, "detail": "x", "limit": 5,
}


def _valid(field: str, kind: Any) -> Any:
    """A value of ``kind`` the codec accepts (the one in VALID if it fits)."""
    candidates: list[Any] = [VALID[field]] if field in VALID else []
    if isinstance(kind, Str):
        candidates += ["bob", "ab12", "0" * 64, "x" * kind.min_chars]
    elif isinstance(kind, Int):
        candidates.append(kind.minimum)
    elif isinstance(kind, List):
        candidates.append([_valid("", kind.item)])
    else:
        candidates.append(True)
    for value in candidates:
        try:
            kind.check(field, value)
        except EnvelopeError:
            continue
        return value
    raise AssertionError(f"no valid value known for {field}: {kind}")


def _plaintext(header: Any, body: bytes = b"", raw: bytes | None = None) -> bytes:
    data = raw if raw is not None else json.dumps(header, ensure_ascii=False).encode("utf-8")
    return struct.pack(">I", len(data)) + data + body


def _wrong_types(kind: Any) -> list[Any]:
    if isinstance(kind, Str):
        return [123, None, True, ["x"], {"a": "b"}]
    if isinstance(kind, Int):
        return ["1", 1.5, 1.0, True, None, [1]]
    if isinstance(kind, List):
        return ["bob", [1], [None], {"a": 1}, None]
    return [None]


def _out_of_range(kind: Any) -> list[Any]:
    if isinstance(kind, Str):
        values: list[Any] = ["a" * (kind.max_chars + 1)]
        if kind.min_chars > 0:
            values.append("")
        if kind.pattern is not None:
            values.append("Z!" * max(1, kind.min_chars // 2))
        return values
    if isinstance(kind, Int):
        return [kind.maximum + 1, kind.minimum - 1]
    if isinstance(kind, List):
        return [["bob"] * (kind.max_items + 1), ["a" * (kind.item.max_chars + 1)], [""]]
    return []


def malformed_envelopes(types: list[str] | None = None) -> list[tuple[str, bytes]]:
    """(label, plaintext): every field of every request type missing, of the wrong type
    or out of range; unknown types and fields; and framing and JSON defects."""
    cases: list[tuple[str, bytes]] = []
    for kind_name, schema in REQUESTS.items():
        if types is not None and kind_name not in types:
            continue
        base = {"type": kind_name, **{f: _valid(f, k) for f, k in schema.required.items()}}
        decode_request(_plaintext(base))  # the baseline itself is valid
        for field in schema.required:
            without = {k: v for k, v in base.items() if k != field}
            cases.append((f"{kind_name}: {field} missing", _plaintext(without)))
        fields = {**schema.required, **schema.optional, "rid": Int(0, (1 << 31) - 1)}
        for field, kind in fields.items():
            for value in _wrong_types(kind):
                cases.append((f"{kind_name}: {field}={value!r}", _plaintext({**base, field: value})))
            for value in _out_of_range(kind):
                cases.append((f"{kind_name}: {field} out of range", _plaintext({**base, field: value})))
        cases.append((f"{kind_name}: unknown field", _plaintext({**base, "bogus": 1})))
        cases.append((f"{kind_name}: event field re", _plaintext({**base, "re": 1})))
        if not schema.body:
            cases.append((f"{kind_name}: a body", _plaintext(base, b"extra")))
    if types is None:
        cases += [
            ("file_chunk: body over MAX_CHUNK_BYTES",
             _plaintext({"type": "file_chunk", "id": "ab12", "offset": 0}, bytes(256 * 1024 + 1))),
            ("header over 64 KiB", _plaintext({"type": "broadcast", "text": "x" * 70_000})),
        ]
    cases += [
        ("unknown type", _plaintext({"type": "launch_missiles"})),
        ("event type", _plaintext({"type": "welcome", "name": "alice"})),
        ("type missing", _plaintext({"name": "alice"})),
        ("type not a string", _plaintext({"type": 1})),
        ("type null", _plaintext({"type": None})),
        ("header a list", _plaintext(["login"])),
        ("header a string", _plaintext("login")),
        ("header a number", _plaintext(7)),
        ("header null", _plaintext(None)),
        ("invalid JSON", _plaintext(None, raw=b'{"type": "list",')),
        ("trailing garbage", _plaintext(None, raw=b'{"type": "list"} x')),
        ("invalid UTF-8", _plaintext(None, raw=b'{"type": "broadcast", "text": "\xff\xfe"}')),
        ("lone surrogate", _plaintext(None, raw=b'{"type": "broadcast", "text": "\\ud800"}')),
        ("duplicate key", _plaintext(None, raw=b'{"type": "broadcast", "text": "a", "text": "b"}')),
        ("NaN", _plaintext(None, raw=b'{"type": "list", "rid": NaN}')),
        ("Infinity", _plaintext(None, raw=b'{"type": "list", "rid": Infinity}')),
        ("deep nesting", _plaintext(None, raw=
            b'{"type": "list", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}")
        ),
        ("empty envelope", b""),
        ("shorter than the length prefix", b"\x00\x00"),
        ("header length past the end", struct.pack(">I", 1000) + b'{"type": "list"}'),
        ("header length over 64 KiB", struct.pack(">I", 65537) + b'{"type": "list"}' + bytes(65537)),
        ("header length 2^32-1", b"\xff\xff\xff\xff" + b'{"type": "list"}'),
        ("zero header length", struct.pack(">I", 0) + b'{"type": "list"}'),
    ]
    return cases


async def _expect_bad_requests(peer: Peer, cases: list[tuple[str, bytes]]) -> None:
    """Send every case, then a list request: exactly one bad_request per case arrives,
    in order, before the list reply."""
    start = len(peer.events)
    for _, plaintext in cases:
        await peer.session.send_plaintext(plaintext)
    reply = await peer.request("list", timeout=20)
    index = next(i for i, e in enumerate(peer.events) if e is reply)
    answers = peer.events[start:index]
    wrong = [
        (label, (e.type, e.fields))
        for (label, _), e in zip(cases, answers, strict=False)
        if (e.type, e.get("code")) != ("error", "bad_request") or "re" in e.fields
    ]
    assert not wrong, f"{len(wrong)} cases not answered with bad_request: {wrong[:10]}"
    assert len(answers) == len(cases), f"{len(cases)} malformed envelopes, {len(answers)} answers"


async def test_malformed_envelopes_get_bad_request_and_the_session_continues(
    quick_server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """Every field of every request missing, of the wrong type or too long, unknown types
    and fields, and framing/JSON defects: each is answered by one ``error bad_request``
    (before login too) and the session goes on working."""
    server = quick_server
    watcher = await Peer.join(server.port, public_key, "watcher")

    session = await RawSession.established(server.port, public_key)
    early = Peer(session, "(not logged in)")
    await _expect_bad_requests(early, malformed_envelopes(["login"]))
    welcome = await early.request("login", name="fuzzer")
    assert welcome.type == "welcome", welcome

    cases = malformed_envelopes()
    assert len(cases) > 300
    await _expect_bad_requests(early, cases)
    assert not early.ended
    await early.send("broadcast", text="still here")
    await watcher.wait_type("broadcast", sender="fuzzer", text="still here")
    await watcher.sync()
    assert len(watcher.notifications("broadcast")) == 1, "a malformed envelope was routed"
    await early.close()
    await watcher.close()
    await assert_fresh_pair_chats(server, public_key)


async def test_bad_request_answers_a_readable_rid(
    quick_server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """A malformed request whose header has a valid ``rid`` gets its ``bad_request`` with
    that ``re`` (PROTOCOL.md section 6), so a client waiting for the reply is not left
    hanging; an invalid ``rid`` is not echoed."""
    peer = await Peer.join(quick_server.port, public_key, "fuzzer")
    cases = {
        7: {"type": "broadcast", "rid": 7},  # a required field missing
        8: {"type": "no_such_request", "rid": 8},  # an unknown type
        9: {"type": "list", "rid": 9, "colour": "blue"},  # an unknown field
        10: {"rid": 10},  # no type at all
    }
    for fields in cases.values():
        header = json.dumps(fields).encode()
        await peer.session.send_plaintext(len(header).to_bytes(4, "big") + header)
    header = json.dumps({"type": "list", "rid": -1}).encode()
    await peer.session.send_plaintext(len(header).to_bytes(4, "big") + header)
    await peer.sync()
    errors = [e for e in peer.events if e.type == "error"]
    assert [e["code"] for e in errors] == ["bad_request"] * 5, errors
    assert [e.get("re") for e in errors] == [7, 8, 9, 10, None], errors
    await peer.close()


async def test_login_twice_and_commands_before_login(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """Every request but login before login: ``error not_logged_in`` (nothing happens);
    a second login: ``error already_logged_in`` and the first name stays."""
    watcher = await Peer.join(server.port, public_key, "watcher")
    session = await RawSession.established(server.port, public_key)
    peer = Peer(session, "early")
    examples = {
        "broadcast": {"text": "hi"}, "private": {"to": "watcher", "text": "hi"},
        "group_create": {"group": "g1", "members": ["watcher"]}, "group_join": {"group": "g1"},
        "group_message": {"group": "g1", "text": "hi"}, "group_members": {},
        "file_offer": {"name": "a.txt", "size": 3, "to": "watcher"}, "quit": {},
    }
    for kind, schema in REQUESTS.items():
        if kind == "login":
            continue
        fields = examples.get(kind, {f: _valid(f, k) for f, k in schema.required.items()})
        reply = await peer.request(kind, **fields)
        assert (reply.type, reply.get("code")) == ("error", "not_logged_in"), (kind, reply)
    assert (await peer.request("login", name="early")).type == "welcome"
    second = await peer.request("login", name="other")
    assert (second.type, second.get("code")) == ("error", "already_logged_in"), second
    again = await peer.request("login", name="early")
    assert (again.type, again.get("code")) == ("error", "already_logged_in"), again
    users = await peer.request("list")
    assert users["users"] == ["watcher", "early"], users
    await watcher.sync()
    seen = [e.type for e in watcher.events if "re" not in e.fields]
    assert seen == ["user_joined"], f"requests before login had effects: {seen}"
    await peer.close()
    await watcher.close()
    await assert_fresh_pair_chats(server, public_key)


# --- file transfer ------------------------------------------------------------------------


async def test_unknown_transfer_ids_get_bad_transfer(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """Every file request naming a transfer that does not exist: ``error bad_transfer``."""
    peer = await Peer.join(server.port, public_key, "alice")
    requests: dict[str, dict[str, Any]] = {
        "file_accept": {}, "file_decline": {}, "file_ack": {"received": 0},
        "file_end": {"sha256": "0" * 64}, "file_done": {}, "file_failed": {"detail": "x"},
        "file_cancel": {},
    }
    for kind, fields in requests.items():
        reply = await peer.request(kind, id="0123abcd", **fields)
        assert (reply.type, reply.get("code")) == ("error", "bad_transfer"), (kind, reply)
    chunk = encode_request("file_chunk", body=b"data", id="0123abcd", offset=0, rid=900)
    await peer.session.send_plaintext(chunk)
    reply = await peer.wait_for(lambda e: e.get("re") == 900, "the reply to file_chunk")
    assert (reply.type, reply.get("code")) == ("error", "bad_transfer"), reply
    await peer.sync()
    await peer.close()
    await assert_fresh_pair_chats(server, public_key)


async def test_chunks_beyond_the_declared_size_abort_the_transfer(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """An accepted transfer of 10 bytes: 10 bytes then one more (and, separately, one
    11-byte chunk) get ``error bad_transfer`` for the sender and ``file_aborted`` for the
    recipient; both sessions go on."""
    alice = await Peer.join(server.port, public_key, "alice")
    bob = await Peer.join(server.port, public_key, "bob")
    for label, chunks in {"one byte more": [b"0123456789", b"!"], "one big chunk": [b"0123456789!"]}.items():
        offered = await alice.request("file_offer", name="a.txt", size=10, to="bob")
        assert offered.type == "file_offered", offered
        transfer = offered["id"]
        await bob.wait_type("file_incoming", id=transfer, sender="alice", size=10)
        assert (await bob.request("file_accept", id=transfer)).type == "ok"
        await alice.wait_type("file_go", id=transfer)
        offset = 0
        for k, data in enumerate(chunks):
            rid = 700 + k
            await alice.session.send_plaintext(
                encode_request("file_chunk", body=data, id=transfer, offset=offset, rid=rid)
            )
            offset += len(data)
        reply = await alice.wait_for(lambda e, r=rid: e.get("re") == r, f"{label}: the last chunk's reply")
        assert (reply.type, reply.get("code")) == ("error", "bad_transfer"), (label, reply)
        await bob.wait_type("file_aborted", id=transfer)
        got = [e.body for e in bob.notifications("file_chunk") if e["id"] == transfer]
        assert b"".join(got) == (b"0123456789" if len(chunks) == 2 else b""), (label, got)
    await alice.send("private", to="bob", text="sorry")
    await bob.wait_type("private", sender="alice", text="sorry")
    await alice.close()
    await bob.close()
    await assert_fresh_pair_chats(server, public_key)


# --- idle connections and deadlines -------------------------------------------------------


async def test_hundreds_of_half_open_connections(
    quick_server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """300 connections that never finish: 100 silent TCP, 100 with an unfinished HTTP
    request, 100 upgraded WebSockets that never send a ClientHello (and 20 stopping after
    the ClientHello). A fresh pair chats while they are open; all are closed within the
    handshake timeout plus slack (the upgraded ones with HandshakeError TIMEOUT) and the
    server's open file descriptors return to the baseline."""
    server = quick_server
    process = server_ps(server)
    baseline = process.num_fds()
    start = time.monotonic()
    tcp = await asyncio.gather(*(_tcp(server.port) for _ in range(200)))
    for _, writer in tcp[100:]:
        writer.write(b"GET / HTTP/1.1\r\nHost: chat\r\n")
    upgraded = await asyncio.gather(*(RawSession.open(server.port) for _ in range(120)))
    for session in upgraded[100:]:
        await session.ws.send(ClientHandshake(public_key).client_hello())
    try:
        for _ in range(200):  # up to 10 s: a loaded machine accepts slowly
            if process.num_fds() >= baseline + 300:
                break
            await asyncio.sleep(0.05)
        assert process.num_fds() >= baseline + 300, "the connections did not reach the server"
        await assert_fresh_pair_chats(server, public_key)

        deadline = HANDSHAKE_TIMEOUT + SLACK
        codes = await asyncio.gather(
            *(_first_handshake_error(s, deadline - (time.monotonic() - start)) for s in upgraded)
        )
        assert set(codes[:100]) == {HandshakeErrorCode.TIMEOUT}, codes[:100]
        assert set(codes[100:]) == {None}, "a ServerHello, then TIMEOUT expected"
        left = max(0.5, deadline - (time.monotonic() - start))
        results = await asyncio.gather(
            *(_read_until_closed(reader, left) for reader, _ in tcp), return_exceptions=True
        )
        still_open = sum(isinstance(r, TimeoutError) for r in results)
        assert still_open == 0, (
            f"{still_open} of 200 TCP connections that never completed the WebSocket upgrade were "
            f"still open {deadline:g}s after connecting (--handshake-timeout {HANDSHAKE_TIMEOUT:g})"
        )
    finally:
        for _, writer in tcp:
            _close(writer)
        for session in upgraded:
            session.abort()
    for _ in range(50):
        if process.num_fds() <= baseline + 5:
            break
        await asyncio.sleep(0.1)
    assert process.num_fds() <= baseline + 5, f"server fds: {process.num_fds()}, baseline {baseline}"
    await assert_fresh_pair_chats(server, public_key)


async def _first_handshake_error(session: RawSession, timeout: float) -> HandshakeErrorCode | None:
    """The code of the HandshakeError the server sends instead of a ServerHello (None: it
    sent a ServerHello, then possibly a TIMEOUT error); the server then closes."""
    async with asyncio.timeout(max(timeout, 0.5)):
        frame = await session.ws.recv()
        assert isinstance(frame, bytes), frame
        if frame[:1] != b"\x02":
            code = decode_handshake_error(frame).code
            await session.closed_by_server()
            return code
        with contextlib.suppress(ConnectionClosed):
            frame = await session.ws.recv()
            assert isinstance(frame, bytes)
            assert decode_handshake_error(frame).code is HandshakeErrorCode.TIMEOUT
            await session.ws.recv()
            raise AssertionError("more frames after a HandshakeError")
    return None


async def test_login_deadline(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """With --login-timeout 1: a connection that completes the handshake but never logs
    in (silent, or sending only other requests) is closed with 1008 within a few seconds;
    one that logged in in time stays."""
    async with running_server(key_pair[0], tmp_path / "server", "--login-timeout", "1") as server:
        start = time.monotonic()
        silent = await RawSession.established(server.port, public_key)
        busy = Peer(await RawSession.established(server.port, public_key), "busy")
        good = await Peer.join(server.port, public_key, "good")

        async def keep_busy() -> None:
            with contextlib.suppress(ConnectionClosed, AssertionError):
                while not busy.ended:
                    await busy.request("list")
                    await asyncio.sleep(0.2)

        pester = asyncio.create_task(keep_busy())
        code, reason = await silent.closed_by_server(timeout=1 + SLACK)
        assert code == 1008 and reason, (code, reason)
        code, reason = await busy.wait_ended(timeout=1 + SLACK)
        assert code == 1008 and reason, (code, reason)
        await pester
        elapsed = time.monotonic() - start
        assert elapsed >= 0.9, f"closed after {elapsed:.2f}s, before the deadline"
        assert {e.get("code") for e in busy.events} == {"not_logged_in"}
        await asyncio.sleep(max(0.0, 2.0 - elapsed))
        await good.sync()
        assert not good.ended
        await good.close()
        await assert_fresh_pair_chats(server, public_key)
