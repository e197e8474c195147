"""The independent pycryptodome client (tests/reference_client.py) against our code.

In process: it reproduces the test vectors, completes a handshake with the protocol
core's ServerHandshake and exchanges records with chat's SecureChannel. Over a socket:
two reference clients log in to a real ``python -m chat.server`` and chat.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import reference_client as ref
from Crypto.PublicKey import RSA

from chat.keys import generate_private_key, public_pem, write_key_pair
from chat.protocol.envelope import decode_request, encode_event
from chat.protocol.errors import HandshakeErrorCode, HandshakeFailed, RecordError
from chat.protocol.handshake import KeySchedule, ServerHandshake
from chat.protocol.records import SecureChannel

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "vectors" / "handshake.json").read_text(encoding="utf-8"))
TEST_PEM = (ROOT / "tests" / "vectors" / "server_private.pem").read_bytes()


def _fixed(*chunks: bytes) -> ref.RandomSource:
    it = iter(chunks)

    def source(n: int) -> bytes:
        chunk = next(it)
        assert len(chunk) == n
        return chunk

    return source


def _h(name: str) -> bytes:
    section = "inputs" if name in VECTORS["inputs"] else "handshake"
    return bytes.fromhex(VECTORS[section][name])


@pytest.fixture(scope="module")
def vector_key() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(TEST_PEM, password=None)


# --- in process ------------------------------------------------------------------------


def test_reference_client_reproduces_the_vectors() -> None:
    """Written from PROTOCOL.md with another crypto library, it yields the same bytes."""
    server_key = RSA.import_key(TEST_PEM).public_key()
    assert ref.fingerprint_bytes(server_key) == _h("server_fingerprint")
    assert ref.fingerprint_text(server_key) == VECTORS["handshake"]["server_fingerprint_text"]
    assert server_key.export_key(format="DER") == _h("server_spki_der")
    # pycryptodome's OAEP (SHA-256, MGF1-SHA-256) opens the wrapped secret of the vectors.
    assert ref.oaep(RSA.import_key(TEST_PEM)).decrypt(_h("rsa_wrapped_secret")) == _h("rsa_secret")

    client = ref.ClientHandshake(
        server_key,
        random_source=_fixed(_h("client_random"), _h("client_x25519_private"), _h("rsa_secret")),
        wrap=lambda secret: _h("rsa_wrapped_secret"),
    )
    assert client.client_hello() == _h("client_hello")
    assert client.receive_server_hello(_h("server_hello")) == _h("client_finished")
    assert client.th1 == _h("transcript_hash_1")
    assert client.th2 == _h("transcript_hash_2")
    for name in ("c2s_key", "s2c_key", "c2s_iv", "s2c_iv", "server_confirm_key", "client_confirm_key"):
        assert client.keys[name] == _h(name), name
    session = client.session
    assert session is not None
    for record in VECTORS["records"]:
        if record["direction"] == "c2s":
            sealed = session.seal(record["envelope"])
            assert sealed.hex() == record["record"], record["name"]
            assert ref.encode_envelope(record["envelope"]).hex() == record["plaintext"]
        else:
            assert session.open(bytes.fromhex(record["record"])) == record["envelope"], record["name"]
    error = ref.parse_handshake_error(bytes.fromhex(VECTORS["handshake_error"]["message"]))
    assert (error.code, error.peer_version) == ("VERSION_MISMATCH", 1)
    assert str(error).endswith(VECTORS["handshake_error"]["reason"])
    assert ref.handshake_error(2, VECTORS["handshake_error"]["reason"]).hex() == (
        VECTORS["handshake_error"]["message"]
    )


def test_handshake_and_records_with_the_protocol_core(vector_key: Any) -> None:
    """Fresh randomness on both sides: reference client <-> chat ServerHandshake."""
    client = ref.ClientHandshake(RSA.import_key(public_pem(vector_key.public_key())))
    server = ServerHandshake(vector_key)
    server_hello = server.receive_client_hello(client.client_hello())
    server_keys = server.receive_client_finished(client.receive_server_hello(server_hello))
    session = client.session
    assert session is not None
    channel = SecureChannel(server_keys)
    for i in range(3):
        sealed = session.seal({"type": "broadcast", "text": f"hi {i}", "rid": i})
        request = decode_request(channel.open(sealed))
        assert (request.type, request.fields) == ("broadcast", {"text": f"hi {i}", "rid": i})
        event = session.open(channel.seal(encode_event("broadcast", sender="alice", text=f"yo {i} ✓")))
        assert event == {"type": "broadcast", "sender": "alice", "text": f"yo {i} ✓"}
    # Both ends refuse a record replayed from the other direction's past.
    replay = session.seal({"type": "list"})
    decode_request(channel.open(replay))
    with pytest.raises(RecordError):
        channel.open(replay)


def test_reference_client_rejects_an_impostor(vector_key: Any) -> None:
    """A server with another private key is refused by the real server code's fingerprint
    check, and a ServerHello forged without the RSA secret is refused by the reference
    client (CONFIRMATION_FAILED) before it sends anything."""
    client = ref.ClientHandshake(RSA.import_key(public_pem(vector_key.public_key())))
    hello = client.client_hello()
    with pytest.raises(HandshakeFailed) as failed:
        ServerHandshake(generate_private_key(2048)).receive_client_hello(hello)
    assert failed.value.code is HandshakeErrorCode.UNKNOWN_SERVER_KEY

    private = os.urandom(32)
    head = b"\x02\x00\x01\x00\x01" + os.urandom(32) + ref.x25519_public(private)
    th1 = ref.sha256(hello + head)
    guessed = KeySchedule.derive(ref.x25519(private, hello[37:69]), bytes(32), th1)
    forged = head + ref.hmac_sha256(guessed.server_confirm_key, th1)
    with pytest.raises(ref.ProtocolFailure) as refused:
        client.receive_server_hello(forged)
    assert refused.value.code == "CONFIRMATION_FAILED"
    assert client.session is None


# --- against the real server over a socket ---------------------------------------------


class ServerProcess:
    """``python -m chat.server`` on a free port; stdout is drained by a thread."""

    def __init__(self, private_path: Path, cwd: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chat.server", str(private_path), "--host", "127.0.0.1", "--port", "0"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_port(self, timeout: float = 20.0) -> int:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"server did not start: {''.join(self.output)}") from None
            if line is None:
                raise AssertionError(f"server exited: {''.join(self.output)}")
            match = re.search(r"WebSocket server started and listening on ws://127\.0\.0\.1:(\d+)", line)
            if match:
                return int(match.group(1))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[tuple[int, RSA.RsaKey]]:
    key = generate_private_key(2048)
    private_path, public_path = write_key_pair(tmp_path / "keys", key)
    server = ServerProcess(private_path, tmp_path)
    try:
        port = server.wait_for_port()
        yield port, RSA.import_key(public_path.read_bytes())
    finally:
        server.stop()
        print("server output:\n" + "".join(server.output))  # shown by pytest when a test fails


async def test_two_reference_clients_chat_through_the_real_server(
    live_server: tuple[int, RSA.RsaKey],
) -> None:
    port, server_key = live_server
    alice = await ref.Connection.connect("127.0.0.1", port, server_key)
    bob = await ref.Connection.connect("127.0.0.1", port, server_key)
    try:
        assert await alice.login("alice") == {"type": "welcome", "name": "alice", "re": 1}
        assert await bob.login("bob") == {"type": "welcome", "name": "bob", "re": 1}
        assert await alice.recv() == {"type": "user_joined", "names": ["bob"]}

        # Private message.
        reply = await alice.request({"type": "private", "to": "bob", "text": "hi bob"})
        assert reply == {"type": "private_sent", "to": "bob", "text": "hi bob", "re": 2}
        assert await bob.recv() == {"type": "private", "sender": "alice", "text": "hi bob"}

        # Broadcast.
        assert await bob.request({"type": "broadcast", "text": "hello all 👋"}) == {"type": "ok", "re": 2}
        assert await alice.recv() == {"type": "broadcast", "sender": "bob", "text": "hello all 👋"}

        # Who is online, in login order.
        online = await bob.request({"type": "list"})
        assert online == {"type": "user_list", "users": ["alice", "bob"], "re": 3}

        # A group with a member, then a group message.
        reply = await alice.request({"type": "group_create", "group": "team", "members": ["bob"]})
        assert reply == {"type": "group_created", "group": "team", "re": 3}
        assert await bob.recv() == {"type": "group_added", "group": "team"}
        assert await alice.request({"type": "group_message", "group": "team", "text": "standup?"}) == {
            "type": "ok",
            "re": 4,
        }
        assert await bob.recv() == {
            "type": "group_message",
            "group": "team",
            "sender": "alice",
            "text": "standup?",
        }

        # Quit: ok, the server closes, the other user is told.
        assert await alice.request({"type": "quit"}) == {"type": "ok", "re": 5}
        # alice was a guest: her membership ends with her connection.
        assert await bob.recv() == {"type": "member_left", "group": "team", "name": "alice"}
        assert await bob.recv() == {"type": "user_exited", "names": ["alice"]}
        await alice.websocket.wait_closed()
        assert alice.websocket.close_code == 1000
        assert alice.pending == [] and bob.pending == []
    finally:
        await alice.close()
        await bob.close()


async def test_real_server_refuses_a_client_with_another_key(live_server: tuple[int, RSA.RsaKey]) -> None:
    """Wrong public key: the server answers UNKNOWN_SERVER_KEY, the client says so."""
    port, _ = live_server
    other = RSA.import_key(public_pem(generate_private_key(2048).public_key()))
    with pytest.raises(ref.ProtocolFailure) as failed:
        await ref.Connection.connect("127.0.0.1", port, other)
    assert failed.value.code == "UNKNOWN_SERVER_KEY"
    assert failed.value.remote


async def test_real_server_ends_the_session_on_a_tampered_record(
    live_server: tuple[int, RSA.RsaKey],
) -> None:
    """A record that fails authentication ends the session (close code 1008)."""
    port, server_key = live_server
    alice = await ref.Connection.connect("127.0.0.1", port, server_key)
    bob = await ref.Connection.connect("127.0.0.1", port, server_key)
    try:
        await alice.login("alice")
        await bob.login("bob")
        await alice.recv()  # user_joined bob
        record = bytearray(bob.session.seal({"type": "broadcast", "text": "pay me", "rid": 2}))
        record[-1] ^= 0x01
        await bob.websocket.send(bytes(record))
        await bob.websocket.wait_closed()
        assert bob.websocket.close_code == 1008
        assert await alice.recv() == {"type": "user_exited", "names": ["bob"]}
    finally:
        await alice.close()
        await bob.close()


async def test_real_server_answers_another_version_with_version_mismatch(
    live_server: tuple[int, RSA.RsaKey],
) -> None:
    from websockets.asyncio.client import connect

    port, server_key = live_server
    hello = bytearray(ref.ClientHandshake(server_key).client_hello())
    hello[1:3] = b"\x00\x02"
    async with connect(f"ws://127.0.0.1:{port}/", max_size=ref.MAX_FRAME) as websocket:
        await websocket.send(bytes(hello))
        answer = await websocket.recv()
        assert isinstance(answer, bytes)
        error = ref.parse_handshake_error(answer)
        assert (error.code, error.peer_version, error.remote) == ("VERSION_MISMATCH", 1, True)
        await websocket.wait_closed()


async def test_real_server_answers_malformed_envelopes_and_carries_on(
    live_server: tuple[int, RSA.RsaKey],
) -> None:
    """A well-sealed but malformed envelope gets ``error bad_request``; the session goes on."""
    port, server_key = live_server
    async with await ref.Connection.connect("127.0.0.1", port, server_key) as alice:
        await alice.login("alice")
        for header in (rb'{"type":"shout"}', rb'{"type":"\ud800"}', rb'{"type":"broadcast","text":5}',
                       rb'{"type":"broadcast","text":"a","\udc00":1}', b"not json"):
            await alice.websocket.send(alice.session.send.seal(len(header).to_bytes(4, "big") + header))
            event = await alice.recv()
            assert (event["type"], event["code"]) == ("error", "bad_request"), header
            assert event["detail"]
        assert await alice.request({"type": "list"}) == {"type": "user_list", "users": ["alice"], "re": 2}
