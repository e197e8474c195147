"""PROTOCOL.md section 8: each security property of the handshake, with a
test that fails when the property is broken.

Record-layer properties (alteration, replay, reordering, truncation of records) are in
test_records.py and envelope bounds in test_envelope.py; this file covers the handshake,
whole recorded sessions and forward secrecy.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.keys import generate_private_key
from chat.protocol import handshake
from chat.protocol.envelope import decode_event, decode_request, encode_event, encode_request
from chat.protocol.errors import HandshakeErrorCode, HandshakeFailed, RecordError
from chat.protocol.handshake import (
    OAEP,
    ClientHandshake,
    KeySchedule,
    ServerHandshake,
    SessionKeys,
    decode_handshake_error,
    encode_handshake_error,
)
from chat.protocol.limits import MAX_HANDSHAKE_BYTES
from chat.protocol.records import RecordOpener, SecureChannel

Code = HandshakeErrorCode
#: The fixed test key of the vectors (loading it is faster than generating one).
KEY_FILE = Path(__file__).resolve().parent / "vectors" / "server_private.pem"
_loaded = serialization.load_pem_private_key(KEY_FILE.read_bytes(), password=None)
assert isinstance(_loaded, rsa.RSAPrivateKey)
KEY_A: rsa.RSAPrivateKey = _loaded


@pytest.fixture(scope="module")
def key_b() -> rsa.RSAPrivateKey:
    """Another server's key."""
    return generate_private_key(2048)


def fixed(*chunks: bytes) -> Callable[[int], bytes]:
    it = iter(chunks)

    def source(n: int) -> bytes:
        chunk = next(it)
        assert len(chunk) == n
        return chunk

    return source


def x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw
    )


