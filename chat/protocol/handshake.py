"""Handshake state machines for the client and the server (sans-I/O).

Three messages, each one WebSocket binary message (byte layouts in PROTOCOL.md)::

    client                                   server
    ClientHello   ------------------------>          version, suite, client_random,
                                                     client X25519 public key, server key
                                                     fingerprint, RSA-OAEP(session secret)
                  <------------------------  ServerHello: server_random, server X25519
                                                     public key, server_confirm
    ClientFinished ----------------------->          client_confirm

Both sides feed ``x25519_shared || rsa_secret`` to HKDF-SHA256 salted with the hash of the
transcript so far, so the keys depend on the ephemeral exchange (forward secrecy), on the
RSA-wrapped secret (server authentication), and on every negotiated byte (downgrade
detection). ``server_confirm`` proves the server unwrapped the secret before the client
sends anything of value; ``client_confirm`` proves the client derived the same keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chat.keys import fingerprint_bytes
from chat.protocol.errors import HandshakeErrorCode, HandshakeFailed
from chat.protocol.limits import MAX_DETAIL_CHARS, MAX_HANDSHAKE_BYTES, PROTOCOL_VERSION, SUITE_ID

RandomSource = Callable[[int], bytes]

MSG_CLIENT_HELLO = 0x01
MSG_SERVER_HELLO = 0x02
MSG_CLIENT_FINISHED = 0x03
MSG_HANDSHAKE_ERROR = 0x0F

RANDOM_LEN = 32
X25519_LEN = 32
FINGERPRINT_LEN = 32
SECRET_LEN = 32
CONFIRM_LEN = 32

KEY_EXPANSION_INFO = b"chat/1 key expansion"
KEY_EXPANSION_LEN = 32 + 32 + 12 + 12 + 32 + 32

# type, version, suite, client_random, client_x25519, fingerprint, wrapped_len
_CLIENT_HELLO_HEAD = struct.Struct(f">BHH{RANDOM_LEN}s{X25519_LEN}s{FINGERPRINT_LEN}sH")
# type, version, suite, server_random, server_x25519 (the confirm tag follows)
_SERVER_HELLO_HEAD = struct.Struct(f">BHH{RANDOM_LEN}s{X25519_LEN}s")
SERVER_HELLO_LEN = _SERVER_HELLO_HEAD.size + CONFIRM_LEN
CLIENT_FINISHED_LEN = 1 + CONFIRM_LEN
# type, code, supported version, reason length (the UTF-8 reason follows)
_ERROR_HEAD = struct.Struct(">BBHH")

OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@dataclass(frozen=True)
class SessionKeys:
    """Directional keys for one side. ``send_*`` protect what this side sends."""

    send_key: bytes
    send_iv: bytes
    recv_key: bytes
    recv_iv: bytes
    transcript_hash: bytes


@dataclass(frozen=True)
class KeySchedule:
    """Everything HKDF yields for one session (PROTOCOL.md, "Key derivation")."""

    c2s_key: bytes
    s2c_key: bytes
    c2s_iv: bytes
    s2c_iv: bytes
    server_confirm_key: bytes
    client_confirm_key: bytes

    @classmethod
    def derive(cls, x25519_shared: bytes, rsa_secret: bytes, transcript_hash: bytes) -> KeySchedule:
        okm = HKDF(
            algorithm=hashes.SHA256(),
            length=KEY_EXPANSION_LEN,
            salt=transcript_hash,
            info=KEY_EXPANSION_INFO,
        ).derive(x25519_shared + rsa_secret)
        return cls(okm[0:32], okm[32:64], okm[64:76], okm[76:88], okm[88:120], okm[120:152])

    def client_keys(self, transcript_hash: bytes) -> SessionKeys:
        return SessionKeys(self.c2s_key, self.c2s_iv, self.s2c_key, self.s2c_iv, transcript_hash)

    def server_keys(self, transcript_hash: bytes) -> SessionKeys:
        return SessionKeys(self.s2c_key, self.s2c_iv, self.c2s_key, self.c2s_iv, transcript_hash)


def encode_handshake_error(code: HandshakeErrorCode, reason: str) -> bytes:
    """A HandshakeError message, sent in clear before closing a failed handshake."""
    data = reason.encode("utf-8")[: MAX_DETAIL_CHARS]
    return _ERROR_HEAD.pack(MSG_HANDSHAKE_ERROR, int(code), PROTOCOL_VERSION, len(data)) + data


def decode_handshake_error(message: bytes) -> HandshakeFailed:
    """Turn a received HandshakeError message into the exception it reports."""
    if len(message) < _ERROR_HEAD.size:
        return HandshakeFailed(HandshakeErrorCode.MALFORMED, "malformed handshake error", remote=True)
    _, code, version, length = _ERROR_HEAD.unpack_from(message)
    reason = message[_ERROR_HEAD.size : _ERROR_HEAD.size + length].decode("utf-8", "replace")
    try:
        known = HandshakeErrorCode(code)
    except ValueError:
        known = HandshakeErrorCode.MALFORMED
    return HandshakeFailed(known, reason or known.name.lower(), remote=True, peer_version=version)


def _x25519_public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _exchange(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        # cryptography refuses an all-zero result (a low-order peer point).
        raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "invalid X25519 public key") from None
    return shared


def _confirm(key: bytes, transcript_hash: bytes) -> bytes:
    return hmac.new(key, transcript_hash, hashlib.sha256).digest()


def _check_size(message: bytes) -> None:
    if len(message) > MAX_HANDSHAKE_BYTES:
        raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "handshake message too large")


def _raise_if_error(message: bytes) -> None:
    if message[:1] == bytes([MSG_HANDSHAKE_ERROR]):
        raise decode_handshake_error(message)


class _State(Enum):
    START = auto()
    WAIT_SERVER_HELLO = auto()
    WAIT_CLIENT_HELLO = auto()
    WAIT_CLIENT_FINISHED = auto()
    DONE = auto()
    FAILED = auto()


class ClientHandshake:
    """Client side: ``client_hello()``, then ``receive_server_hello(msg)`` which returns
    the ClientFinished to send; ``keys`` is then set. Any failure raises HandshakeFailed
    and leaves the machine FAILED."""

    def __init__(
        self, server_public_key: rsa.RSAPublicKey, *, random_source: RandomSource = os.urandom
    ) -> None:
        self._server_key = server_public_key
        self._random = random_source
        self._state = _State.START
        self._client_hello = b""
        self._ephemeral: X25519PrivateKey | None = None
        self._rsa_secret = b""
        self.keys: SessionKeys | None = None

    def _wrap(self, secret: bytes) -> bytes:
        """RSA-OAEP encryption of the session secret (randomised; test vectors override)."""
        return self._server_key.encrypt(secret, OAEP)

    def client_hello(self) -> bytes:
        if self._state is not _State.START:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "client_hello() called twice")
        client_random = self._random(RANDOM_LEN)
        self._ephemeral = X25519PrivateKey.from_private_bytes(self._random(X25519_LEN))
        self._rsa_secret = self._random(SECRET_LEN)
        wrapped = self._wrap(self._rsa_secret)
        self._client_hello = (
            _CLIENT_HELLO_HEAD.pack(
                MSG_CLIENT_HELLO,
                PROTOCOL_VERSION,
                SUITE_ID,
                client_random,
                _x25519_public_bytes(self._ephemeral),
                fingerprint_bytes(self._server_key),
                len(wrapped),
            )
            + wrapped
        )
        self._state = _State.WAIT_SERVER_HELLO
        return self._client_hello

    def receive_server_hello(self, message: bytes) -> bytes:
        if self._state is not _State.WAIT_SERVER_HELLO or self._ephemeral is None:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "unexpected ServerHello")
        self._state = _State.FAILED  # until proven otherwise
        _check_size(message)
        _raise_if_error(message)
        if len(message) != SERVER_HELLO_LEN or message[0] != MSG_SERVER_HELLO:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "malformed ServerHello")
        _, version, suite, _server_random, server_x25519 = _SERVER_HELLO_HEAD.unpack_from(message)
        if version != PROTOCOL_VERSION:
            raise HandshakeFailed(
                HandshakeErrorCode.VERSION_MISMATCH,
                f"server speaks protocol version {version}, this client speaks {PROTOCOL_VERSION}",
                peer_version=version,
            )
        if suite != SUITE_ID:
            raise HandshakeFailed(HandshakeErrorCode.UNSUPPORTED_SUITE, f"server chose unknown suite {suite}")
        head = message[: _SERVER_HELLO_HEAD.size]
        transcript_hash = hashlib.sha256(self._client_hello + head).digest()
        schedule = KeySchedule.derive(
            _exchange(self._ephemeral, server_x25519), self._rsa_secret, transcript_hash
        )
        expected = _confirm(schedule.server_confirm_key, transcript_hash)
        if not hmac.compare_digest(expected, message[_SERVER_HELLO_HEAD.size :]):
            raise HandshakeFailed(
                HandshakeErrorCode.CONFIRMATION_FAILED,
                "the server could not prove it holds the private key for this public key",
            )
        full_hash = hashlib.sha256(self._client_hello + message).digest()
        finished = bytes([MSG_CLIENT_FINISHED]) + _confirm(schedule.client_confirm_key, full_hash)
        self.keys = schedule.client_keys(full_hash)
        self._ephemeral = None
        self._rsa_secret = b""
        self._state = _State.DONE
        return finished


class ServerHandshake:
    """Server side: ``receive_client_hello(msg)`` returns the ServerHello to send;
    ``receive_client_finished(msg)`` returns the session keys. Any failure raises
    HandshakeFailed; the shell then sends ``encode_handshake_error`` and closes."""

    def __init__(
        self, private_key: rsa.RSAPrivateKey, *, random_source: RandomSource = os.urandom
    ) -> None:
        self._private_key = private_key
        self._fingerprint = fingerprint_bytes(private_key.public_key())
        self._modulus_len = (private_key.key_size + 7) // 8
        self._random = random_source
        self._state = _State.WAIT_CLIENT_HELLO
        self._schedule: KeySchedule | None = None
        self._transcript = b""

    def receive_client_hello(self, message: bytes) -> bytes:
        if self._state is not _State.WAIT_CLIENT_HELLO:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "unexpected ClientHello")
        self._state = _State.FAILED
        _check_size(message)
        if len(message) < 5 or message[0] != MSG_CLIENT_HELLO:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "expected a ClientHello")
        # The version is checked before anything else so a future client gets a clear answer.
        version, suite = struct.unpack_from(">HH", message, 1)
        if version != PROTOCOL_VERSION:
            raise HandshakeFailed(
                HandshakeErrorCode.VERSION_MISMATCH,
                f"this server speaks protocol version {PROTOCOL_VERSION}, the client sent {version}",
                peer_version=version,
            )
        if suite != SUITE_ID:
            raise HandshakeFailed(HandshakeErrorCode.UNSUPPORTED_SUITE, f"unsupported suite {suite}")
        if len(message) < _CLIENT_HELLO_HEAD.size:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "truncated ClientHello")
        _, _, _, _client_random, client_x25519, fingerprint, wrapped_len = (
            _CLIENT_HELLO_HEAD.unpack_from(message)
        )
        if not hmac.compare_digest(fingerprint, self._fingerprint):
            raise HandshakeFailed(
                HandshakeErrorCode.UNKNOWN_SERVER_KEY,
                "the client expects a different server key (fingerprint mismatch)",
            )
        wrapped = message[_CLIENT_HELLO_HEAD.size :]
        if wrapped_len != self._modulus_len or len(wrapped) != wrapped_len:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "wrapped secret has the wrong length")
        try:
            rsa_secret = self._private_key.decrypt(wrapped, OAEP)
        except ValueError:
            raise HandshakeFailed(
                HandshakeErrorCode.DECRYPT_FAILED, "cannot unwrap the session secret"
            ) from None
        if len(rsa_secret) != SECRET_LEN:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "session secret has the wrong length")
        server_random = self._random(RANDOM_LEN)
        ephemeral = X25519PrivateKey.from_private_bytes(self._random(X25519_LEN))
        head = _SERVER_HELLO_HEAD.pack(
            MSG_SERVER_HELLO, PROTOCOL_VERSION, SUITE_ID, server_random, _x25519_public_bytes(ephemeral)
        )
        transcript_hash = hashlib.sha256(message + head).digest()
        self._schedule = KeySchedule.derive(_exchange(ephemeral, client_x25519), rsa_secret, transcript_hash)
        server_hello = head + _confirm(self._schedule.server_confirm_key, transcript_hash)
        self._transcript = message + server_hello
        self._state = _State.WAIT_CLIENT_FINISHED
        return server_hello

    def receive_client_finished(self, message: bytes) -> SessionKeys:
        if self._state is not _State.WAIT_CLIENT_FINISHED or self._schedule is None:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "unexpected ClientFinished")
        self._state = _State.FAILED
        _check_size(message)
        _raise_if_error(message)
        if len(message) != CLIENT_FINISHED_LEN or message[0] != MSG_CLIENT_FINISHED:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "malformed ClientFinished")
        full_hash = hashlib.sha256(self._transcript).digest()
        expected = _confirm(self._schedule.client_confirm_key, full_hash)
        if not hmac.compare_digest(expected, message[1:]):
            raise HandshakeFailed(HandshakeErrorCode.CONFIRMATION_FAILED, "client confirmation failed")
        keys = self._schedule.server_keys(full_hash)
        self._schedule = None
        self._state = _State.DONE
        return keys
