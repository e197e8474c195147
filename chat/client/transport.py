"""The client's asyncio shell around the sans-I/O protocol core.

``open_session`` connects, runs the handshake and returns a ``ClientSession`` that sends
requests and receives events. Every failure a user can meet is raised as ``ClientError``
with one user-facing line and the process exit code to use, so the terminal client and
tests handle them alike.

Given a :class:`TicketWallet`, a session keeps the session ticket the server sends (with
the feature ``ticket``) together with its resumption secret, in memory only, and the next
``open_session`` with that wallet resumes with it (a ResumeHello: no RSA on the server,
PROTOCOL.md 2.7), falling back to a full handshake without a word when the server refuses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import ssl
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from chat.client.failures import CLOSE_PROTOCOL_ERROR as CLOSE_PROTOCOL_ERROR
from chat.client.failures import EXIT_BAD_SERVER_KEY as EXIT_BAD_SERVER_KEY
from chat.client.failures import EXIT_CANNOT_CONNECT as EXIT_CANNOT_CONNECT
from chat.client.failures import EXIT_DISCONNECTED as EXIT_DISCONNECTED
from chat.client.failures import ClientError as ClientError
from chat.client.failures import Disconnected as Disconnected
from chat.client.failures import ResumeNotUnderstood, connect_reason, disconnected, handshake_error
from chat.client.tls_layer import (
    TlsChoice,
    add_tls,
    drop_tls,
    may_be_wrong_scheme,
    peer_certificate,
    refused_certificate,
    speaks_plain_http,
    speaks_tls,
    unverified_context,
    verified_context,
)
from chat.keys import fingerprint_bytes
from chat.protocol.envelope import MAX_REQUEST_ID, Envelope, decode_event, encode_request
from chat.protocol.errors import EnvelopeError, HandshakeErrorCode, HandshakeFailed, RecordError
from chat.protocol.handshake import ClientHandshake, encode_handshake_error
from chat.protocol.limits import MAX_FRAME_BYTES
from chat.protocol.records import SecureChannel
from chat.protocol.tickets import ClientTicket, TicketWallet
from chat.tls import accepted

#: websockets >= 15 honours proxy environment variables by default; a LAN chat must not.
_NO_PROXY: dict[str, Any] = {"proxy": None} if "proxy" in inspect.signature(connect).parameters else {}


def server_uri(host: str, port: int, tls: bool = False) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{'wss' if tls else 'ws'}://{host}:{port}"


class ClientSession:
    """One established session. ``send`` numbers each request; ``recv`` returns events
    in order and keeps track of which requests are still unanswered."""

    def __init__(
        self,
        websocket: ClientConnection,
        channel: SecureChannel,
        uri: str,
        *,
        tickets: TicketWallet | None = None,
        fingerprint: bytes = b"",
        resumption_secret: bytes = b"",
        resumed: bool = False,
    ) -> None:
        self.uri = uri
        self._ws = websocket
        self._channel = channel
        #: Whether the handshake resumed with a session ticket (no RSA on the server).
        self.resumed = resumed
        #: Where the server's ``ticket`` for this session goes, with its secret.
        self._tickets = tickets
        self._fingerprint = fingerprint
        self._resumption_secret = resumption_secret
        self._send_lock = asyncio.Lock()
        self._next_rid = 1
        self._outstanding: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._replies: dict[int, asyncio.Future[Envelope]] = {}
        #: Requests whose reply goes only to the ``request`` caller, not to ``recv``.
        self._claimed: set[int] = set()
        self._failure: ClientError | None = None

    @property
    def outstanding(self) -> frozenset[int]:
        """Request ids sent and not yet answered."""
        return frozenset(self._outstanding)

    async def send(self, kind: str, *, body: bytes = b"", **fields: Any) -> int:
        """Encode, seal and send one request; returns its ``rid``.

        Raises EnvelopeError (nothing sent) if the request does not fit the schema,
        and ClientError if the connection is gone."""
        return await self._send(kind, fields, body, None)

    async def send_unanswered(self, kind: str, *, body: bytes = b"", **fields: Any) -> None:
        """Send a request the server never answers (``file_chunk``, ``file_ack``): no
        ``rid``, so nothing is added to the outstanding requests ``wait_idle`` waits for."""
        data = encode_request(kind, body=body, **fields)
        await self._seal_and_send(data)

    async def request(self, kind: str, *, body: bytes = b"", claim: bool = False, **fields: Any) -> Envelope:
        """Send one request and wait for its reply. The reply is also returned by
        ``recv`` as usual (so this needs another task calling ``recv``), unless ``claim``
        is set: then only the caller sees it, for replies it shows in its own words."""
        return await (await self.start_request(kind, body=body, claim=claim, **fields))

    async def start_request(
        self, kind: str, *, body: bytes = b"", claim: bool = False, **fields: Any
    ) -> asyncio.Future[Envelope]:
        """Send one request now; the returned future is its reply (see ``request``)."""
        reply: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        await self._send(kind, fields, body, reply, claim=claim)
        return reply

    async def _send(
        self,
        kind: str,
        fields: dict[str, Any],
        body: bytes,
        reply: asyncio.Future[Envelope] | None,
        *,
        claim: bool = False,
    ) -> int:
        if self._failure is not None:
            raise self._failure
        rid = self._next_rid
        data = encode_request(kind, body=body, rid=rid, **fields)
        self._next_rid = rid + 1 if rid < MAX_REQUEST_ID else 1
        # Registered before sending: the reply may be received before send() returns.
        self._outstanding.add(rid)
        self._idle.clear()
        if reply is not None:
            self._replies[rid] = reply
        if claim:
            self._claimed.add(rid)
        await self._seal_and_send(data)
        return rid

    async def _seal_and_send(self, data: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        # Records carry implicit sequence numbers: seal and send must not interleave.
        async with self._send_lock:
            try:
                await self._ws.send(self._channel.seal(data))
            except ConnectionClosed as exc:
                raise self._fail(disconnected(exc)) from None

    async def recv(self) -> Envelope:
        """The next event (replies claimed by ``request`` are skipped). Raises
        Disconnected when the connection ends, and ClientError if the server sends
        something that is not a valid record."""
        while True:
            event = await self._recv_one()
            rid = event.get("re")
            if rid is None or rid not in self._claimed:
                return event
            self._claimed.discard(rid)

    async def _recv_one(self) -> Envelope:
        event = await self._recv_record()
        while event.type == "ticket" and "re" not in event.fields:
            self._keep_ticket(event)  # for the transport, not the user
            event = await self._recv_record()
        rid = event.get("re")
        if rid is not None:
            self._outstanding.discard(rid)
            if not self._outstanding:
                self._idle.set()
            reply = self._replies.pop(rid, None)
            if reply is not None and not reply.done():
                reply.set_result(event)
        return event

    async def _recv_record(self) -> Envelope:
        if self._failure is not None:
            raise self._failure
        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            raise self._fail(disconnected(exc)) from None
        if isinstance(message, str):
            raise await self._abort("the server sent a text message")
        try:
            return decode_event(self._channel.open(message))
        except (RecordError, EnvelopeError) as exc:
            raise await self._abort(f"invalid message from the server ({exc})") from None

    def _keep_ticket(self, event: Envelope) -> None:
        """Keep the server's session ticket with this session's resumption secret (the
        secret goes with the first ticket only: a session gets one)."""
        secret, self._resumption_secret = self._resumption_secret, b""
        if self._tickets is None or not secret:
            return
        text: str = event["ticket"]
        try:
            ticket = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return  # the schema admits no such text; a ticket is an optimisation anyway
        self._tickets.keep(ticket, secret, self._fingerprint, float(event["lifetime"]))

    async def wait_idle(self) -> None:
        """Return once every request sent so far has been answered (someone must be
        calling ``recv``). Raises the session's failure if it ends first."""
        await self._idle.wait()
        if self._outstanding and self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        await self._ws.close()

    def _fail(self, error: ClientError) -> ClientError:
        self._failure = error
        self._idle.set()  # wake waiters; wait_idle re-raises
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(error)
        self._replies.clear()
        self._claimed.clear()
        return error

    async def _abort(self, reason: str) -> ClientError:
        await self._ws.close(CLOSE_PROTOCOL_ERROR, "protocol error")
        return self._fail(Disconnected(f"Disconnected: {reason}", CLOSE_PROTOCOL_ERROR, reason))


