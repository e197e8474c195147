"""The server's side of one session, without I/O (as h11 and ``websockets`` keep theirs).

Bytes in, actions out: :meth:`ServerSession.receive` takes each WebSocket message the peer
sent and returns what to do about it, and :meth:`ServerSession.seal` turns an event into
the record to send. The asyncio shell (connection.py) only moves bytes, runs timers and
the RSA unwrap in a thread, and carries the actions out; tests drive the same object
directly (``tests/harness.py``). A ResumeHello (a session ticket, PROTOCOL.md 2.7) needs
no thread: the shell only charges it to the handshake limits (:class:`Resume`).

Every way a peer can break the protocol ends in :data:`PEER_ERRORS`, the one table from
a peer's error to the close code and reason the session ends with (``websockets``'
``Protocol.parse`` does the same). Errors inside a readable envelope do not end it: they
are answered (``bad_request``, ``not_logged_in``) and the session goes on.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import Enum, auto

from cryptography.hazmat.primitives.asymmetric import rsa

from chat.protocol.codes import CloseCode, ErrorCode, Feature
from chat.protocol.envelope import Envelope, decode_request, encode_event
from chat.protocol.errors import (
    EnvelopeError,
    HandshakeErrorCode,
    HandshakeFailed,
    ProtocolError,
    RecordError,
)
from chat.protocol.handshake import MSG_RESUME_HELLO, ServerHandshake, encode_handshake_error
from chat.protocol.limits import MAX_DETAIL_CHARS
from chat.protocol.records import SecureChannel
from chat.protocol.tickets import DEFAULT_TICKET_LIFETIME, TICKET_NONCE_LEN, sealer_for

#: The reason given for a text frame, which ends the session at any step.
TEXT_FRAME = "text frames are not allowed"


class TextFrame(ProtocolError):
    """The peer sent a text WebSocket message (the protocol is binary only)."""


#: How each peer error ends the session: close code, and reason (None: the error's own
#: message, which for a handshake is also sent as a HandshakeError first).
PEER_ERRORS: dict[type[ProtocolError], tuple[CloseCode, str | None]] = {
    TextFrame: (CloseCode.UNSUPPORTED_DATA, TEXT_FRAME),
    HandshakeFailed: (CloseCode.POLICY_VIOLATION, None),
    RecordError: (CloseCode.POLICY_VIOLATION, "record failed authentication"),
}


class Phase(Enum):
    HELLO = auto()  # waiting for the ClientHello (or a ResumeHello)
    UNWRAPPING = auto()  # its RSA unwrap is running (in the shell's thread), or a resumption is admitted
    FINISHED = auto()  # waiting for the ClientFinished
    LOGIN = auto()  # records flow; only ``login`` is served
    CHAT = auto()  # logged in
    CLOSED = auto()


@dataclass(frozen=True)
class Unwrap:
    """Run :meth:`ServerSession.unwrap` on this ClientHello (slow: RSA), then hand the
    result to :meth:`ServerSession.unwrapped`."""

    hello: bytes


@dataclass(frozen=True)
class Resume:
    """A ResumeHello: if the handshake limits admit it (as they would a ClientHello),
    hand it to :meth:`ServerSession.resume` at once (cheap: no RSA, no thread)."""

    hello: bytes


@dataclass(frozen=True)
class SendHandshake:
    """Send these bytes as they are (a handshake message, in clear)."""

    data: bytes


@dataclass(frozen=True)
class Established:
    """The handshake is done: records may now be as large as envelopes need."""


@dataclass(frozen=True)
class Serve:
    """A request to hand to its handler."""

    envelope: Envelope
    #: Its plaintext size, for byte budgets.
    size: int


@dataclass(frozen=True)
class Refuse:
    """Answer ``error {code}`` (with ``re`` if ``rid`` is set); the session goes on."""

    rid: int | None
    code: ErrorCode
    detail: str | None = None


@dataclass(frozen=True)
class End:
    """Close the connection with ``code`` and ``reason``, after sending ``handshake_error``
    (in clear) if there is one."""

    code: CloseCode
    reason: str
    handshake_error: bytes | None = None


Action = Unwrap | Resume | SendHandshake | Established | Serve | Refuse | End


class ServerSession:
    """One peer's protocol state: handshake, secure channel, login. ``ticket_lifetime``
    (seconds, 0: none) is how long the session tickets it issues and accepts are good."""

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey,
        *,
        ticket_lifetime: int = DEFAULT_TICKET_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.phase = Phase.HELLO
        self._tickets = sealer_for(private_key)
        self._ticket_lifetime = ticket_lifetime
        self._clock = clock
        #: The handshake's state machine, dropped once the handshake is done (memory).
        self._machine: ServerHandshake | None = ServerHandshake(
            private_key, tickets=self._tickets, ticket_lifetime=ticket_lifetime, clock=clock
        )
        self._channel: SecureChannel | None = None
        #: Until login: what a ticket for this session would seal (PROTOCOL.md 2.7).
        self._resumption_secret = b""

    # --- bytes in ---------------------------------------------------------------------

    def receive(self, message: bytes | str) -> list[Action]:
        """What to do about one WebSocket message from the peer."""
        try:
            if isinstance(message, str):
                raise TextFrame(TEXT_FRAME)
            return self._receive(message)
        except ProtocolError as exc:
            return [self.fail(exc)]

    def _receive(self, message: bytes) -> list[Action]:
        phase = self.phase
        if phase is Phase.HELLO:
            self.phase = Phase.UNWRAPPING
            if message[:1] == bytes([MSG_RESUME_HELLO]):
                return [Resume(message)]
            return [Unwrap(message)]
        if phase is Phase.FINISHED:
            assert self._machine is not None
            keys = self._machine.receive_client_finished(message)
            self._machine = None
            self._channel = SecureChannel(keys)
            if self._ticket_lifetime > 0:
                self._resumption_secret = keys.resumption_secret
            self.phase = Phase.LOGIN
            return [Established()]
        if phase in (Phase.LOGIN, Phase.CHAT):
            assert self._channel is not None
            return [self._request(self._channel.open(message))]
        if phase is Phase.CLOSED:
            raise ProtocolError("the session has ended")
        # A message while the unwrap runs: the handshake allows none.
        raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "unexpected handshake message")

    def unwrap(self, hello: bytes) -> bytes:
        """The RSA work of the ClientHello (pure CPU: the shell runs it in a thread).
        Returns the ServerHello or raises HandshakeFailed."""
        assert self._machine is not None
        return self._machine.receive_client_hello(hello)

    def unwrapped(self, server_hello: bytes | HandshakeFailed) -> list[Action]:
        """The unwrap's outcome: send the ServerHello, or end with the failure."""
        if isinstance(server_hello, HandshakeFailed):
            return [self.fail(server_hello)]
        self.phase = Phase.FINISHED
        return [SendHandshake(server_hello)]

    def resume(self, hello: bytes, *, admitted: bool = True) -> list[Action]:
        """A ResumeHello's outcome: the ServerHello; ``SERVER_BUSY`` if the handshake
        limits did not admit it; or, for a ticket this server will not resume from, a
        HandshakeError ``RESUME_REJECTED`` after which the connection stays open for a
        full ClientHello (PROTOCOL.md 2.7)."""
        if not admitted:
            busy = HandshakeFailed(HandshakeErrorCode.SERVER_BUSY, "too many handshakes; try again later")
            return [self.fail(busy)]
        try:
            assert self._machine is not None
            server_hello = self._machine.receive_resume_hello(hello)
        except HandshakeFailed as exc:
            if exc.code is not HandshakeErrorCode.RESUME_REJECTED:
                return [self.fail(exc)]
            self.phase = Phase.HELLO
            return [SendHandshake(encode_handshake_error(exc.code, str(exc)))]
        self.phase = Phase.FINISHED
        return [SendHandshake(server_hello)]

    def _request(self, plaintext: bytes) -> Action:
        try:
            envelope = decode_request(plaintext)
        except EnvelopeError as exc:
            return Refuse(exc.rid, ErrorCode.BAD_REQUEST, str(exc)[:MAX_DETAIL_CHARS])
        rid = envelope.get("rid")
        if self.phase is Phase.LOGIN and envelope.type != "login":
            return Refuse(rid, ErrorCode.NOT_LOGGED_IN)
        if self.phase is Phase.CHAT and envelope.type == "login":
            return Refuse(rid, ErrorCode.ALREADY_LOGGED_IN)
        return Serve(envelope, len(plaintext))

    # --- state the shell reports --------------------------------------------------------

    def logged_in(self, features: Collection[str] = ()) -> bytes | None:
        """The login succeeded. Returns the encoded ``ticket`` event to deliver, when the
        client asked for Feature.TICKET and this server issues tickets; the resumption
        secret is forgotten either way."""
        self.phase = Phase.CHAT
        secret, self._resumption_secret = self._resumption_secret, b""
        if Feature.TICKET not in features or not secret:
            return None
        issued = int(self._clock())
        expires = issued + self._ticket_lifetime
        ticket = self._tickets.seal(secret, issued, expires, os.urandom(TICKET_NONCE_LEN))
        text = base64.urlsafe_b64encode(ticket).rstrip(b"=").decode("ascii")
        return encode_event("ticket", ticket=text, lifetime=self._ticket_lifetime)

    def fail(self, error: ProtocolError) -> End:
        """The one place a peer's error becomes a close code (:data:`PEER_ERRORS`)."""
        code, reason = next(
            (entry for kind, entry in PEER_ERRORS.items() if isinstance(error, kind)),
            (CloseCode.POLICY_VIOLATION, None),
        )
        handshake = self.phase in (Phase.HELLO, Phase.UNWRAPPING, Phase.FINISHED)
        self.phase = Phase.CLOSED
        if not handshake:
            return End(code, reason or str(error))
        failure = error if isinstance(error, HandshakeFailed) else HandshakeFailed(
            HandshakeErrorCode.MALFORMED, str(error)
        )
        return End(code, reason or str(error), encode_handshake_error(failure.code, str(failure)))

    # --- bytes out --------------------------------------------------------------------

    @property
    def established(self) -> bool:
        return self._channel is not None

    @property
    def sealer(self) -> Callable[[bytes], bytes] | None:
        """:meth:`seal` itself, once established (the hot path of every delivery keeps it
        to skip a call per recipient)."""
        return None if self._channel is None else self._channel.seal

    def seal(self, payload: bytes) -> bytes:
        """The record carrying one encoded event. Raises RecordError once the session's
        key has protected all it may (records.MAX_BYTES_PER_KEY)."""
        assert self._channel is not None
        return self._channel.seal(payload)
