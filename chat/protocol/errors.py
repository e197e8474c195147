"""Exceptions raised by the protocol core. Each ends the session or rejects one input."""

from __future__ import annotations

from enum import IntEnum

from chat.safe_text import printable


class ProtocolError(Exception):
    """Base class for every error the protocol core raises on bad input."""


class HandshakeErrorCode(IntEnum):
    """Codes carried by a HandshakeError message (PROTOCOL.md)."""

    MALFORMED = 1
    VERSION_MISMATCH = 2
    UNSUPPORTED_SUITE = 3
    UNKNOWN_SERVER_KEY = 4
    DECRYPT_FAILED = 5
    CONFIRMATION_FAILED = 6
    TIMEOUT = 7
    SERVER_BUSY = 8
    #: The server will not resume from the ticket of a ResumeHello (expired, another
    #: key, a wrong binder, not its own): the connection stays open for a ClientHello.
    RESUME_REJECTED = 9


class HandshakeFailed(ProtocolError):
    """The handshake cannot complete. ``code`` says why; ``remote`` is true when the
    peer reported the failure (a HandshakeError message) rather than us detecting it."""

    def __init__(
        self,
        code: HandshakeErrorCode,
        message: str,
        *,
        remote: bool = False,
        peer_version: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.remote = remote
        self.peer_version = peer_version


class RecordError(ProtocolError):
    """A record failed to decrypt or authenticate: altered, replayed, reordered,
    dropped or truncated. The channel is unusable afterwards."""


class EnvelopeError(ProtocolError):
    """An envelope is malformed: bad framing, bad JSON, unknown type, or a field that
    is missing, of the wrong type, or too long. ``field`` names the culprit if known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        # Messages quote names taken from the peer's JSON, which may hold lone surrogates
        # (``\ud800`` escapes): keep them valid text, so they can go back in a ``detail``.
        super().__init__(_printable(message))
        self.field = None if field is None else _printable(field)
        #: The request's ``rid``, when the header was readable and had a valid one: the
        #: ``bad_request`` reply then carries it as ``re`` (PROTOCOL.md section 6).
        self.rid: int | None = None


def _printable(text: str) -> str:
    """Lone surrogates escaped, and every control or format character shown visibly: the
    message goes back to the peer as a ``detail`` and into the server's log."""
    return printable(text.encode("utf-8", "backslashreplace").decode("utf-8"))
