"""The handshake work alone: the server's side of full and resumed handshakes, in this
process and thread, without the network (scenario 3's second figure).

End to end, every handshake also pays for a TCP connection, the HTTP upgrade and the
closing handshake, on both the server and the load generators, and these 2 cores share
all of it; this measures what a session ticket takes away: the RSA decryption."""

from __future__ import annotations

import base64
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from chat.keys import fingerprint_bytes
from chat.protocol.envelope import decode_event
from chat.protocol.handshake import ClientHandshake
from chat.protocol.records import SecureChannel
from chat.protocol.tickets import ClientTicket
from chat.server.session import Established, Resume, SendHandshake, ServerSession, Unwrap


def _handshake(
    key: rsa.RSAPrivateKey, ticket: ClientTicket | None = None
) -> tuple[float, ServerSession, ClientHandshake]:
    """One handshake, full or resumed with ``ticket``; the server's CPU seconds for it."""
    client = ClientHandshake(key.public_key(), resume=ticket)
    hello = client.client_hello()
    start = time.process_time()
    server = ServerSession(key)
    (first,) = server.receive(hello)
    if ticket is None:
        assert isinstance(first, Unwrap)
        (answer,) = server.unwrapped(server.unwrap(first.hello))
    else:
        assert isinstance(first, Resume)
        (answer,) = server.resume(first.hello)
    spent = time.process_time() - start
    assert isinstance(answer, SendHandshake)
    finished = client.receive_server_hello(answer.data)
    start = time.process_time()
    actions = server.receive(finished)
    spent += time.process_time() - start
    assert any(isinstance(a, Established) for a in actions)
    return spent, server, client


def _ticket(key: rsa.RSAPrivateKey) -> ClientTicket:
    _, server, client = _handshake(key)
    assert client.keys is not None
    issued = server.logged_in({"ticket"})
    assert issued is not None
    event = decode_event(SecureChannel(client.keys).open(server.seal(issued)))
    raw = base64.urlsafe_b64decode(event["ticket"] + "==")
    return ClientTicket(raw, client.keys.resumption_secret, fingerprint_bytes(key.public_key()), float("inf"))


def measure(key: rsa.RSAPrivateKey, count: int) -> dict[str, Any]:
    """Server CPU per full and per resumed handshake, ``count`` of each."""
    ticket = _ticket(key)
    full = sum(_handshake(key)[0] for _ in range(count)) / count
    resumed = sum(_handshake(key, ticket)[0] for _ in range(count)) / count
    return {"count": count, "full_us": round(full * 1e6, 1), "resumed_us": round(resumed * 1e6, 1),
            "ratio": round(full / resumed, 1)}