def x25519(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    changed = bytearray(data)
    changed[index] ^= mask
    return bytes(changed)


@dataclass
class Session:
    """Everything of one completed session, as the test (knowing all secrets) sees it."""

    client_random: bytes
    client_private: bytes
    rsa_secret: bytes
    server_private: bytes
    client_hello: bytes
    server_hello: bytes
    client_finished: bytes
    client_keys: SessionKeys
    server_keys: SessionKeys
    client: ClientHandshake
    server: ServerHandshake


def new_session(key: rsa.RSAPrivateKey = KEY_A) -> Session:
    """A full handshake whose randomness the test knows (fresh each call)."""
    secrets = [os.urandom(32) for _ in range(5)]
    client = ClientHandshake(key.public_key(), random_source=fixed(*secrets[:3]))
    server = ServerHandshake(key, random_source=fixed(*secrets[3:]))
    client_hello = client.client_hello()
    server_hello = server.receive_client_hello(client_hello)
    client_finished = client.receive_server_hello(server_hello)
    server_keys = server.receive_client_finished(client_finished)
    assert client.keys is not None
    return Session(secrets[0], secrets[1], secrets[2], secrets[4], client_hello, server_hello,
                   client_finished, client.keys, server_keys, client, server)


def forge_server_hello(client_hello: bytes, rsa_secret: bytes, version: int = 1, suite: int = 1) -> bytes:
    """A ServerHello built exactly as a server would, but with a *guessed* rsa_secret:
    the best an impostor without the private key can do."""
    private = os.urandom(32)
    head = struct.pack(">BHH", 0x02, version, suite) + os.urandom(32) + x25519_public(private)
    th1 = hashlib.sha256(client_hello + head).digest()
    schedule = KeySchedule.derive(x25519(private, client_hello[37:69]), rsa_secret, th1)
    return head + hmac.new(schedule.server_confirm_key, th1, hashlib.sha256).digest()


def fails(code: Code, action: Callable[[], Any]) -> HandshakeFailed:
    with pytest.raises(HandshakeFailed) as failed:
        action()
    assert failed.value.code is code, (failed.value.code, str(failed.value))
    return failed.value


# --- 1. server authentication --------------------------------------------------------


def test_honest_handshake_agrees_on_directional_keys() -> None:
    s = new_session()
    client, server = s.client_keys, s.server_keys
    assert client.send_key == server.recv_key != client.recv_key == server.send_key
    assert client.send_iv == server.recv_iv != client.recv_iv == server.send_iv
    assert s.client_keys.transcript_hash == s.server_keys.transcript_hash


def test_client_with_another_servers_key_is_told_clearly(key_b: rsa.RSAPrivateKey) -> None:
    """The server answers UNKNOWN_SERVER_KEY; the client reports it, it does not hang."""
    client = ClientHandshake(key_b.public_key())
    hello = client.client_hello()
    error = fails(Code.UNKNOWN_SERVER_KEY, lambda: ServerHandshake(KEY_A).receive_client_hello(hello))
    answer = encode_handshake_error(error.code, str(error))
    reported = fails(Code.UNKNOWN_SERVER_KEY, lambda: client.receive_server_hello(answer))
    assert reported.remote
    assert "different server key" in str(reported)
    assert client.keys is None


def test_fingerprint_check_bypassed_still_fails_to_decrypt(key_b: rsa.RSAPrivateKey) -> None:
    """A client that names the right fingerprint but wraps to another key: DECRYPT_FAILED."""

    class WrapsToB(ClientHandshake):
        def _wrap(self, secret: bytes) -> bytes:
            return key_b.public_key().encrypt(secret, OAEP)

    client = WrapsToB(KEY_A.public_key())
    fails(Code.DECRYPT_FAILED, lambda: ServerHandshake(KEY_A).receive_client_hello(client.client_hello()))


def test_impostor_with_another_private_key_cannot_complete(key_b: rsa.RSAPrivateKey) -> None:
    """The client trusts A. A server holding B notices the fingerprint; one that ignores it
    cannot unwrap the secret; one that forges a ServerHello is caught by server_confirm."""
    rsa_secret = os.urandom(32)
    client_random, client_private = os.urandom(32), os.urandom(32)
    wrapped = KEY_A.public_key().encrypt(rsa_secret, OAEP)

    class SameHello(ClientHandshake):
        def _wrap(self, secret: bytes) -> bytes:
            return wrapped

    def client() -> ClientHandshake:
        """The same client state each time, so one recorded hello serves every attempt."""
        return SameHello(KEY_A.public_key(), random_source=fixed(client_random, client_private, rsa_secret))

    hello = client().client_hello()
    fails(Code.UNKNOWN_SERVER_KEY, lambda: ServerHandshake(key_b).receive_client_hello(hello))

    ignoring = ServerHandshake(key_b)
    ignoring._fingerprint = hello[69:101]  # white box: an impostor skipping its own check
    fails(Code.DECRYPT_FAILED, lambda: ignoring.receive_client_hello(hello))

    for guess in (bytes(32), os.urandom(32), hashlib.sha256(hello).digest()):
        victim = client()
        assert victim.client_hello() == hello
        forged = forge_server_hello(hello, guess)
        fails(Code.CONFIRMATION_FAILED, lambda v=victim, f=forged: v.receive_server_hello(f))
        assert victim.keys is None
        fails(Code.MALFORMED, lambda v=victim: v.receive_server_hello(forge_server_hello(hello, rsa_secret)))

    # Control: the forgery is built correctly; the one thing it lacks is the secret that
    # only A's private key reveals.
    victim = client()
    victim.client_hello()
    victim.receive_server_hello(forge_server_hello(hello, rsa_secret))
    assert victim.keys is not None


# --- 4. replay protection for the handshake ------------------------------------------


def test_replayed_handshake_yields_no_session() -> None:
    """A recorded ClientHello + ClientFinished replayed to a fresh server does not complete,
    and the recorded client records do not open under the new session's keys."""
    old = new_session()
    sealer = SecureChannel(old.client_keys)
    recorded = [sealer.seal(encode_request("login", name="alice", rid=1)),
                sealer.seal(encode_request("broadcast", text="transfer 100 coins", rid=2))]

    server_random, server_private = os.urandom(32), os.urandom(32)
    fresh = ServerHandshake(KEY_A, random_source=fixed(server_random, server_private))
    new_hello = fresh.receive_client_hello(old.client_hello)
    assert new_hello != old.server_hello
    fails(Code.CONFIRMATION_FAILED, lambda: fresh.receive_client_finished(old.client_finished))

    # The keys the fresh server holds (the test knows its randomness and the replayed secret).
    th1 = hashlib.sha256(old.client_hello + new_hello[:69]).digest()
    schedule = KeySchedule.derive(x25519(server_private, old.client_hello[37:69]), old.rsa_secret, th1)
    assert hmac.new(schedule.server_confirm_key, th1, hashlib.sha256).digest() == new_hello[69:]
    assert schedule.c2s_key != old.server_keys.recv_key
    with pytest.raises(RecordError):
        RecordOpener(schedule.c2s_key, schedule.c2s_iv).open(recorded[0])


def test_server_contributes_fresh_randomness() -> None:
    hello = ClientHandshake(KEY_A.public_key()).client_hello()
    first, second = (ServerHandshake(KEY_A).receive_client_hello(hello) for _ in range(2))
    assert first[5:37] != second[5:37] and first[37:69] != second[37:69] and first[69:] != second[69:]


def test_replayed_server_hello_fails_at_a_fresh_client() -> None:
    old = new_session()
    client = ClientHandshake(KEY_A.public_key())
    client.client_hello()
    fails(Code.CONFIRMATION_FAILED, lambda: client.receive_server_hello(old.server_hello))


def test_client_finished_from_another_session_fails() -> None:
    one, two = new_session(), ClientHandshake(KEY_A.public_key())
    server = ServerHandshake(KEY_A)
    server.receive_client_hello(two.client_hello())
    fails(Code.CONFIRMATION_FAILED, lambda: server.receive_client_finished(one.client_finished))


# --- 5. key confirmation and transcript integrity ------------------------------------


def _relay(
    alter_client_hello: Callable[[bytes], bytes] = lambda m: m,
    alter_server_hello: Callable[[bytes], bytes] = lambda m: m,
) -> tuple[ClientHandshake, ServerHandshake]:
    """A handshake through an active attacker that rewrites the hellos; returns after the
    client processed the ServerHello (raising what either side raises)."""
    client = ClientHandshake(KEY_A.public_key())
    server = ServerHandshake(KEY_A)
    server_hello = server.receive_client_hello(alter_client_hello(client.client_hello()))
    client.receive_server_hello(alter_server_hello(server_hello))
    return client, server


CLIENT_HELLO_FIELDS = [
    (0, Code.MALFORMED), (1, Code.VERSION_MISMATCH), (2, Code.VERSION_MISMATCH),
    (3, Code.UNSUPPORTED_SUITE), (4, Code.UNSUPPORTED_SUITE),
    (5, Code.CONFIRMATION_FAILED), (36, Code.CONFIRMATION_FAILED),  # client_random
    (37, Code.CONFIRMATION_FAILED), (68, Code.CONFIRMATION_FAILED),  # client X25519 public key
    (69, Code.UNKNOWN_SERVER_KEY), (100, Code.UNKNOWN_SERVER_KEY),  # fingerprint
    (101, Code.MALFORMED), (102, Code.MALFORMED),  # wrapped_len
    (103, Code.DECRYPT_FAILED), (358, Code.DECRYPT_FAILED),  # wrapped secret
]


@pytest.mark.parametrize(("offset", "code"), CLIENT_HELLO_FIELDS)
def test_any_change_to_the_client_hello_is_detected(offset: int, code: Code) -> None:
    fails(code, lambda: _relay(alter_client_hello=lambda m: flip(m, offset)))


def test_every_server_hello_byte_is_authenticated() -> None:
    """Type, version, suite are checked; every other byte is bound by server_confirm."""
    for offset in range(101):
        expected = (Code.MALFORMED if offset == 0 else Code.VERSION_MISMATCH if offset < 3
                    else Code.UNSUPPORTED_SUITE if offset < 5 else Code.CONFIRMATION_FAILED)
        for mask in (0x01, 0x80):
            fails(expected, lambda o=offset, m=mask: _relay(alter_server_hello=lambda msg: flip(msg, o, m)))


def test_man_in_the_middle_substituting_its_x25519_key_is_caught() -> None:
    """The attacker relays to the real server but swaps in its own X25519 share toward the
    client (so it could compute x25519_shared with the client): confirmation fails."""
    attacker_public = x25519_public(os.urandom(32))
    fails(Code.CONFIRMATION_FAILED,
          lambda: _relay(alter_server_hello=lambda m: m[:37] + attacker_public + m[69:]))


def test_every_client_finished_byte_is_checked() -> None:
    for offset in range(33):
        client = ClientHandshake(KEY_A.public_key())
        server = ServerHandshake(KEY_A)
        finished = client.receive_server_hello(server.receive_client_hello(client.client_hello()))
        code = Code.MALFORMED if offset == 0 else Code.CONFIRMATION_FAILED
        fails(code, lambda s=server, f=finished, o=offset: s.receive_client_finished(flip(f, o)))


def test_no_keys_before_confirmation() -> None:
    """Until server_confirm verifies the client has no record keys, so it can send nothing of
    value; the server yields keys only for a valid ClientFinished."""
    client = ClientHandshake(KEY_A.public_key())
    server = ServerHandshake(KEY_A)
    server_hello = server.receive_client_hello(client.client_hello())
    assert client.keys is None
    fails(Code.CONFIRMATION_FAILED, lambda: client.receive_server_hello(flip(server_hello, 100)))
    assert client.keys is None
    fails(Code.MALFORMED, lambda: client.receive_server_hello(server_hello))  # no second chance
    fails(Code.CONFIRMATION_FAILED, lambda: server.receive_client_finished(b"\x03" + bytes(32)))
    fails(Code.MALFORMED, lambda: server.receive_client_finished(b"\x03" + bytes(32)))


# --- 6. versioning and downgrade detection -------------------------------------------


@pytest.mark.parametrize("version", [0, 2, 0xFFFF])
def test_server_rejects_another_version_and_says_which_it_speaks(version: int) -> None:
    hello = ClientHandshake(KEY_A.public_key()).client_hello()
    changed = hello[:1] + struct.pack(">H", version) + hello[3:]
    error = fails(Code.VERSION_MISMATCH, lambda: ServerHandshake(KEY_A).receive_client_hello(changed))
    assert error.peer_version == version
    reported = decode_handshake_error(encode_handshake_error(error.code, str(error)))
    assert (reported.code, reported.peer_version, reported.remote) == (Code.VERSION_MISMATCH, 1, True)


def test_future_client_hello_of_any_layout_gets_version_mismatch() -> None:
    """The version is read before the layout: a 5-byte or 2,000-byte v2 hello is told so."""
    for hello in (b"\x01\x00\x02\x00\x01", b"\x01\x00\x02\x00\x07" + bytes(1995)):
        fails(Code.VERSION_MISMATCH, lambda h=hello: ServerHandshake(KEY_A).receive_client_hello(h))


def test_client_rejects_a_server_hello_of_another_version() -> None:
    client = ClientHandshake(KEY_A.public_key())
    server_hello = ServerHandshake(KEY_A).receive_client_hello(client.client_hello())
    error = fails(Code.VERSION_MISMATCH, lambda: client.receive_server_hello(flip(server_hello, 2, 0x03)))
    assert error.peer_version == 2


def test_unsupported_suite_both_directions() -> None:
    hello = ClientHandshake(KEY_A.public_key()).client_hello()
    fails(Code.UNSUPPORTED_SUITE, lambda: ServerHandshake(KEY_A).receive_client_hello(flip(hello, 4, 0x03)))
    client = ClientHandshake(KEY_A.public_key())
    server_hello = ServerHandshake(KEY_A).receive_client_hello(client.client_hello())
    fails(Code.UNSUPPORTED_SUITE, lambda: client.receive_server_hello(flip(server_hello, 4, 0x03)))


def test_altered_version_in_the_server_hello_fails_confirmation_even_if_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Downgrade detection does not rest on the equality check alone: were the client to
    accept another version (a future multi-version client), the rewritten byte still
    breaks server_confirm because it is hashed into TH1."""
    client = ClientHandshake(KEY_A.public_key())
    server_hello = ServerHandshake(KEY_A).receive_client_hello(client.client_hello())
    monkeypatch.setattr(handshake, "PROTOCOL_VERSION", 2)
    fails(Code.CONFIRMATION_FAILED, lambda: client.receive_server_hello(flip(server_hello, 2, 0x03)))


def test_altered_suite_in_the_server_hello_fails_confirmation_even_if_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = ClientHandshake(KEY_A.public_key())
    server_hello = ServerHandshake(KEY_A).receive_client_hello(client.client_hello())
    monkeypatch.setattr(handshake, "SUITE_ID", 2)
    fails(Code.CONFIRMATION_FAILED, lambda: client.receive_server_hello(flip(server_hello, 4, 0x03)))


def test_version_rewritten_in_both_hellos_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attacker changes the client's version on the way in (to a server that accepts it)
    and the server's answer back on the way out: the transcripts differ, confirmation fails."""
    client = ClientHandshake(KEY_A.public_key())
    hello = client.client_hello()
    monkeypatch.setattr(handshake, "PROTOCOL_VERSION", 2)
    server_hello = ServerHandshake(KEY_A).receive_client_hello(flip(hello, 2, 0x03))
    assert server_hello[1:3] == b"\x00\x02"
    monkeypatch.undo()
    fails(Code.CONFIRMATION_FAILED, lambda: client.receive_server_hello(flip(server_hello, 2, 0x03)))


# --- 8. bounded input and malformed handshakes ---------------------------------------


def test_oversize_handshake_messages_are_refused() -> None:
    assert MAX_HANDSHAKE_BYTES >= 103 + 8192 // 8  # the largest legitimate ClientHello fits
    hello = ClientHandshake(KEY_A.public_key()).client_hello()
    big = hello + bytes(MAX_HANDSHAKE_BYTES + 1 - len(hello))
    error = fails(Code.MALFORMED, lambda: ServerHandshake(KEY_A).receive_client_hello(big))
    assert "too large" in str(error)

    client = ClientHandshake(KEY_A.public_key())
    server = ServerHandshake(KEY_A)
    server_hello = server.receive_client_hello(client.client_hello())
    fails(Code.MALFORMED, lambda: client.receive_server_hello(server_hello + bytes(MAX_HANDSHAKE_BYTES)))
    huge_error = b"\x0f\x02\x00\x01\xff\xff" + bytes(MAX_HANDSHAKE_BYTES)
    fails(Code.MALFORMED, lambda: server.receive_client_finished(huge_error))


def test_every_truncation_of_a_handshake_message_is_refused() -> None:
    hello = ClientHandshake(KEY_A.public_key()).client_hello()
    for length in range(len(hello)):
        with pytest.raises(HandshakeFailed):
            ServerHandshake(KEY_A).receive_client_hello(hello[:length])
    template = ClientHandshake(KEY_A.public_key())
    server_hello = ServerHandshake(KEY_A).receive_client_hello(template.client_hello())
    for length in range(len(server_hello)):
        client = ClientHandshake(KEY_A.public_key())
        client.client_hello()
        with pytest.raises(HandshakeFailed):
            client.receive_server_hello(server_hello[:length])


@pytest.mark.parametrize("point", [bytes(32), b"\x01" + bytes(31)])
def test_low_order_x25519_points_are_refused(point: bytes) -> None:
    hello = ClientHandshake(KEY_A.public_key()).client_hello()
    bad_hello = hello[:37] + point + hello[69:]
    fails(Code.MALFORMED, lambda: ServerHandshake(KEY_A).receive_client_hello(bad_hello))
    client = ClientHandshake(KEY_A.public_key())
    server_hello = ServerHandshake(KEY_A).receive_client_hello(client.client_hello())
    fails(Code.MALFORMED, lambda: client.receive_server_hello(server_hello[:37] + point + server_hello[69:]))


def test_messages_out_of_order_are_refused() -> None:
    fails(Code.MALFORMED, lambda: ServerHandshake(KEY_A).receive_client_finished(b"\x03" + bytes(32)))
    fails(Code.MALFORMED, lambda: ClientHandshake(KEY_A.public_key()).receive_server_hello(bytes(101)))
    client = ClientHandshake(KEY_A.public_key())
    client.client_hello()
    fails(Code.MALFORMED, client.client_hello)
    s = new_session()
    fails(Code.MALFORMED, lambda: s.server.receive_client_hello(s.client_hello))
    fails(Code.MALFORMED, lambda: s.server.receive_client_finished(s.client_finished))
    fails(Code.MALFORMED, lambda: s.client.receive_server_hello(s.server_hello))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2100))
