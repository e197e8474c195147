"""Resuming after a lost connection (PROTOCOL.md section 6.8) on the in-memory server
(tests/harness.py: the real session, handlers and SQLite): numbered events, idempotent
sends, replay from cursors, taking the name over from a dead connection, lost counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import MemoryPeer, MemoryServer, memory_server

from chat.keys import load_private_key

RESUME = ["offline_pages", "missed", "resume"]


@pytest.fixture(scope="module")
def private_key(key_pair: tuple[Path, Path]) -> rsa.RSAPrivateKey:
    return load_private_key(key_pair[0])


async def resuming(server: MemoryServer, name: str, **fields: Any) -> tuple[MemoryPeer, Any]:
    peer = await server.connect()
    welcome = await peer.request("login", name=name, features=RESUME, **fields)
    assert welcome.type == "welcome", welcome
    return peer, welcome


def stored(peer: MemoryPeer) -> list[tuple[str, str, int | None, bool]]:
    """(type, text, seq, replayed) of the message events ``peer`` received, in order."""
    kinds = ("broadcast", "private", "group_message")
    return [(e.type, e["text"], e.get("seq"), "sent_at" in e.fields) for e in peer.events if e.type in kinds]


async def test_numbers_only_for_sessions_that_resume_and_sends_are_idempotent(
    private_key: rsa.RSAPrivateKey,
) -> None:
    async with memory_server(private_key) as server:
        ann, welcome = await resuming(server, "ann")
        assert welcome["head"] == 0 and len(welcome["token"]) >= 40
        old = await server.login("old")  # a client of the previous version
        bob = await server.login("bob", features=RESUME)
        first = await bob.request("broadcast", text="once", cmid="c-1")
        assert (first.type, first["mid"], first["seq"]) == ("ok", 1, 1)
        again = await bob.request("broadcast", text="once", cmid="c-1")
        assert again.fields == {"re": again["re"], "mid": 1, "seq": 1}
        await bob.request("list")
        await ann.request("list")
        await old.request("list")
        assert stored(ann) == [("broadcast", "once", 1, False)]
        assert [e.fields for e in old.events if e.type == "broadcast"] == [{"sender": "bob", "text": "once"}]
        sent = await bob.request("private", to="ann", text="hi", cmid="c-2")
        assert (sent.type, sent["mid"], sent["seq"]) == ("private_sent", 2, 1)
        plain = await bob.request("broadcast", text="no cmid")
        assert plain.fields == {"re": plain["re"]}


async def test_a_reconnecting_session_gets_what_it_missed_in_order(private_key: rsa.RSAPrivateKey) -> None:
    async with memory_server(private_key) as server:
        bob = await server.login("bob", features=RESUME)
        ann, welcome = await resuming(server, "ann")
        assert (await bob.request("group_create", group="team", members=["ann"])).type == "group_created"
        await bob.request("broadcast", text="b1")
        await bob.request("group_message", group="team", text="g1")
        await ann.request("list")
        assert stored(ann) == [("broadcast", "b1", 1, False), ("group_message", "g1", 1, False)]
        await ann.request("broadcast", text="mine")  # her own: never replayed to her
        # The connection is black-holed: the server still holds it when she comes back.
        await bob.request("broadcast", text="b2")
        await bob.request("private", to="ann", text="p1")
        await bob.request("group_message", group="team", text="g2")
        await bob.request("broadcast", text="b3")
        cursors = [{"target": "*", "seq": 1}, {"target": "team", "seq": 1}]
        resume = {"token": welcome["token"], "cursors": cursors, "since": welcome["head"]}
        back, again = await resuming(server, "ann", **resume)
        assert ann.ended is not None and ann.ended.code == 1008
        replayed = [e for e in back.events if e.type == "replayed"]
        assert [e.fields for e in replayed] == [{"count": 4}]
        assert stored(back) == [
            ("broadcast", "b2", 3, True), ("private", "p1", 1, True),
            ("group_message", "g2", 2, True), ("broadcast", "b3", 4, True),
        ]  # fmt: skip
        assert again["token"] != welcome["token"]
        # Nobody was told she left or came back, and she is still in her group.
        await bob.request("list")
        assert [e.type for e in bob.events if e.type in ("user_exited", "user_joined", "member_left")] == [
            "user_joined"
        ]
        assert (await back.request("group_message", group="team", text="still here")).type == "ok"
        # A token is used up: the old one does not let anyone take the name again.
        taken = await (await server.connect()).request(
            "login", name="ann", features=RESUME, token=welcome["token"]
        )
        assert (taken.type, taken["code"]) == ("error", "username_taken")


async def test_what_is_past_retention_is_counted_as_lost(private_key: rsa.RSAPrivateKey) -> None:
    async with memory_server(private_key, history_limit=3) as server:
        bob = await server.login("bob")
        ann, welcome = await resuming(server, "ann")
        await bob.request("broadcast", text="seen")
        await ann.request("list")
        await ann.close()
        for n in range(70):  # pruned every 64 appends to the newest 3
            await bob.request("broadcast", text=f"m{n}")
        back, _ = await resuming(
            server, "ann", token=welcome["token"], cursors=[{"target": "*", "seq": 1}], since=welcome["head"]
        )
        (replayed,) = [e for e in back.events if e.type == "replayed"]
        texts = [text for _, text, _, _ in stored(back)]
        assert replayed["count"] == len(texts) and texts == [f"m{n}" for n in range(70 - len(texts), 70)]
        assert replayed["lost"] == 70 - len(texts)


async def test_a_guest_resumes_its_own_private_conversations_only(private_key: rsa.RSAPrivateKey) -> None:
    async with memory_server(private_key) as server:
        bob = await server.login("bob")
        ann, welcome = await resuming(server, "ann")
        await bob.request("private", to="ann", text="for this ann")
        await ann.close()
        back, _ = await resuming(server, "ann", token=welcome["token"])
        history = await back.request("history", target="@bob")
        assert [m["text"] for m in history["messages"]] == ["for this ann"]
        await back.close()
        stranger, _ = await resuming(server, "ann")  # no token: a new guest
        assert (await stranger.request("history", target="@bob"))["messages"] == []


async def test_a_registered_user_is_told_what_is_new_in_each_group(private_key: rsa.RSAPrivateKey) -> None:
    async with memory_server(private_key) as server:
        ann = await server.login("ann")
        assert (await ann.request("register", password="ann password")).type == "registered"
        bob = await server.login("bob")
        assert (await bob.request("register", password="bob password")).type == "registered"
        for group in ("team", "quiet"):
            assert (await bob.request("group_create", group=group, members=["ann"])).type == "group_created"
        await bob.request("group_message", group="team", text="seen live")
        await ann.request("list")
        await ann.close()
        for n in range(3):
            await bob.request("group_message", group="team", text=f"while away {n}")
        back = await server.login("ann", "ann password", features=["unread"])
        await back.request("list")
        (unread,) = [e for e in back.events if e.type == "unread"]
        assert unread["groups"] == [{"group": "team", "count": 3}]
        history = await back.request("history", target="team", limit=3)
        assert [m["text"] for m in history["messages"]] == [f"while away {n}" for n in range(3)]
        await back.close()
        again = await server.login("ann", "ann password", features=["unread"])
        await again.request("list")
        assert [e for e in again.events if e.type == "unread"] == []  # nothing new since


async def test_a_long_replay_comes_in_pages_the_client_asks_for(private_key: rsa.RSAPrivateKey) -> None:
    async with memory_server(private_key, history_limit=5000) as server:
        bob = await server.login("bob")
        ann, welcome = await resuming(server, "ann")
        await ann.close()
        for n in range(1100):
            await bob.send("broadcast", text=f"m{n}")  # without rid: not answered
        await bob.request("list")
        back, _ = await resuming(server, "ann", token=welcome["token"], since=welcome["head"])
        pages = []
        while True:
            await back.wait_for(
                lambda e: len([x for x in back.events if x.type == "replayed"]) > len(pages), "a page"
            )
            page = [x for x in back.events if x.type == "replayed"][len(pages)]
            pages.append(page)
            if not page.get("more"):
                break
            cursor = max(e["seq"] for e in back.events if e.type == "broadcast")
            assert (
                await back.request("replay", since=welcome["head"], cursors=[{"target": "*", "seq": cursor}])
            ).type == "ok"
        assert [p.fields for p in pages] == [
            {"count": 500, "more": True},
            {"count": 500, "more": True},
            {"count": 100},
        ]
        texts = [e["text"] for e in back.events if e.type == "broadcast"]
        assert texts == [f"m{n}" for n in range(1100)]
