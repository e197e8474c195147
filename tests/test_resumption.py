"""Session tickets and the ResumeHello (PROTOCOL.md section 2.7): a reconnecting client
skips the server's RSA decryption. The core (ServerSession, ClientHandshake, the real
handlers through tests/harness.py) with a fixed clock, then real server processes with
the terminal client's transport (chat/client/transport.py).

What must hold: a ticket round-trips and a resumed session works and gets a new ticket;
tickets expire; they are bound to the server key; a captured ticket is useless without
its resumption secret; a garbled or refused ticket falls back to a full handshake on the
same connection, and the client still gets in."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
import reference_client as ref
import session_helpers
from Crypto.Cipher import AES
from Crypto.PublicKey import RSA
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_harness import ServerProcess
from harness import MemoryPeer, MemoryServer, memory_server

from chat.client.transport import open_session
from chat.keys import fingerprint_bytes, generate_private_key, load_private_key
from chat.protocol.codes import CloseCode
from chat.protocol.envelope import decode_event, encode_request
from chat.protocol.errors import HandshakeErrorCode
from chat.protocol.handshake import ClientHandshake, decode_handshake_error, encode_handshake_error
from chat.protocol.records import SecureChannel
from chat.protocol.tickets import TICKET_LEN, ClientTicket, TicketWallet, sealer_for
from chat.server.session import End, Established, Resume, SendHandshake, ServerSession, Unwrap

TICKET = ["ticket"]


@pytest.fixture(scope="module")
def private_key(key_pair: tuple[Path, Path]) -> rsa.RSAPrivateKey:
    return load_private_key(key_pair[0])


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return generate_private_key(2048)


class Clock:
    """A wall clock the test moves by hand (tickets carry epoch seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the core -----------------------------------------------------------------------------


def full_handshake(session: ServerSession, key: rsa.RSAPrivateKey) -> tuple[SecureChannel, bytes]:
    """A full handshake with ``session``; the client's channel and resumption secret."""
    client = ClientHandshake(key.public_key())
    (unwrap,) = session.receive(client.client_hello())
    assert isinstance(unwrap, Unwrap)
    (hello,) = session.unwrapped(session.unwrap(unwrap.hello))
    assert isinstance(hello, SendHandshake)
    assert session.receive(client.receive_server_hello(hello.data)) == [Established()]
    assert client.keys is not None
    return SecureChannel(client.keys), client.keys.resumption_secret


def ticket_of(
    session: ServerSession, channel: SecureChannel, secret: bytes, key: rsa.RSAPrivateKey
) -> ClientTicket:
    """Log in (as far as the session core goes) asking for tickets; the ticket the client
    keeps, built from the ``ticket`` event the session issues."""
    payload = session.logged_in(TICKET)
    assert payload is not None
    event = decode_event(channel.open(session.seal(payload)))
    assert event.type == "ticket" and set(event.fields) == {"ticket", "lifetime"}
    text = event["ticket"]
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    assert len(raw) == TICKET_LEN
    return ClientTicket(raw, secret, fingerprint_bytes(key.public_key()), float("inf"))


def issue(key: rsa.RSAPrivateKey, clock: Clock, lifetime: int = 3600) -> ClientTicket:
    session = ServerSession(key, ticket_lifetime=lifetime, clock=clock)
    channel, secret = full_handshake(session, key)
    return ticket_of(session, channel, secret, key)


def resume(
    session: ServerSession, key: rsa.RSAPublicKey, ticket: ClientTicket, *, admitted: bool = True
) -> tuple[ClientHandshake, list[Any]]:
    """Send a ResumeHello; the client machine and the server's answer to it."""
    client = ClientHandshake(key, resume=ticket)
    (action,) = session.receive(client.client_hello())
    assert action == Resume(action.hello)  # never an Unwrap: no RSA, no crypto thread
    return client, session.resume(action.hello, admitted=admitted)


def resumed_ok(session: ServerSession, key: rsa.RSAPrivateKey, ticket: ClientTicket) -> SecureChannel:
    client, answer = resume(session, key.public_key(), ticket)
    (hello,) = answer
    assert isinstance(hello, SendHandshake) and hello.data[0] == 0x02, answer
    assert session.receive(client.receive_server_hello(hello.data)) == [Established()]
    assert client.keys is not None and client.resuming
    return SecureChannel(client.keys)


def rejected(answer: list[Any], why: str) -> None:
    """The answer is RESUME_REJECTED, sent as a plain handshake message: no close."""
    (message,) = answer
    assert isinstance(message, SendHandshake), answer
    error = decode_handshake_error(message.data)
    assert error.code is HandshakeErrorCode.RESUME_REJECTED
    assert why in str(error)


def test_a_ticket_resumes_and_the_resumed_session_works_and_gets_a_new_ticket(
    private_key: rsa.RSAPrivateKey,
) -> None:
    clock = Clock()
    ticket = issue(private_key, clock)
    session = ServerSession(private_key, clock=clock)
    channel = resumed_ok(session, private_key, ticket)
    server_sees = session.receive(channel.seal(encode_request("login", name="ann", rid=1)))
    assert [type(a).__name__ for a in server_sees] == ["Serve"]
    # The resumed session's own secret is new, and so is its ticket.
    assert session._resumption_secret not in (b"", ticket.secret)
    renewed = ticket_of(session, channel, session._resumption_secret, private_key)
    assert renewed.ticket != ticket.ticket
    assert resumed_ok(ServerSession(private_key, clock=clock), private_key, renewed) is not None
    # A ticket may be offered again while it lasts (the server keeps no state).
    resumed_ok(ServerSession(private_key, clock=clock), private_key, ticket)


def test_no_ticket_without_the_feature_or_with_tickets_off(private_key: rsa.RSAPrivateKey) -> None:
    session = ServerSession(private_key)
    full_handshake(session, private_key)
    assert session.logged_in(["resume"]) is None
    assert session._resumption_secret == b""  # forgotten at login either way
    off = ServerSession(private_key, ticket_lifetime=0)
    full_handshake(off, private_key)
    assert off.logged_in(TICKET) is None
    # A server with tickets off refuses every ticket (and the client falls back).
    _, answer = resume(ServerSession(private_key, ticket_lifetime=0), private_key.public_key(),
                       issue(private_key, Clock()))  # fmt: skip
    rejected(answer, "does not resume sessions")


def test_tickets_expire(private_key: rsa.RSAPrivateKey) -> None:
    clock = Clock()
    ticket = issue(private_key, clock, lifetime=600)
    clock.now += 599
    resumed_ok(ServerSession(private_key, clock=clock), private_key, ticket)
    clock.now += 1
    _, answer = resume(ServerSession(private_key, clock=clock), private_key.public_key(), ticket)
    rejected(answer, "expired")
    # A lifetime lowered since (a restart with a smaller --ticket-lifetime) applies too.
    young = issue(private_key, clock, lifetime=3600)
    clock.now += 61
    shorter = ServerSession(private_key, ticket_lifetime=60, clock=clock)
    rejected(resume(shorter, private_key.public_key(), young)[1], "expired")


def test_tickets_are_bound_to_the_server_key(
    private_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    clock = Clock()
    ticket = issue(private_key, clock)
    # Offered to a server with another key, under that key's fingerprint: it does not open.
    moved = dataclasses.replace(ticket, fingerprint=fingerprint_bytes(other_key.public_key()))
    other = ServerSession(other_key, clock=clock)
    rejected(resume(other, other_key.public_key(), moved)[1], "does not open")
    # Under the first key's fingerprint it is a client trusting another key: refused and closed.
    (end,) = resume(ServerSession(other_key, clock=clock), private_key.public_key(), ticket)[1]
    assert isinstance(end, End) and end.handshake_error is not None
    assert decode_handshake_error(end.handshake_error).code is HandshakeErrorCode.UNKNOWN_SERVER_KEY


def test_every_holder_of_the_key_opens_the_tickets_of_the_others(key_pair: tuple[Path, Path]) -> None:
    """The processes of --workers and the nodes of a cluster each load the key file: the
    ticket key comes from the key's numbers, not from one process's memory."""
    clock = Clock()
    first, second = load_private_key(key_pair[0]), load_private_key(key_pair[0])
    assert first is not second and sealer_for(first) is not sealer_for(second)
    ticket = issue(first, clock)
    resumed_ok(ServerSession(second, clock=clock), second, ticket)


def test_a_captured_ticket_is_useless_without_its_secret(private_key: rsa.RSAPrivateKey) -> None:
    clock = Clock()
    ticket = issue(private_key, clock)
    public = private_key.public_key()
    # An eavesdropper has the ticket (it travels in clear) but not the secret: the binder fails.
    guessed = dataclasses.replace(ticket, secret=bytes(32))
    rejected(resume(ServerSession(private_key, clock=clock), public, guessed)[1], "binder")
    # Replaying the owner's whole ResumeHello gets a ServerHello with fresh keys it cannot
    # compute: the owner's recorded ClientFinished does not confirm them.
    owner = ClientHandshake(public, resume=ticket)
    recorded_hello = owner.client_hello()
    first = ServerSession(private_key, clock=clock)
    (hello,) = first.resume(recorded_hello)
    assert isinstance(hello, SendHandshake)
    recorded_finished = owner.receive_server_hello(hello.data)
    assert first.receive(recorded_finished) == [Established()]
    replayed = ServerSession(private_key, clock=clock)
    (hello,) = replayed.resume(recorded_hello)
    assert isinstance(hello, SendHandshake)
    (end,) = replayed.receive(recorded_finished)
    assert isinstance(end, End) and end.handshake_error is not None
    assert decode_handshake_error(end.handshake_error).code is HandshakeErrorCode.CONFIRMATION_FAILED
    # A binder moved onto another hello (another X25519 share) does not verify either.
    thief = ClientHandshake(public, resume=guessed).client_hello()
    spliced = thief[:-32] + recorded_hello[-32:]
    rejected(ServerSession(private_key, clock=clock).resume(spliced), "binder")


@pytest.mark.parametrize("flip", [0, 1, 20, 60, TICKET_LEN - 1])
def test_a_garbled_ticket_is_refused_and_a_full_handshake_follows_on_the_same_connection(
    private_key: rsa.RSAPrivateKey, flip: int
) -> None:
    clock = Clock()
    ticket = issue(private_key, clock)
    garbled = bytearray(ticket.ticket)
    garbled[flip] ^= 0x01
    session = ServerSession(private_key, clock=clock)
    offered = dataclasses.replace(ticket, ticket=bytes(garbled))
    client, answer = resume(session, private_key.public_key(), offered)
    (message,) = answer
    assert isinstance(message, SendHandshake)
    # The client's machine reports the refusal as the server's ...
    with pytest.raises(Exception) as refused:
        client.receive_server_hello(message.data)
    assert getattr(refused.value, "code", None) is HandshakeErrorCode.RESUME_REJECTED
    # ... and the same session then takes a full ClientHello.
    full_handshake(session, private_key)
    assert session.established


def test_malformed_resume_hellos_end_the_handshake(private_key: rsa.RSAPrivateKey) -> None:
    clock = Clock()
    ticket = issue(private_key, clock)
    good = ClientHandshake(private_key.public_key(), resume=ticket).client_hello()
    cases = {
        "empty ticket": good[:101] + b"\x00\x00" + good[-32:],
        "ticket over 256 bytes": good[:101] + (300).to_bytes(2, "big") + bytes(300) + good[-32:],
        "truncated": good[:-1],
        "too long": good + b"\x00",
        "short": good[:50],
        "over 2 KiB": good[:101] + (256).to_bytes(2, "big") + bytes(2048),
    }
    for what, hello in cases.items():
        (end,) = ServerSession(private_key, clock=clock).resume(hello)
        assert isinstance(end, End) and end.code is CloseCode.POLICY_VIOLATION, what
        assert end.handshake_error is not None
        assert decode_handshake_error(end.handshake_error).code is HandshakeErrorCode.MALFORMED, what
    version = bytearray(good)
    version[2] = 2
    (end,) = ServerSession(private_key, clock=clock).resume(bytes(version))
    assert isinstance(end, End) and end.handshake_error is not None
    assert decode_handshake_error(end.handshake_error).code is HandshakeErrorCode.VERSION_MISMATCH


def test_one_resume_hello_per_connection_and_limits_apply(private_key: rsa.RSAPrivateKey) -> None:
    clock = Clock()
    ticket = issue(private_key, clock)
    public = private_key.public_key()
    session = ServerSession(private_key, clock=clock)
    rejected(resume(session, public, dataclasses.replace(ticket, secret=bytes(32)))[1], "binder")
    (end,) = resume(session, public, ticket)[1]
    assert isinstance(end, End) and end.handshake_error is not None
    assert decode_handshake_error(end.handshake_error).code is HandshakeErrorCode.MALFORMED
    # Over the handshake rates a ResumeHello is SERVER_BUSY, as a ClientHello would be.
    (busy,) = resume(ServerSession(private_key, clock=clock), public, ticket, admitted=False)[1]
    assert isinstance(busy, End) and busy.handshake_error is not None
    assert decode_handshake_error(busy.handshake_error).code is HandshakeErrorCode.SERVER_BUSY


def test_the_wallet_offers_each_ticket_once_and_not_near_its_end() -> None:
    now = [100.0]
    wallet = TicketWallet(clock=lambda: now[0])
    wallet.keep(b"t" * 109, b"s" * 32, b"f" * 32, 3600)
    assert len(wallet) == 1
    taken = wallet.take(b"f" * 32)
    assert taken is not None and taken.ticket == b"t" * 109 and taken.good_until == 100 + 3540
    assert wallet.take(b"f" * 32) is None
    wallet.keep(b"t" * 109, b"s" * 32, b"f" * 32, 3600)
    now[0] += 3540
    assert wallet.take(b"f" * 32) is None
    assert wallet.take(b"other" * 8) is None


# --- the real handlers, in memory ------------------------------------------------------------


async def login_resumed(server: MemoryServer, ticket: ClientTicket, name: str) -> tuple[MemoryPeer, Any]:
    """A MemoryPeer whose handshake resumes with ``ticket``, then logs in as ``name``."""
    peer = MemoryPeer(server, "127.0.0.1")
    peer.channel = resumed_ok(peer.session, server.private_key, ticket)
    welcome = await peer.request("login", name=name, features=TICKET)
    return peer, welcome


async def test_the_ticket_event_comes_right_before_welcome(private_key: rsa.RSAPrivateKey) -> None:
    async with memory_server(private_key, ticket_lifetime=900) as server:
        ann = await server.connect()
        secret = ann.session._resumption_secret
        welcome = await ann.request("login", name="ann", features=["resume", *TICKET])
        assert welcome["features"] == ["resume", "ticket"]
        kinds = [e.type for e in ann.events]
        assert kinds == ["ticket", "welcome"], kinds
        event = ann.events[0]
        assert event["lifetime"] == 900 and "re" not in event.fields
        raw = base64.urlsafe_b64decode(event["ticket"] + "=" * (-len(event["ticket"]) % 4))
        ticket = ClientTicket(raw, secret, fingerprint_bytes(private_key.public_key()), float("inf"))
        await ann.close()
        bob, welcome = await login_resumed(server, ticket, "bob")
        assert welcome.type == "welcome" and welcome["name"] == "bob"
        assert [e.type for e in bob.events] == ["ticket", "welcome"]
        assert (await bob.request("broadcast", text="resumed")).type == "ok"
        # A client that asks for no ticket gets none.
        carl = await server.login("carl", features=["resume"])
        assert "ticket" not in [e.type for e in carl.events]


# --- real server processes, the terminal client's transport ------------------------------------


async def _login(session: Any, name: str) -> None:
    """Log in asking for a ticket; no event but the welcome reaches the caller."""
    rid = await session.send("login", name=name, features=TICKET)
    reply = await asyncio.wait_for(session.recv(), 10)
    assert reply.type == "welcome" and reply["re"] == rid, reply


async def _quit(session: Any) -> None:
    """Log out and close. The server answers ``quit`` once the name is released; a bare
    close may still hold it when the next connection logs in (it did once in CI)."""
    reply = await session_helpers.reply(session, "quit", skip=())
    assert reply.type == "ok", reply
    await session.close()


async def test_a_client_reconnects_with_its_ticket_and_falls_back_when_refused(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    server = await ServerProcess.start(key_pair[0], tmp_path / "one", "--db", ":memory:")
    key = load_private_key(key_pair[0]).public_key()
    wallet = TicketWallet()
    try:
        first = await open_session(server.host, server.port, key, tickets=wallet)
        assert not first.resumed
        await _login(first, "ann")
        assert len(wallet) == 1  # kept on the way to the welcome, never shown
        await _quit(first)
        second = await open_session(server.host, server.port, key, tickets=wallet)
        assert second.resumed and len(wallet) == 0
        await _login(second, "ann")
        rid = await second.send("broadcast", text="hello again")
        assert (await asyncio.wait_for(second.recv(), 10)).fields == {"re": rid}
        assert len(wallet) == 1  # the resumed session's own ticket
        await _quit(second)
        # The same server key restarted with tickets off: the ticket is refused, the
        # client goes on with a full handshake on the same connection and gets in.
        assert await server.stop() == []
        server = await ServerProcess.start(
            key_pair[0], tmp_path / "two", "--db", ":memory:", "--ticket-lifetime", "0"
        )
        third = await open_session(server.host, server.port, key, tickets=wallet)
        assert not third.resumed and len(wallet) == 0
        await _login(third, "ann")
        await third.close()
    finally:
        problems = await server.stop()
    assert problems == []


async def test_an_expired_ticket_falls_back_to_a_full_handshake(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    server = await ServerProcess.start(key_pair[0], tmp_path, "--db", ":memory:", "--ticket-lifetime", "1")
    key = load_private_key(key_pair[0]).public_key()
    frozen = TicketWallet(clock=lambda: 0.0)  # offers the ticket however old it is
    try:
        first = await open_session(server.host, server.port, key, tickets=frozen)
        await _login(first, "bea")
        await first.close()
        time.sleep(1.1)
        again = await open_session(server.host, server.port, key, tickets=frozen)
        assert not again.resumed
        await _login(again, "bea")
        await again.close()
    finally:
        problems = await server.stop()
    assert problems == []


# --- the independent reference client (pycryptodome, tests/reference_client.py) --------------


def test_the_reference_client_reproduces_the_resumption_vectors() -> None:
    """Written from PROTOCOL.md 2.7 and 3 with another crypto library: the same bytes."""
    vectors = json.loads((Path(__file__).parent / "vectors" / "handshake.json").read_text(encoding="utf-8"))
    inputs, hs = vectors["inputs"], vectors["handshake"]
    resumption = vectors["resumption"]
    ins, values = resumption["inputs"], resumption["values"]
    server_key = RSA.import_key((Path(__file__).parent / "vectors" / "server_private.pem").read_bytes())

    def fixed(*names: str, source: dict[str, Any]) -> ref.RandomSource:
        chunks = iter(bytes.fromhex(source[name]) for name in names)
        return lambda n: next(chunks)

    full = ref.ClientHandshake(
        server_key.public_key(),
        random_source=fixed("client_random", "client_x25519_private", "rsa_secret", source=inputs),
        wrap=lambda secret: bytes.fromhex(inputs["rsa_wrapped_secret"]),
    )
    full.client_hello()
    assert full.receive_server_hello(bytes.fromhex(hs["server_hello"])).hex() == hs["client_finished"]
    assert full.keys["resumption_secret"].hex() == values["resumption_secret"]
    ticket = bytes.fromhex(values["ticket"])
    resumed = ref.ClientHandshake(
        server_key.public_key(),
        random_source=fixed("resume_client_random", "resume_client_x25519_private", source=ins),
        ticket=(ticket, full.keys["resumption_secret"]),
    )
    assert resumed.client_hello().hex() == values["resume_hello"]
    finished = resumed.receive_server_hello(bytes.fromhex(values["resume_server_hello"]))
    assert finished.hex() == values["resume_client_finished"]
    assert resumed.th1.hex() == values["resume_transcript_hash_1"]
    assert resumed.keys["resumption_secret"].hex() == values["resume_resumption_secret"]
    # The ticket, sealed with pycryptodome's AES-GCM under the documented ticket key.
    cipher = AES.new(bytes.fromhex(values["ticket_key"]), AES.MODE_GCM, nonce=ticket[1:13])
    cipher.update(b"\x01")
    assert cipher.decrypt_and_verify(ticket[13:-16], ticket[-16:]).hex() == values["ticket_contents"]


async def test_the_reference_client_resumes_against_a_real_server_and_falls_back(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    server = await ServerProcess.start(key_pair[0], tmp_path, "--db", ":memory:")
    key = RSA.import_key(key_pair[1].read_bytes())
    try:
        first = await ref.Connection.connect(server.host, server.port, key)
        assert (await first.login("dora", features=TICKET))["type"] == "welcome"
        ticket = first.ticket()
        assert ticket is not None and len(ticket[0]) == TICKET_LEN
        await first.close()
        again = await ref.Connection.connect(server.host, server.port, key, ticket=ticket)
        assert again.resumed
        assert (await again.login("dora", features=TICKET))["type"] == "welcome"
        assert again.ticket() is not None
        await again.close()
        garbled = (ticket[0][:-1] + bytes([ticket[0][-1] ^ 1]), ticket[1])
        fallback = await ref.Connection.connect(server.host, server.port, key, ticket=garbled)
        assert not fallback.resumed
        assert (await fallback.login("dora"))["type"] == "welcome"
        await fallback.close()
    finally:
        problems = await server.stop()
    assert problems == []


async def test_a_server_without_tickets_that_answers_malformed_gets_a_full_handshake(
    private_key: rsa.RSAPrivateKey,
) -> None:
    """A server of before this feature answers a ResumeHello MALFORMED and closes: the
    client forgets the ticket and connects again with a ClientHello, without a word."""
    from websockets.asyncio.server import ServerConnection, serve

    hellos: list[int] = []

    async def old_server(ws: ServerConnection) -> None:
        session = ServerSession(private_key)
        first = await ws.recv()
        assert isinstance(first, bytes)
        hellos.append(first[0])
        if first[0] != 0x01:
            await ws.send(encode_handshake_error(HandshakeErrorCode.MALFORMED, "expected a ClientHello"))
            await ws.close(CloseCode.POLICY_VIOLATION, "expected a ClientHello")
            return
        (unwrap,) = session.receive(first)
        assert isinstance(unwrap, Unwrap)
        (hello,) = session.unwrapped(session.unwrap(unwrap.hello))
        assert isinstance(hello, SendHandshake)
        await ws.send(hello.data)
        finished = await ws.recv()
        assert isinstance(finished, bytes) and session.receive(finished) == [Established()]
        await ws.wait_closed()

    wallet = TicketWallet()
    ticket = issue(private_key, Clock(time.time()))
    wallet.keep(ticket.ticket, ticket.secret, ticket.fingerprint, 3600)
    async with serve(old_server, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        session = await open_session("127.0.0.1", port, private_key.public_key(), tickets=wallet)
        assert not session.resumed and len(wallet) == 0
        await session.close()
    assert hellos == [0x04, 0x01]