def test_arbitrary_bytes_to_either_side_raise_only_handshake_failed(data: bytes) -> None:
    with pytest.raises(HandshakeFailed):
        ServerHandshake(KEY_A).receive_client_hello(data)
    client = ClientHandshake(KEY_A.public_key())
    client.client_hello()
    with pytest.raises(HandshakeFailed):
        client.receive_server_hello(data)
    assert isinstance(decode_handshake_error(data), HandshakeFailed)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_client_hello_is_answered_or_refused_cleanly(data: st.DataObject) -> None:
    hello = bytearray(ClientHandshake(KEY_A.public_key()).client_hello())
    for _ in range(data.draw(st.integers(1, 3))):
        hello[data.draw(st.integers(0, len(hello) - 1))] = data.draw(st.integers(0, 255))
    try:
        reply = ServerHandshake(KEY_A).receive_client_hello(bytes(hello))
    except HandshakeFailed:
        return
    assert len(reply) == 101


# --- 3. forward secrecy ---------------------------------------------------------------


def test_leaked_private_key_does_not_decrypt_a_recorded_session() -> None:
    """Record a whole session; later the RSA private key leaks. The attacker recovers
    rsa_secret, but every X25519 value it can compute from the recording gives the wrong
    keys. Only the true shared secret (known to the live endpoints, here to the test
    through the fixed randomness) opens the records."""
    s = new_session()
    client_channel, server_channel = SecureChannel(s.client_keys), SecureChannel(s.server_keys)
    c2s_plain = [encode_request("login", name="alice", password="hunter2", rid=1),
                 encode_request("private", to="bob", text="the launch code is 0000", rid=2)]
    s2c_plain = [encode_event("welcome", name="alice", re=1),
                 encode_event("private_sent", to="bob", text="the launch code is 0000", re=2)]
    c2s = [client_channel.seal(p) for p in c2s_plain]
    s2c = [server_channel.seal(p) for p in s2c_plain]
    for record, plain in zip(c2s, c2s_plain, strict=True):
        assert decode_request(server_channel.open(record)) == decode_request(plain)
    for record, plain in zip(s2c, s2c_plain, strict=True):
        assert decode_event(client_channel.open(record)) == decode_event(plain)
    transcript = s.client_hello + s.server_hello + s.client_finished + b"".join(c2s + s2c)

    # What the attacker has: the recording and the leaked private key.
    rsa_secret = KEY_A.decrypt(s.client_hello[103:], OAEP)
    assert rsa_secret == s.rsa_secret  # the RSA part of the secret is gone ...
    th1 = hashlib.sha256(s.client_hello + s.server_hello[:69]).digest()
    client_public, server_public = s.client_hello[37:69], s.server_hello[37:69]
    client_random, server_random = s.client_hello[5:37], s.server_hello[5:37]
    candidates = [bytes(32), client_public, server_public, th1, rsa_secret,
                  hashlib.sha256(client_public + server_public).digest()]
    for scalar in (client_public, server_public, client_random, server_random, rsa_secret, th1):
        for public in (client_public, server_public):
            with contextlib.suppress(ValueError):  # a low-order result is no candidate
                candidates.append(x25519(scalar, public))

    def opens(shared: bytes) -> bool:
        schedule = KeySchedule.derive(shared, rsa_secret, th1)
        confirm = hmac.new(schedule.server_confirm_key, th1, hashlib.sha256).digest()
        try:
            RecordOpener(schedule.c2s_key, schedule.c2s_iv).open(c2s[0])
            RecordOpener(schedule.s2c_key, schedule.s2c_iv).open(s2c[0])
        except RecordError:
            assert confirm != s.server_hello[69:]
            return False
        return True

    for candidate in candidates:
        assert not opens(candidate)  # ... but without x25519_shared the records stay sealed.

    # Control: the ephemeral secret, which never travels, is exactly what was missing.
    true_shared = x25519(s.client_private, server_public)
    assert true_shared == x25519(s.server_private, client_public)
    assert opens(true_shared)
    schedule = KeySchedule.derive(true_shared, rsa_secret, th1)
    opener = RecordOpener(schedule.c2s_key, schedule.c2s_iv)
    assert [opener.open(r) for r in c2s] == c2s_plain

    for secret in (true_shared, s.client_private, s.server_private, rsa_secret, schedule.c2s_key):
        assert secret not in transcript


def test_endpoints_drop_handshake_secrets_once_done() -> None:
    """White box: after the handshake neither state machine keeps the ephemeral key, the
    RSA secret or the key schedule (a later memory leak reveals no past session)."""
    s = new_session()
    assert s.client._ephemeral is None and s.client._secret == b""
    assert s.server._schedule is None and s.server._transcript == b""
