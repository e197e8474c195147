"""The failures a user of the client can meet, each as one line and an exit code
(``ClientError``), and how a lost connection, a failed connect or a failed handshake is
put in those words. transport.py raises them (and re-exports them)."""

from __future__ import annotations

import socket
import ssl

from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat.keys import fingerprint
from chat.protocol.errors import HandshakeErrorCode, HandshakeFailed
from chat.protocol.limits import PROTOCOL_VERSION
from chat.safe_text import printable

EXIT_CANNOT_CONNECT = 3
EXIT_BAD_SERVER_KEY = 4
EXIT_DISCONNECTED = 5
#: The close code this client uses when the server sends something invalid.
CLOSE_PROTOCOL_ERROR = 1002


class ClientError(Exception):
    """A failure to show the user as one line, then exit with ``exit_code``."""

    def __init__(self, message: str, exit_code: int) -> None:
        # Messages may quote the server's words (a close reason, a handshake error):
        # shown on a terminal, so made harmless first.
        message = printable(message)
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Disconnected(ClientError):
    """The connection ended. ``code``/``reason`` come from the server's close frame
    (``code`` is None if the connection was lost without one), or are the ones this client
    closed with when the server broke the protocol (``CLOSE_PROTOCOL_ERROR``)."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message, EXIT_DISCONNECTED)
        self.code = code
        self.reason = reason


class ResumeNotUnderstood(ClientError):
    """A server answered a ResumeHello ``MALFORMED`` (one without session tickets)."""


def disconnected(exc: ConnectionClosed) -> Disconnected:
    close = exc.rcvd
    if close is None:
        return Disconnected("Disconnected by the server: connection lost")
    return Disconnected(
        f"Disconnected by the server: {close.reason or f'connection closed (code {close.code})'}",
        close.code,
        close.reason,
    )


def connect_reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} seconds"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, InvalidStatus):
        return f"not a chat server (HTTP status {exc.response.status_code})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def handshake_error(exc: HandshakeFailed, uri: str, key: rsa.RSAPublicKey, key_label: str) -> ClientError:
    """The user's line for a failed handshake. A HandshakeError from the server arrives
    before any key is confirmed, so anyone on the network could have sent it: it is
    reported as what the server said, never as proof that the server's key changed."""
    code = exc.code
    expected = f"{key_label} (fingerprint {fingerprint(key)})"
    if code is HandshakeErrorCode.UNKNOWN_SERVER_KEY:
        return ClientError(
            f"The server at {uri} answered that it does not hold {expected} (an unauthenticated "
            "answer): refusing to connect. If its key really changed, get the new public key "
            "from the server's operator.",
            EXIT_BAD_SERVER_KEY,
        )
    if code in (HandshakeErrorCode.DECRYPT_FAILED, HandshakeErrorCode.CONFIRMATION_FAILED):
        return ClientError(
            f"The handshake with {uri} failed: messages were altered in transit, or the server "
            f"does not hold {expected}: refusing to connect.",
            EXIT_BAD_SERVER_KEY,
        )
    if code is HandshakeErrorCode.VERSION_MISMATCH:
        return ClientError(
            f"Protocol version mismatch: the server speaks version {exc.peer_version}, "
            f"this client speaks {PROTOCOL_VERSION}.",
            EXIT_BAD_SERVER_KEY,
        )
    if code is HandshakeErrorCode.SERVER_BUSY:
        return ClientError(
            f"Cannot connect to the server at {uri}: the server is busy ({exc})", EXIT_CANNOT_CONNECT
        )
    return ClientError(f"Handshake with the server failed: {exc}", EXIT_BAD_SERVER_KEY)
