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

A client holding a session ticket (tickets.py) may open with a **ResumeHello** instead:
the ticket, a fresh X25519 share and a binder proving it holds the ticket's resumption
secret. The server opens the ticket (no RSA), and both feed ``x25519_shared ||
resumption_secret`` to HKDF under another label; ServerHello and ClientFinished are as
above. A ticket the server refuses is answered ``RESUME_REJECTED`` and the connection
stays open for a full ClientHello (PROTOCOL.md 2.7).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable
from enum import Enum, auto

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chat.keys import fingerprint_bytes
from chat.protocol.errors import HandshakeErrorCode, HandshakeFailed
from chat.protocol.key_schedule import KEY_EXPANSION_INFO as KEY_EXPANSION_INFO
from chat.protocol.key_schedule import RESUMED_KEY_EXPANSION_INFO as RESUMED_KEY_EXPANSION_INFO
from chat.protocol.key_schedule import KeySchedule as KeySchedule
from chat.protocol.key_schedule import SessionKeys as SessionKeys
from chat.protocol.limits import MAX_DETAIL_CHARS, MAX_HANDSHAKE_BYTES, PROTOCOL_VERSION, SUITE_ID
from chat.protocol.tickets import MAX_TICKET_BYTES, ClientTicket, TicketRejected, TicketSealer, binder

RandomSource = Callable[[int], bytes]

MSG_CLIENT_HELLO = 0x01
MSG_SERVER_HELLO = 0x02
MSG_CLIENT_FINISHED = 0x03
MSG_RESUME_HELLO = 0x04
MSG_HANDSHAKE_ERROR = 0x0F

RANDOM_LEN = 32
X25519_LEN = 32
FINGERPRINT_LEN = 32
SECRET_LEN = 32
CONFIRM_LEN = 32

BINDER_LEN = 32

# type, version, suite, client_random, client_x25519, fingerprint, wrapped_len
_CLIENT_HELLO_HEAD = struct.Struct(f">BHH{RANDOM_LEN}s{X25519_LEN}s{FINGERPRINT_LEN}sH")
# A ResumeHello starts the same way, with ticket_len where wrapped_len is; the ticket and
# the binder follow.
_RESUME_HELLO_HEAD = _CLIENT_HELLO_HEAD
# type, version, suite, server_random, server_x25519 (the confirm tag follows)
_SERVER_HELLO_HEAD = struct.Struct(f">BHH{RANDOM_LEN}s{X25519_LEN}s")
SERVER_HELLO_LEN = _SERVER_HELLO_HEAD.size + CONFIRM_LEN
CLIENT_FINISHED_LEN = 1 + CONFIRM_LEN
# type, code, supported version, reason length (the UTF-8 reason follows)
_ERROR_HEAD = struct.Struct(">BBHH")

OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


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
    and leaves the machine FAILED. With ``resume`` the first message is a ResumeHello
    offering that ticket; a server that refuses it answers RESUME_REJECTED (raised by
    ``receive_server_hello``), and the caller goes on with a new, full ClientHandshake on
    the same connection."""

    def __init__(
        self,
        server_public_key: rsa.RSAPublicKey,
        *,
        random_source: RandomSource = os.urandom,
        resume: ClientTicket | None = None,
    ) -> None:
        self._server_key = server_public_key
        self._random = random_source
        self._state = _State.START
        self._client_hello = b""
        self._ephemeral: X25519PrivateKey | None = None
        self._secret = b""
        self._resume = resume
        self.keys: SessionKeys | None = None

    @property
    def resuming(self) -> bool:
        """Whether this handshake offers a ticket (a ResumeHello)."""
        return self._resume is not None

    def _wrap(self, secret: bytes) -> bytes:
        """RSA-OAEP encryption of the session secret (randomised; test vectors override)."""
        return self._server_key.encrypt(secret, OAEP)

    def client_hello(self) -> bytes:
        """The first message: a ClientHello, or with a ticket a ResumeHello."""
        if self._state is not _State.START:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "client_hello() called twice")
        client_random = self._random(RANDOM_LEN)
        self._ephemeral = X25519PrivateKey.from_private_bytes(self._random(X25519_LEN))
        if self._resume is not None:
            self._client_hello = resume_hello(
                self._resume, client_random, _x25519_public_bytes(self._ephemeral)
            )
            self._secret = self._resume.secret
        else:
            self._secret = self._random(SECRET_LEN)
            wrapped = self._wrap(self._secret)
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
        info = KEY_EXPANSION_INFO if self._resume is None else RESUMED_KEY_EXPANSION_INFO
        schedule = KeySchedule.derive(
            _exchange(self._ephemeral, server_x25519), self._secret, transcript_hash, info
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
        self._secret = b""
        self._state = _State.DONE
        return finished


def resume_hello(ticket: ClientTicket, client_random: bytes, client_x25519_public: bytes) -> bytes:
    """``0x04 || version || suite || client_random || client X25519 public key ||
    fingerprint || ticket_len || ticket || binder``, the binder being an HMAC of all
    before it under a key from the resumption secret (PROTOCOL.md 2.7)."""
    head = _RESUME_HELLO_HEAD.pack(
        MSG_RESUME_HELLO,
        PROTOCOL_VERSION,
        SUITE_ID,
        client_random,
        client_x25519_public,
        ticket.fingerprint,
        len(ticket.ticket),
    )
    body = head + ticket.ticket
    return body + binder(ticket.secret, body)


class ServerHandshake:
    """Server side: ``receive_client_hello(msg)`` (or ``receive_resume_hello(msg)``)
    returns the ServerHello to send; ``receive_client_finished(msg)`` returns the session
    keys. Any failure raises HandshakeFailed; the shell then sends
    ``encode_handshake_error`` and closes, except after RESUME_REJECTED, when the machine
    waits for a full ClientHello (once: a second ResumeHello is MALFORMED)."""

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey,
        *,
        random_source: RandomSource = os.urandom,
        tickets: TicketSealer | None = None,
        ticket_lifetime: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._private_key = private_key
        self._fingerprint = tickets.fingerprint if tickets is not None else fingerprint_bytes(
            private_key.public_key()
        )
        self._modulus_len = (private_key.key_size + 7) // 8
        self._random = random_source
        self._tickets = tickets
        self._ticket_lifetime = ticket_lifetime
        self._clock = clock
        self._state = _State.WAIT_CLIENT_HELLO
        self._resume_refused = False
        self._schedule: KeySchedule | None = None
        self._transcript = b""

    def _check_hello_head(self, message: bytes, kind: int, name: str) -> tuple[bytes, bytes, int]:
        """The checks a ClientHello and a ResumeHello share, in the documented order;
        returns the client's X25519 public key, its fingerprint and the length field."""
        _check_size(message)
        if len(message) < 5 or message[0] != kind:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, f"expected a {name}")
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
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, f"truncated {name}")
        _, _, _, _client_random, client_x25519, fingerprint, length = _CLIENT_HELLO_HEAD.unpack_from(message)
        if not hmac.compare_digest(fingerprint, self._fingerprint):
            raise HandshakeFailed(
                HandshakeErrorCode.UNKNOWN_SERVER_KEY,
                "the client expects a different server key (fingerprint mismatch)",
            )
        return client_x25519, fingerprint, length

    def receive_client_hello(self, message: bytes) -> bytes:
        if self._state is not _State.WAIT_CLIENT_HELLO:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "unexpected ClientHello")
        self._state = _State.FAILED
        client_x25519, _, wrapped_len = self._check_hello_head(message, MSG_CLIENT_HELLO, "ClientHello")
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
        return self._server_hello(message, client_x25519, rsa_secret, KEY_EXPANSION_INFO)

    def receive_resume_hello(self, message: bytes) -> bytes:
        """The ServerHello for a ResumeHello whose ticket this server issued, is still
        good and whose binder proves the sender holds its secret. A ticket refused for any
        of these raises RESUME_REJECTED and leaves the machine waiting for a ClientHello;
        a malformed message, another server key or a second ResumeHello fail as usual."""
        if self._state is not _State.WAIT_CLIENT_HELLO or self._resume_refused:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "unexpected ResumeHello")
        self._state = _State.FAILED
        client_x25519, _, ticket_len = self._check_hello_head(message, MSG_RESUME_HELLO, "ResumeHello")
        end = _RESUME_HELLO_HEAD.size + ticket_len
        if not 0 < ticket_len <= MAX_TICKET_BYTES or len(message) != end + BINDER_LEN:
            raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "malformed ResumeHello")
        try:
            if self._tickets is None or self._ticket_lifetime <= 0:
                raise TicketRejected("this server does not resume sessions")
            contents = self._tickets.open(
                message[_RESUME_HELLO_HEAD.size : end], self._clock(), self._ticket_lifetime
            )
            if not hmac.compare_digest(binder(contents.secret, message[:end]), message[end:]):
                raise TicketRejected("the binder does not match the ticket")
        except TicketRejected as exc:
            self._state = _State.WAIT_CLIENT_HELLO
            self._resume_refused = True
            raise HandshakeFailed(HandshakeErrorCode.RESUME_REJECTED, str(exc)) from None
        return self._server_hello(message, client_x25519, contents.secret, RESUMED_KEY_EXPANSION_INFO)

    def _server_hello(self, hello: bytes, client_x25519: bytes, secret: bytes, info: bytes) -> bytes:
        server_random = self._random(RANDOM_LEN)
        ephemeral = X25519PrivateKey.from_private_bytes(self._random(X25519_LEN))
        head = _SERVER_HELLO_HEAD.pack(
            MSG_SERVER_HELLO, PROTOCOL_VERSION, SUITE_ID, server_random, _x25519_public_bytes(ephemeral)
        )
        transcript_hash = hashlib.sha256(hello + head).digest()
        shared = _exchange(ephemeral, client_x25519)
        self._schedule = KeySchedule.derive(shared, secret, transcript_hash, info)
        server_hello = head + _confirm(self._schedule.server_confirm_key, transcript_hash)
        self._transcript = hello + server_hello
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
        self._transcript = b""
        self._state = _State.DONE
        return keys
