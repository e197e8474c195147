"""Review finding H4: a flood of private messages to an offline user can neither fill the
disk nor destroy the mailbox.

What waits for one user is bounded (count, bytes), one sender (an account, or a guest's
network) fills at most a share of it, and delivery is paged and acknowledged: the owner
gets every stored message once, in order, without being disconnected, and rows are
deleted only when acknowledged.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from robust_helpers import RawSession, assert_fresh_pair_chats, opened_from, running_server

from chat.keys import load_public_key

BIG = "😀" * 4096  # 16 KiB of UTF-8, as in the review
OPTIONS = ("--offline-max-messages", "40", "--offline-max-bytes", "200000", "--rate-limit", "0",
           "--wrong-password-delay", "0")  # fmt: skip


@pytest.fixture
def public_key(key_pair: tuple[Path, Path]) -> rsa.RSAPublicKey:
    return load_public_key(key_pair[1])


async def _session(port: int, key: rsa.RSAPublicKey, source: str, name: str, password: str | None = None
                   ) -> RawSession:  # fmt: skip
    session = await opened_from(port, source)
    await session.handshake(key)
    fields = {"name": name} | ({"password": password} if password else {})
    welcome = await session.request("login", features=["offline_pages"], **fields)
    assert welcome.type == "welcome", welcome
    return session


async def _register(port: int, key: rsa.RSAPublicKey, name: str) -> None:
    session = await _session(port, key, "127.0.0.1", name)
    assert (await session.request("register", password="a good password")).type == "registered"
    await session.request("quit")


async def _mail(session: RawSession, text: str, to: str = "victim") -> str:
    answer = await session.request("private", to=to, text=text)
    return answer.type if answer.type != "error" else answer["code"]


async def test_flood_is_bounded_and_every_stored_message_arrives_once(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    async with running_server(key_pair[0], tmp_path / "server", *OPTIONS) as server:
        await _register(server.port, public_key, "victim")
        await _register(server.port, public_key, "friend")
        # 8 guests from one network, 16 KiB each, as fast as they are answered.
        flooders = [await _session(server.port, public_key, "127.0.0.3", f"spam{i}") for i in range(8)]
        outcomes = [await _mail(f, BIG) for _ in range(5) for f in flooders]
        stored = outcomes.count("private_queued")
        assert stored == 200000 // 4 // len(BIG.encode()), outcomes  # the network's share: 3
        assert set(outcomes) == {"private_queued", "mailbox_share_full"}, outcomes
        # Other networks fill the rest of the count bound with small messages ...
        for n, net in enumerate(("127.0.1.3", "127.0.2.3", "127.0.3.3")):
            other = await _session(server.port, public_key, net, f"net{n}")
            results = [await _mail(other, f"net{n} #{i}") for i in range(12)]
            assert results == ["private_queued"] * 10 + ["mailbox_share_full"] * 2, results
        # ... until the mailbox is full for everyone, a registered friend included.
        friend = await _session(server.port, public_key, "127.0.0.2", "friend", "a good password")
        results = [await _mail(friend, f"friend #{i}") for i in range(10)]
        assert results == ["private_queued"] * 7 + ["mailbox_full"] * 3, results
        expected = stored + 30 + 7

        victim = await _session(server.port, public_key, "127.0.0.1", "victim", "a good password")
        received: list[int] = []
        pages = 0
        while True:
            event = await victim.recv()
            if event.type == "private":
                received.append(event["id"])
                continue
            assert event.type == "offline_page", event
            pages += 1
            if pages == 1:  # drop before acknowledging: nothing is lost
                await victim.close()
                victim = await _session(server.port, public_key, "127.0.0.1", "victim", "a good password")
                received.clear()
                continue
            assert (await victim.request("offline_ack", upto=event["upto"])).type == "ok"
            if event["more"] == 0:
                break
        assert len(received) == expected and received == sorted(set(received)), received
        await victim.request("quit")
        victim = await _session(server.port, public_key, "127.0.0.1", "victim", "a good password")
        assert (await victim.request("list")).type == "user_list", "nothing delivered twice"
        await assert_fresh_pair_chats(server, public_key)
    with sqlite3.connect(tmp_path / "server" / "chat.db") as db:
        assert db.execute("SELECT COUNT(*) FROM offline_message").fetchone() == (0,)


async def test_stored_messages_expire(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    async with running_server(key_pair[0], tmp_path / "server", "--offline-days", "0.00002") as server:
        await _register(server.port, public_key, "victim")
        sender = await _session(server.port, public_key, "127.0.0.2", "alice")
        assert await _mail(sender, "soon stale") == "private_queued"
        await asyncio.sleep(2.5)  # 0.00002 days is 1.7 s
        victim = await _session(server.port, public_key, "127.0.0.1", "victim", "a good password")
        page = await victim.recv()
        assert (page.type, page["more"]) == ("offline_page", 0), page
        assert (await victim.request("offline_ack", upto=page["upto"])).type == "ok"