async def _handshake(
    websocket: ClientConnection, key: rsa.RSAPublicKey, ticket: ClientTicket | None
) -> tuple[ClientHandshake, SecureChannel]:
    """The handshake: resumed with ``ticket`` if given, unless the server answers
    RESUME_REJECTED; then a full one on the same connection (PROTOCOL.md 2.7)."""
    if ticket is not None:
        handshake = ClientHandshake(key, resume=ticket)
        try:
            return handshake, await _exchange_hellos(websocket, handshake)
        except HandshakeFailed as exc:
            if exc.code is not HandshakeErrorCode.RESUME_REJECTED or not exc.remote:
                raise
    handshake = ClientHandshake(key)
    return handshake, await _exchange_hellos(websocket, handshake)


async def _exchange_hellos(websocket: ClientConnection, handshake: ClientHandshake) -> SecureChannel:
    await websocket.send(handshake.client_hello())
    reply = await websocket.recv()
    if isinstance(reply, str):
        raise HandshakeFailed(HandshakeErrorCode.MALFORMED, "a text message instead of a ServerHello")
    await websocket.send(handshake.receive_server_hello(reply))
    assert handshake.keys is not None
    return SecureChannel(handshake.keys)


async def open_session(
    host: str,
    port: int,
    server_public_key: rsa.RSAPublicKey,
    *,
    connect_timeout: float = 10,
    key_label: str = "the expected key",
    tls: TlsChoice | None = None,
    tickets: TicketWallet | None = None,
) -> ClientSession:
    """Connect to ``ws://host:port/`` (``wss://`` with ``tls``) and complete the handshake.

    ``key_label`` names where ``server_public_key`` came from (a PEM path) in the
    wrong-key message. With ``tickets``, resume with the ticket kept for this key if
    there is one, and keep the one this session gets. Raises ClientError with a
    user-facing message."""
    ticket = tickets.take(fingerprint_bytes(server_public_key)) if tickets is not None else None
    try:
        return await _open(host, port, server_public_key, connect_timeout, key_label, tls, tickets, ticket)
    except ResumeNotUnderstood:
        # A server without tickets answered MALFORMED and closed: once more, in full.
        return await _open(host, port, server_public_key, connect_timeout, key_label, tls, tickets, None)


