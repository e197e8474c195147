"""The client's TLS, the outer layer of ``--tls`` (README "Connect a client").

A certificate is accepted if the system's trust store vouches for it with the host name
(a public authority's certificate); otherwise the client connects again without that
check and accepts the peer's certificate only if ``chat.tls.accepted`` says so: it is the
one pinned with ``--tls-fingerprint``, or it was issued by the server key the client
trusts (the certificate ``chat-server --tls`` makes). The RSA server key is checked by
the protocol's handshake afterwards exactly as without TLS.

Nothing here raises the client's errors: transport.py and trust.py turn the results into
the user's lines, and the probes below tell a plain server from a TLS one, so that a
wrong ``--tls`` choice is named as such instead of as a broken connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import ssl
from dataclasses import dataclass

from chat.client.known_servers import MAX_KEY_BYTES, SERVER_KEY_PATH, server_id
from chat.keys import KeyFileError
from chat.tls import cert_fingerprint, normal_cert_fingerprint

#: How long a probe of the other scheme may take.
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class TlsChoice:
    """``--tls``; ``pinned`` is the certificate fingerprint of ``--tls-fingerprint``
    (``AB:CD:...``), or None."""

    pinned: str | None = None


def tls_choice(tls: bool, pinned: str | None) -> TlsChoice | None:
    """The command line's choice: None for plain ``ws://``; ``--tls-fingerprint`` implies ``--tls``."""
    if pinned is not None:
        return TlsChoice(normal_cert_fingerprint(pinned))
    return TlsChoice() if tls else None


def verified_context() -> ssl.SSLContext:
    """The system's trust store, with the host name checked."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def unverified_context() -> ssl.SSLContext:
    """No check at all: the peer's certificate is judged afterwards with ``chat.tls.accepted``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def refused_certificate(host: str, port: int, der: bytes, choice: TlsChoice) -> str:
    """The one line for a certificate the client does not accept (exit 4)."""
    where, seen = server_id(host, port), cert_fingerprint(der)
    if choice.pinned is not None:
        return (
            f"The TLS certificate of {where} has the SHA-256 fingerprint {seen}, not {choice.pinned} "
            "as given with --tls-fingerprint: refusing to connect. If the server's certificate really "
            "changed, ask the server's owner for its new fingerprint."
        )
    return (
        f"The TLS certificate of {where} (SHA-256 {seen}) was not issued by the server key this "
        "client trusts, and no public authority vouches for it: refusing to connect. If you have "
        f"checked that fingerprint with the server's owner, rerun with --tls-fingerprint {seen}; "
        "otherwise ask the server's owner."
    )


def add_tls(uri: str) -> str:
    return f"Cannot connect to the server at {uri}: the server speaks TLS (https://, wss://); add --tls."


def drop_tls(uri: str, choice: TlsChoice) -> str:
    options = "--tls and --tls-fingerprint" if choice.pinned is not None else "--tls"
    return f"Cannot connect to the server at {uri}: the server does not speak TLS; drop {options}."


def may_be_wrong_scheme(exc: BaseException) -> bool:
    """Whether a failed connection got far enough that the other scheme may be the cause:
    not a refusal, a timeout, a name that does not resolve or a rejected certificate."""
    wrong = (ConnectionRefusedError, TimeoutError, socket.gaierror, ssl.SSLCertVerificationError)
    return not isinstance(exc, wrong)


async def speaks_tls(host: str, port: int) -> bool:
    """Whether host:port completes a TLS handshake."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=unverified_context()), PROBE_TIMEOUT
        )
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        await asyncio.wait_for(writer.wait_closed(), PROBE_TIMEOUT)
    return True


async def speaks_plain_http(host: str, port: int) -> bool:
    """Whether host:port answers a plain HTTP request."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return False
    try:
        where = server_id(host, port)
        request = f"GET {SERVER_KEY_PATH} HTTP/1.1\r\nHost: {where}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("ascii", "replace"))
        answer = await asyncio.wait_for(reader.read(5), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
    return answer == b"HTTP/"


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes:
    """The DER of the certificate the peer presented (empty if none)."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return bytes(der) if der else b""


@dataclass(frozen=True)
class FetchedKey:
    """The body of /server-key.pem fetched over https, and the certificate of that
    connection if the system's store did not vouch for it (None if it did)."""

    pem: bytes
    unvouched: bytes | None


def _get_key(host: str, port: int, context: ssl.SSLContext, timeout: float) -> tuple[bytes, bytes]:
    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        connection.connect()
        assert isinstance(connection.sock, ssl.SSLSocket)
        der = peer_certificate(connection.sock)
        connection.request("GET", SERVER_KEY_PATH, headers={"Host": server_id(host, port)})
        response = connection.getresponse()
        if response.status != 200:
            raise OSError(f"the server did not provide its key (HTTP {response.status})")
        return response.read(MAX_KEY_BYTES + 1), der
    except http.client.HTTPException as exc:
        raise OSError(f"not a chat server ({type(exc).__name__})") from None
    finally:
        connection.close()


async def fetch_key_over_tls(host: str, port: int, timeout: float = 10.0) -> FetchedKey:
    """GET /server-key.pem over https: verified by the system's store if it can be,
    otherwise without verification (the caller then judges ``unvouched``). Raises OSError,
    or KeyFileError for an implausibly large answer."""
    try:
        pem, _ = await asyncio.to_thread(_get_key, host, port, verified_context(), timeout)
        fetched = FetchedKey(pem, None)
    except ssl.SSLCertVerificationError:
        pem, der = await asyncio.to_thread(_get_key, host, port, unverified_context(), timeout)
        fetched = FetchedKey(pem, der)
    if len(fetched.pem) > MAX_KEY_BYTES:
        raise KeyFileError("the server's key is implausibly large")
    return fetched
