"""Login and exit announcements: combined into ``user_joined`` / ``user_exited`` events that
name several users, each name announced exactly once, in login order, never to the user
itself, and always before anything else the user who joined causes to arrive.

Most tests run against a real server (the ``server`` fixture). The ones about *when*
announcements go out run a :class:`ChatServer` of their own (127.0.0.1, real sockets and
handshakes) whose presence feed flushes at a chosen, long interval: then only the
catch-up before each delivery can get an announcement out early, and what arrives is
deterministic.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_harness import HOST, ServerProcess
from robust_helpers import Peer, RawSession

from chat.keys import load_private_key, load_public_key
from chat.protocol.envelope import Envelope, decode_event
from chat.protocol.limits import MAX_PRESENCE_NAMES
from chat.server.app import ChatServer
from chat.server.config import ServerConfig
from chat.server.presence import PresenceFeed, encode_presence

PRESENCE = ("user_joined", "user_exited")


@pytest.fixture
def public_key(key_pair: tuple[Path, Path]) -> rsa.RSAPublicKey:
    return load_public_key(key_pair[1])


@asynccontextmanager
async def in_process_server(key_pair: tuple[Path, Path], min_interval: float) -> AsyncIterator[int]:
    """A real ChatServer in this event loop whose presence feed flushes at most once per
    ``min_interval`` seconds; yields its port."""
    config = ServerConfig(host=HOST, port=0, db_path=":memory:", rate_limit=0)
    server = ChatServer(load_private_key(key_pair[0]), config)
    server.services.presence = PresenceFeed(min_interval=min_interval)
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop()


async def connect(port: int, public_key: rsa.RSAPublicKey, name: str) -> Peer:
    """A connection past the handshake whose events are all collected (login included)."""
    return Peer(await RawSession.established(port, public_key), name)


async def login(peer: Peer) -> None:
    welcome = await peer.request("login", name=peer.name)
    assert (welcome.type, welcome.get("name")) == ("welcome", peer.name), welcome


async def join(port: int, public_key: rsa.RSAPublicKey, name: str) -> Peer:
    peer = await connect(port, public_key, name)
    await login(peer)
    return peer


def presence(events: list[Envelope], kind: str) -> list[list[str]]:
    """The names of each ``kind`` notification, event by event."""
    return [e["names"] for e in events if e.type == kind and "re" not in e.fields]


def flat(events: list[Envelope], kind: str) -> list[str]:
    return [name for names in presence(events, kind) for name in names]


def shown(events: list[Envelope]) -> list[tuple[str, object]]:
    """Notifications (not replies) as (type, the field that matters here)."""
    return [(e.type, e.get("names", e.get("text"))) for e in events if "re" not in e.fields]


async def list_reply(peer: Peer) -> tuple[Envelope, list[Envelope]]:
    """Send ``list``; the reply, and every event received before it."""
    reply = await peer.request("list")
    assert reply.type == "user_list", reply
    return reply, peer.events[: peer.events.index(reply)]


async def close_all(*peers: Peer) -> None:
    await asyncio.gather(*(peer.close() for peer in peers))


# --- the real server ----------------------------------------------------------------------


async def test_concurrent_logins_announced_once_each_in_login_order(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """40 clients log in at once while an observer is online: the observer is told of each
    exactly once, in login order (the order of ``/list``), all before its ``/list`` reply;
    each client is told of exactly the users who logged in after it, never of itself."""
    observer = await join(server.port, public_key, "observer")
    clients = await asyncio.gather(*(connect(server.port, public_key, f"c{i:02d}") for i in range(40)))
    await asyncio.gather(*(login(peer) for peer in clients))
    reply, before = await list_reply(observer)
    users = reply["users"]
    assert users[0] == "observer" and sorted(users[1:]) == sorted(p.name for p in clients), users
    assert flat(before, "user_joined") == users[1:], shown(before)
    assert flat(observer.events, "user_joined") == users[1:], "announced again after the list"

    replies = await asyncio.gather(*(list_reply(peer) for peer in clients))
    for peer, (reply, before) in zip(clients, replies, strict=True):
        assert reply["users"] == users, (peer.name, reply)
        later = users[users.index(peer.name) + 1 :]
        assert flat(before, "user_joined") == later, (peer.name, shown(before))
        assert peer.name not in flat(peer.events, "user_joined"), f"{peer.name} was told of its own join"
        assert presence(peer.events, "user_exited") == []
    await close_all(observer, *clients)


async def test_many_quits_announced_once_each(server: ServerProcess, public_key: rsa.RSAPublicKey) -> None:
    """20 clients quit together: the observer is told of each exit exactly once."""
    observer = await join(server.port, public_key, "observer")
    clients = await asyncio.gather(*(join(server.port, public_key, f"q{i:02d}") for i in range(20)))
    names = [peer.name for peer in clients]
    await observer.wait_until(lambda: len(flat(observer.events, "user_joined")) >= 20, "20 joins")
    oks = await asyncio.gather(*(peer.request("quit") for peer in clients))
    assert [ok.type for ok in oks] == ["ok"] * 20, oks
    await observer.wait_until(lambda: len(flat(observer.events, "user_exited")) >= 20, "20 exits")
    reply, _ = await list_reply(observer)
    assert reply["users"] == ["observer"], reply
    exits = flat(observer.events, "user_exited")
    assert Counter(exits) == Counter(names), exits
    assert Counter(flat(observer.events, "user_joined")) == Counter(names)
    # Every exit is announced after that user's join.
    order = [(e.type, name) for e in observer.events if e.type in PRESENCE for name in e["names"]]
    for name in names:
        assert order.index(("user_joined", name)) < order.index(("user_exited", name)), order
    await close_all(observer, *clients)


async def ordering_scenario(port: int, public_key: rsa.RSAPublicKey) -> None:
    """A join arrives before the joiner's first broadcast (sent without waiting for the
    welcome) and before a ``/list`` naming the joiner."""
    observer = await join(port, public_key, "observer")
    bob = await connect(port, public_key, "bob")
    await bob.send("login", name="bob")
    await bob.send("broadcast", text="first words")
    await bob.wait_type("ok")
    got = await observer.wait_type("broadcast", sender="bob")
    before = observer.events[: observer.events.index(got)]
    assert flat(before, "user_joined") == ["bob"], shown(observer.events)

    carol = await join(port, public_key, "carol")
    reply, before = await list_reply(observer)
    assert reply["users"] == ["observer", "bob", "carol"], reply
    assert flat(before, "user_joined") == ["bob", "carol"], shown(observer.events)
    await close_all(observer, bob, carol)


async def test_join_arrives_before_what_the_joiner_causes(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    await ordering_scenario(server.port, public_key)


# --- a real server in this process, with a long flush interval -----------------------------


async def test_join_arrives_first_even_before_the_flush(
    key_pair: tuple[Path, Path], public_key: rsa.RSAPublicKey
) -> None:
    """With a flush at most every 60 s, only the catch-up before each delivery can get the
    announcements out in time: the order still holds."""
    async with in_process_server(key_pair, min_interval=60.0) as port:
        await ordering_scenario(port, public_key)


async def test_logins_close_together_share_one_event(
    key_pair: tuple[Path, Path], public_key: rsa.RSAPublicKey
) -> None:
    """Five logins within one flush interval reach the observer as one ``user_joined``
    naming all five, in login order; each of the five gets one event naming those after
    it (each recipient's batch starts where it joined)."""
    async with in_process_server(key_pair, min_interval=60.0) as port:
        observer = await join(port, public_key, "observer")
        batch = [await connect(port, public_key, f"b{i}") for i in range(1, 6)]
        for peer in batch:
            await login(peer)
        names = [peer.name for peer in batch]
        for k, peer in enumerate([observer, *batch]):
            reply, before = await list_reply(peer)
            assert reply["users"] == ["observer", *names], reply
            expected = [("user_joined", names[k:])] if names[k:] else []
            assert shown(before) == expected, (peer.name, shown(peer.events))
        await close_all(observer, *batch)


async def test_join_exit_join_stay_separate_and_a_quitter_is_caught_up(
    key_pair: tuple[Path, Path], public_key: rsa.RSAPublicKey
) -> None:
    """Only consecutive announcements of one kind are combined: a login, its quit and a
    second login are three events, in order. A user who quits first gets what was
    announced before it left, then the ``ok``."""
    async with in_process_server(key_pair, min_interval=60.0) as port:
        observer = await join(port, public_key, "observer")
        first = await join(port, public_key, "x")
        await join(port, public_key, "y")
        ok = await first.request("quit")
        assert ok.type == "ok", ok
        before_ok = first.events[: first.events.index(ok)]
        assert [e.type for e in before_ok] == ["welcome", "user_joined"], shown(first.events)
        assert presence(before_ok, "user_joined") == [["y"]]
        await first.wait_ended()
        again = await join(port, public_key, "x")
        reply, before = await list_reply(observer)
        assert reply["users"] == ["observer", "y", "x"], reply
        assert shown(before) == [
            ("user_joined", ["x", "y"]), ("user_exited", ["x"]), ("user_joined", ["x"]),
        ], shown(before)  # fmt: skip
        await close_all(observer, first, again)


@pytest.mark.slow
async def test_a_lone_login_is_announced_at_once_and_a_burst_at_the_interval(
    key_pair: tuple[Path, Path], public_key: rsa.RSAPublicKey
) -> None:
    """Flushes at most every 2 s: a login after a quiet spell is announced at once (no
    request needed); one right after it waits for the next flush, which comes by itself."""
    async with in_process_server(key_pair, min_interval=2.0) as port:
        observer = await join(port, public_key, "observer")
        x, y = await asyncio.gather(connect(port, public_key, "x"), connect(port, public_key, "y"))
        await asyncio.sleep(2.2)  # longer than the interval since the observer's login flush
        await login(x)
        await observer.wait_presence("user_joined", "x", timeout=1.0)
        await login(y)
        welcomed = time.monotonic()
        await asyncio.sleep(1.0)
        assert flat(observer.events, "user_joined") == ["x"], "the second login was not held back"
        await observer.wait_presence("user_joined", "y", timeout=3.0)
        assert time.monotonic() - welcomed < 3.0
        assert presence(observer.events, "user_joined") == [["x"], ["y"]]
        await close_all(observer, x, y)


# --- encoding ------------------------------------------------------------------------------


def test_runs_of_one_kind_become_events_of_at_most_256_names() -> None:
    joined = [("user_joined", f"u{i}") for i in range(2 * MAX_PRESENCE_NAMES + 88)]
    entries = [*joined, ("user_exited", "u3"), ("user_exited", "u7"), ("user_joined", "u3")]
    events = [decode_event(payload) for payload in encode_presence(entries)]
    sizes = [(e.type, len(e["names"])) for e in events]
    assert sizes == [("user_joined", 256), ("user_joined", 256), ("user_joined", 88), ("user_exited", 2),
                     ("user_joined", 1)]  # fmt: skip
    assert [(e.type, name) for e in events for name in e["names"]] == entries
    assert encode_presence([]) == []