async def _open(
    host: str,
    port: int,
    server_public_key: rsa.RSAPublicKey,
    connect_timeout: float,
    key_label: str,
    tls: TlsChoice | None,
    tickets: TicketWallet | None,
    ticket: ClientTicket | None,
) -> ClientSession:
    uri = server_uri(host, port, tls is not None)
    websocket = await _connect(host, port, uri, connect_timeout, tls)
    if websocket is None:
        assert tls is not None  # the system's store did not vouch for the certificate
        websocket = await _connect(host, port, uri, connect_timeout, tls, verify=False)
        assert websocket is not None
        der = peer_certificate(websocket.transport.get_extra_info("ssl_object"))
        if not accepted(der, server_public_key, tls.pinned):
            await websocket.close()
            raise ClientError(refused_certificate(host, port, der, tls), EXIT_BAD_SERVER_KEY)
    try:
        handshake, channel = await asyncio.wait_for(
            _handshake(websocket, server_public_key, ticket), connect_timeout
        )
    except HandshakeFailed as exc:
        if not exc.remote:
            # Tell the server why, as PROTOCOL.md asks; it may be gone already.
            with contextlib.suppress(ConnectionClosed):
                await websocket.send(encode_handshake_error(exc.code, str(exc)))
        await websocket.close()
        error = handshake_error(exc, uri, server_public_key, key_label)
        if ticket is not None and exc.remote and exc.code is HandshakeErrorCode.MALFORMED:
            raise ResumeNotUnderstood(error.message, error.exit_code) from None
        raise error from None
    except ConnectionClosed as exc:
        raise disconnected(exc) from None
    except (TimeoutError, asyncio.TimeoutError):  # noqa: UP041 (distinct on Python 3.10)
        await websocket.close()
        raise ClientError(
            f"Cannot connect to the server at {uri}: no handshake answer within {connect_timeout:g} seconds",
            EXIT_CANNOT_CONNECT,
        ) from None
    keys = handshake.keys
    assert keys is not None
    return ClientSession(
        websocket, channel, uri, tickets=tickets, fingerprint=fingerprint_bytes(server_public_key),
        resumption_secret=keys.resumption_secret, resumed=handshake.resuming,
    )  # fmt: skip


async def _connect(
    host: str, port: int, uri: str, timeout: float, tls: TlsChoice | None, *, verify: bool = True
) -> ClientConnection | None:
    """The WebSocket connection, over TLS with ``tls``: verified by the system's store, or
    not at all (``verify`` False). None if that verification failed: the caller judges the
    certificate on an unverified connection."""
    options: dict[str, Any] = {}
    if tls is not None:
        options["ssl"] = verified_context() if verify else unverified_context()
    try:
        options.update(max_size=MAX_FRAME_BYTES, compression=None, open_timeout=timeout, **_NO_PROXY)
        return await connect(uri + "/", **options)
    except ssl.SSLCertVerificationError:
        if tls is None or not verify:
            raise
        return None
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        message = f"Cannot connect to the server at {uri}: {connect_reason(exc, timeout)}"
        if may_be_wrong_scheme(exc) and not isinstance(exc, InvalidStatus):
            if tls is None and await speaks_tls(host, port):
                message = add_tls(uri)
            elif tls is not None and await speaks_plain_http(host, port):
                message = drop_tls(uri, tls)
        raise ClientError(message, EXIT_CANNOT_CONNECT) from None
