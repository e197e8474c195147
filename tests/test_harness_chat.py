"""The chat core in memory (tests/harness.py): the real session, handlers and storage,
driven without sockets. Each scenario here once needed server processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import memory_server

from chat.keys import load_private_key


@pytest.fixture
def private_key(key_pair: tuple[Path, Path]) -> rsa.RSAPrivateKey:
    return load_private_key(key_pair[0])


async def test_the_seed_session_in_memory(private_key: rsa.RSAPrivateKey) -> None:
    """Broadcast, list, private message, a group with a join and a message, quit."""
    async with memory_server(private_key) as server:
        sophia = await server.login("sophia")
        jojo = await server.login("jojo")
        assert (await sophia.request("broadcast", text="Hello everyone!")).type == "ok"
        said = await jojo.wait_for(lambda e: e.type == "broadcast", "the broadcast")
        assert said.fields == {"sender": "sophia", "text": "Hello everyone!"}
        assert (await sophia.request("list"))["users"] == ["sophia", "jojo"]
        sent = await sophia.request("private", to="jojo", text="How are you?")
        assert (sent.type, sent["to"]) == ("private_sent", "jojo")
        got = await jojo.wait_for(lambda e: e.type == "private", "the private message")
        assert got.fields == {"sender": "sophia", "text": "How are you?"}
        assert (await sophia.request("group_create", group="haha")).type == "group_created"
        assert (await jojo.request("group_list"))["groups"] == ["haha"]
        assert (await jojo.request("group_join", group="haha")).type == "group_joined"
        joined = await sophia.wait_for(lambda e: e.type == "member_joined", "the join")
        assert joined.fields == {"group": "haha", "name": "jojo"}
        assert (await jojo.request("group_message", group="haha", text="Hello there!")).type == "ok"
        message = await sophia.wait_for(lambda e: e.type == "group_message", "the group message")
        assert message.fields == {"group": "haha", "sender": "jojo", "text": "Hello there!"}
        assert (await jojo.request("quit")).type == "ok"
        exited = await sophia.wait_for(lambda e: e.type == "user_exited", "the exit")
        assert exited["names"] == ["jojo"]


async def test_refusals_come_from_the_session_and_the_handlers(private_key: rsa.RSAPrivateKey) -> None:
    async with memory_server(private_key) as server:
        early = await server.connect()
        refused = await early.request("list")
        assert (refused.type, refused["code"]) == ("error", "not_logged_in")
        ann = await server.login("ann")
        taken = await early.request("login", name="ANN")
        assert (taken["code"], taken["name"]) == ("username_taken", "ANN")
        again = await ann.request("login", name="ann")
        assert again["code"] == "already_logged_in"
        missing = await ann.request("group_join", group="nope")
        assert (missing["code"], missing["group"]) == ("no_such_group", "nope")
        await early.send_record("text")
        assert early.ended is not None and early.ended.code == 1003
