"""Abuse limits and timeouts of a real server.

The rate limit warns (``notice too_fast``) and then disconnects (1008) without losing
anything handled before; connection caps refuse with 1013 and a reason; the groups-per-
user cap answers ``too_many_groups``; keepalive pings drop a peer that stopped reading.
Each test ends by showing that the server is alive and a fresh pair of clients chats.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_harness import ServerProcess
from robust_helpers import TIMEOUT, Peer, RawSession, assert_fresh_pair_chats, running_server
from websockets.exceptions import ConnectionClosed

from chat.keys import load_public_key
from chat.protocol.envelope import encode_request

#: The server's default rate limit: 10 requests per second, bursts of 30.
BURST = 30


@pytest.fixture
def public_key(key_pair: tuple[Path, Path]) -> rsa.RSAPublicKey:
    return load_public_key(key_pair[1])


async def _flood(peer: Peer, make: object, count: int) -> int:
    """Send ``count`` records as fast as possible (``make(k)`` gives plaintext k);
    returns how many went out before the connection closed."""
    assert callable(make)
    sent = 0
    with contextlib.suppress(ConnectionClosed):
        for k in range(count):
            await peer.session.send_plaintext(make(k))
            sent += 1
    return sent


async def test_rate_limit_warns_then_disconnects_and_loses_nothing(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """A burst of 25 and a steady 8/s draw no warning. A flood of broadcasts gets
    ``notice too_fast`` after at least the burst, then a close 1008 with a reason after
    another burst of debt; every broadcast the server acknowledged before the cut-off
    reached the other user, once and in order, and nothing after it; a third user's
    messages flow meanwhile."""
    calm = await Peer.join(server.port, public_key, "calm")
    flooder = await Peer.join(server.port, public_key, "flooder")
    reader = await Peer.join(server.port, public_key, "reader")
    bystander = await Peer.join(server.port, public_key, "bystander")

    for k in range(25):
        await calm.send("broadcast", text=f"calm {k}")
    for k in range(12):
        await asyncio.sleep(1 / 8)
        await calm.send("broadcast", text=f"steady {k}")
    await calm.sync()
    assert calm.notifications("notice") == [], "a sender within the limits was warned"

    def broadcast(k: int) -> bytes:
        return encode_request("broadcast", text=f"flood {k}", rid=1000 + k)

    flood = asyncio.create_task(_flood(flooder, broadcast, 400))
    await bystander.send("private", to="reader", text="meanwhile")
    await reader.wait_type("private", sender="bystander", text="meanwhile")
    sent = await flood
    code, reason = await flooder.wait_close_frame()
    assert code == 1008 and reason, f"flood of {sent}: closed with {code} {reason!r}"

    oks = [e["re"] - 1000 for e in flooder.events if e.type == "ok"]
    assert oks == list(range(len(oks))), "replies out of order or missing"
    handled = len(oks)
    notices = [i for i, e in enumerate(flooder.events) if e.type == "notice"]
    assert len(notices) == 1 and flooder.events[notices[0]]["code"] == "too_fast", flooder.events[-5:]
    warned_after = sum(1 for e in flooder.events[: notices[0]] if e.type == "ok")
    assert warned_after >= BURST, f"warned after {warned_after} messages, the burst is {BURST}"
    assert handled >= warned_after + BURST - 1, f"cut off {handled - warned_after} after the warning"
    assert handled < sent, "every message was handled: no cut-off"

    await reader.wait_presence("user_exited", "flooder")
    await reader.sync()
    got = [e["text"] for e in reader.notifications("broadcast") if e["sender"] == "flooder"]
    assert got == [f"flood {k}" for k in range(handled)], (
        f"{handled} broadcasts acknowledged, the reader got {len(got)}: {got[:3]}...{got[-3:]}"
    )
    assert bystander.notifications("notice") == [] and not bystander.ended
    for peer in (calm, reader, bystander):
        await peer.close()
    await assert_fresh_pair_chats(server, public_key)


@pytest.mark.parametrize("kind", ["malformed envelopes", "chunks for unknown transfers"])
async def test_requests_answered_with_errors_are_rate_limited_too(
    server: ServerProcess, public_key: rsa.RSAPublicKey, kind: str
) -> None:
    """Each record costs the server work and an answer, valid or not: a flood of
    malformed envelopes (answered ``bad_request``) or of file chunks for transfers that do
    not exist (answered ``bad_transfer``) is warned and then cut off like any flood."""
    flooder = await Peer.join(server.port, public_key, "flooder")

    def garbage(k: int) -> bytes:
        if kind == "malformed envelopes":
            return os.urandom(40)
        return encode_request("file_chunk", body=b"x", id="0badf00d", offset=k, rid=k + 1)

    sent = await _flood(flooder, garbage, 400)
    assert sent == 400
    code, reason = await flooder.wait_close_frame(timeout=3.0)
    assert code == 1008 and reason, (code, reason)
    assert [e["code"] for e in flooder.notifications("notice")] == ["too_fast"]
    await assert_fresh_pair_chats(server, public_key)


async def _refused(port: int) -> tuple[int | None, str]:
    """Open a WebSocket; the server must close it (without a ServerHello)."""
    session = await RawSession.open(port)
    with contextlib.suppress(ConnectionClosed):
        await session.ws.send(b"\x01")  # anything; a refused connection never reads it
    frames = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                frames.append(await session.ws.recv())
    except ConnectionClosed as exc:
        assert all(isinstance(f, bytes) and f[:1] == b"\x0f" for f in frames), frames
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")


@pytest.mark.parametrize("option", ["--max-per-ip", "--max-connections"])
async def test_connection_caps_refuse_with_1013(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey, option: str
) -> None:
    """With a cap of 3: the 4th (and 5th, ...) connection is closed with 1013 and a
    reason while 3 are open; refused connections do not count; once one of the 3 closes,
    a new connection is accepted."""
    extra = [option, "3"] + (["--max-per-ip", "0"] if option == "--max-connections" else [])
    async with running_server(key_pair[0], tmp_path / "server", *extra) as server:
        holders = [await Peer.join(server.port, public_key, f"holder{i}") for i in range(3)]
        for _ in range(10):
            code, reason = await _refused(server.port)
            assert code == 1013 and reason, (code, reason)
        await holders[0].close()
        await holders[1].wait_presence("user_exited", "holder0")
        await asyncio.sleep(0.2)
        holders[0] = await Peer.join(server.port, public_key, "holder3")
        code, reason = await _refused(server.port)
        assert code == 1013 and reason, (code, reason)
        for peer in holders[:2]:
            await peer.close()
        await holders[2].wait_presence("user_exited", "holder1")
        await asyncio.sleep(0.2)
        await assert_fresh_pair_chats(server, public_key)
        await holders[2].close()


async def test_groups_per_user_cap(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """With --max-groups-per-user 2: a third group_create or group_join gets ``error
    too_many_groups`` with the limit and changes nothing; being added by others does not
    use that quota (review M6) but has its own bound of 2 (``too_many_invitations``);
    after leaving one group, joining works again."""
    async with running_server(key_pair[0], tmp_path / "server", "--max-groups-per-user", "2") as server:
        alice = await Peer.join(server.port, public_key, "alice")
        bob = await Peer.join(server.port, public_key, "bob")
        for group in ("g1", "g2"):
            assert (await alice.request("group_create", group=group)).type == "group_created"
        assert (await bob.request("group_create", group="g3")).type == "group_created"

        too_many = ("error", "too_many_groups", 2)
        for kind, fields in [("group_create", {"group": "g4"}), ("group_join", {"group": "g3"})]:
            reply = await alice.request(kind, **fields)
            assert (reply.type, reply.get("code"), reply.get("limit")) == too_many, reply
        adders = [await Peer.join(server.port, public_key, name) for name in ("carol", "dave", "erin")]
        for adder, group in zip(adders, ("g5", "g6"), strict=False):
            reply = await adder.request("group_create", group=group, members=["alice"])
            assert reply.type == "group_created", reply
        reply = await adders[2].request("group_create", group="g7", members=["alice"])
        assert (reply.type, reply.get("code"), reply.get("limit")) == ("error", "too_many_invitations", 2)

        groups = await alice.request("group_list")
        assert groups["groups"] == ["g1", "g2", "g3", "g5", "g6"], groups
        mine = await alice.request("group_members")
        assert [g["group"] for g in mine["groups"]] == ["g1", "g2", "g5", "g6"], mine
        assert (await alice.request("group_leave", group="g1")).type == "group_left"
        assert (await alice.request("group_join", group="g3")).type == "group_joined"
        await bob.wait_type("member_joined", group="g3", name="alice")
        for peer in (alice, bob, *adders):
            await peer.close()
        await assert_fresh_pair_chats(server, public_key)


async def test_keepalive_drops_a_peer_that_stops_answering_pings(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """With --ping-interval 0.5 --ping-timeout 0.5: a logged-in peer whose transport stops
    reading (so it never answers a ping) is dropped within a few seconds and announced as
    exited; an idle peer that still answers pings stays."""
    extra = ["--ping-interval", "0.5", "--ping-timeout", "0.5"]
    async with running_server(key_pair[0], tmp_path / "server", *extra) as server:
        watcher = await Peer.join(server.port, public_key, "watcher")
        idle = await Peer.join(server.port, public_key, "idle")
        zombie = await Peer.join(server.port, public_key, "zombie")
        await watcher.wait_presence("user_joined", "zombie")
        start = time.monotonic()
        zombie.session.ws.transport.pause_reading()
        try:
            await watcher.wait_presence("user_exited", "zombie", timeout=4.0)
        except AssertionError:
            await watcher.wait_presence("user_exited", "zombie", timeout=10.0)
            raise AssertionError(
                f"a peer that stopped answering pings was announced as exited only after "
                f"{time.monotonic() - start:.1f}s (ping interval 0.5s, ping timeout 0.5s)"
            ) from None
        elapsed = time.monotonic() - start
        assert elapsed >= 0.5, f"dropped after {elapsed:.2f}s, before a ping could time out"
        await asyncio.sleep(max(0.0, 2.5 - elapsed))
        await idle.sync()
        assert not idle.ended, "an idle peer that answers pings was dropped"
        users = await watcher.request("list")
        assert users["users"] == ["watcher", "idle"], users
        zombie.session.abort()
        await zombie.close()
        await idle.close()
        await watcher.close()
        await assert_fresh_pair_chats(server, public_key)
