"""``history`` and ``search`` over stored conversations (PROTOCOL.md section 6.7), on the
in-memory server (tests/harness.py: the real handlers and SQLite): who may read what,
paging, and words found in any script. A property test over random memberships checks
that neither ever shows a message its reader may not read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import MemoryPeer, MemoryServer, memory_server
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chat.keys import load_private_key


@pytest.fixture(scope="module")
def private_key(key_pair: tuple[Path, Path]) -> rsa.RSAPrivateKey:
    return load_private_key(key_pair[0])


def texts(reply: Any, field: str = "messages") -> list[str]:
    return [entry["text"] for entry in reply[field]]


async def ok(peer: MemoryPeer, kind: str, **fields: Any) -> None:
    reply = await peer.request(kind, **fields)
    assert reply.type in ("ok", "private_sent", "private_queued", "group_created", "group_joined"), reply


async def test_history_of_everyone_a_pair_and_a_group(private_key: rsa.RSAPrivateKey) -> None:
    async with memory_server(private_key) as server:
        ann, bob, cy = [await server.login(n) for n in ("Ann", "bob", "cy")]
        await ok(ann, "broadcast", text="hello all")
        await ok(ann, "private", to="bob", text="for bob")
        await ok(bob, "private", to="ANN", text="for ann")
        await ok(ann, "private", to="cy", text="for cy")
        await ok(ann, "group_create", group="Team", members=["bob"])
        await ok(bob, "group_message", group="team", text="before cy")
        await ok(cy, "group_join", group="TEAM")
        await ok(ann, "group_message", group="team", text="after cy")
        everyone = await bob.request("history")
        assert (everyone.type, everyone["target"], texts(everyone)) == ("history", "*", ["hello all"])
        assert [m["seq"] for m in everyone["messages"]] == [1]
        pair = await bob.request("history", target="@ann")
        assert (pair["target"], texts(pair)) == ("@ann", ["for bob", "for ann"])
        assert [(m["sender"], m["seq"]) for m in pair["messages"]] == [("Ann", 1), ("bob", 2)]
        assert texts(await cy.request("history", target="@Ann")) == ["for cy"]
        assert texts(await bob.request("history", target="team")) == ["before cy", "after cy"]
        assert texts(await cy.request("history", target="team")) == ["after cy"]
        outsider = await server.login("dee")
        refused = await outsider.request("history", target="team")
        assert (refused.type, refused["code"]) == ("error", "not_member")
        assert texts(await outsider.request("history", target="@ann")) == []


async def test_a_later_holder_of_a_guest_name_reads_nothing_of_the_earlier_one(
    private_key: rsa.RSAPrivateKey,
) -> None:
    async with memory_server(private_key) as server:
        ann = await server.login("ann")
        first = await server.login("bob")
        await ok(ann, "private", to="bob", text="secret for the first bob")
        assert texts(await first.request("history", target="@ann")) == ["secret for the first bob"]
        await first.close()
        second = await server.login("bob")
        assert texts(await second.request("history", target="@ann")) == []
        found = await second.request("search", words="secret")
        assert found["results"] == []
        # Registering keeps what this holder was told since their login, nothing before.
        await ok(ann, "private", to="bob", text="secret for the second bob")
        assert (await second.request("register", password="second bob pw")).type == "registered"
        await second.close()
        again = await server.login("bob", "second bob pw")
        assert texts(await again.request("history", target="@ann")) == ["secret for the second bob"]


async def test_history_pages_back_with_before(private_key: rsa.RSAPrivateKey) -> None:
    async with memory_server(private_key) as server:
        ann = await server.login("ann")
        for n in range(7):
            await ok(ann, "broadcast", text=f"m{n}")
        page = await ann.request("history", limit=3)
        assert texts(page) == ["m4", "m5", "m6"]
        older = await ann.request("history", limit=3, before=page["messages"][0]["id"])
        assert texts(older) == ["m1", "m2", "m3"]
        big = "x" * 4000
        for _ in range(40):
            await ok(ann, "broadcast", text=big)
        full = await ann.request("history", limit=100)
        assert 0 < len(full["messages"]) < 47 and full["more"] == 47 - len(full["messages"])
        assert full["before"] == full["messages"][0]["id"]


async def test_search_finds_words_in_any_script_newest_first(private_key: rsa.RSAPrivateKey) -> None:
    async with memory_server(private_key) as server:
        ann, bob = await server.login("Ann"), await server.login("bob")
        await ok(ann, "broadcast", text="The Deployment starts at noon")
        await ok(bob, "private", to="ann", text="deployment went fine")
        await ok(ann, "group_create", group="Ops", members=["bob"])
        await ok(ann, "group_message", group="ops", text="我们明天部署新版本")
        await ok(bob, "group_message", group="ops", text="部署完成 ok")
        found = await bob.request("search", words="DEPLOY")
        assert [(r["where"], r["sender"], r["text"]) for r in found["results"]] == [
            ("@Ann", "bob", "deployment went fine"),
            ("*", "Ann", "The Deployment starts at noon"),
        ]
        both = await ann.request("search", words="部署")
        assert texts(both, "results") == ["部署完成 ok", "我们明天部署新版本"]
        assert texts(await ann.request("search", words="部署 ok"), "results") == ["部署完成 ok"]
        assert texts(await ann.request("search", words="明天部署新"), "results") == ["我们明天部署新版本"]
        assert texts(await ann.request("search", words="noon starts"), "results") == [
            "The Deployment starts at noon"
        ]
        assert (await ann.request("search", words="nothing-like-this"))["results"] == []
        for n in range(5):
            await ok(ann, "broadcast", text=f"page {n}")
        first = await ann.request("search", words="page", limit=2)
        assert texts(first, "results") == ["page 4", "page 3"]
        rest = await ann.request("search", words="page", limit=10, before=first["before"])
        assert texts(rest, "results") == ["page 2", "page 1", "page 0"] and "before" not in rest.fields


# --- never what one may not read --------------------------------------------------------

USERS = ["u0", "u1", "u2"]
GROUPS = ["g0", "g1"]
ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.sampled_from(USERS), st.sampled_from(GROUPS)),
        st.tuples(st.just("leave"), st.sampled_from(USERS), st.sampled_from(GROUPS)),
        st.tuples(st.just("say"), st.sampled_from(USERS), st.sampled_from(GROUPS)),
        st.tuples(st.just("private"), st.sampled_from(USERS), st.sampled_from(USERS)),
        st.tuples(st.just("everyone"), st.sampled_from(USERS), st.just("")),
    ),
    max_size=30,
)


async def _run(server: MemoryServer, actions: list[tuple[str, str, str]]) -> None:
    peers = {name: await server.login(name) for name in USERS}
    keeper = await server.login("keeper")
    for group in GROUPS:
        await ok(keeper, "group_create", group=group)
    members: dict[str, set[str]] = {g: set() for g in GROUPS}
    joined: dict[tuple[str, str], int] = {}
    #: Oracle: who may read each message text (every text is unique), given at the end
    #: for group messages: members now who joined (last) before it was said.
    readers: dict[str, set[str]] = {}
    said: dict[str, tuple[str, int]] = {}
    for n, (action, user, other) in enumerate(actions):
        peer = peers[user]
        text = f"word{n:03d} {action}"
        if action == "join" and user not in members[other]:
            await ok(peer, "group_join", group=other)
            members[other].add(user)
            joined[user, other] = n
        elif action == "leave" and user in members[other]:
            assert (await peer.request("group_leave", group=other)).type == "group_left"
            members[other].discard(user)
        elif action == "say" and user in members[other]:
            await ok(peer, "group_message", group=other, text=text)
            said[text] = (other, n)
        elif action == "private":
            await ok(peer, "private", to=other, text=text)
            readers[text] = {user, other}
        elif action == "everyone":
            await ok(peer, "broadcast", text=text)
            readers[text] = set(USERS)
    for text, (group, n) in said.items():
        readers[text] = {u for u in members[group] if joined[u, group] < n}
    for name, peer in peers.items():
        found = set(texts(await peer.request("search", words="word", limit=50), "results"))
        allowed = {text for text, who in readers.items() if name in who}
        assert found == allowed, (name, sorted(found ^ allowed))
        for target in ["*", *(f"@{u}" for u in USERS)]:
            shown = set(texts(await peer.request("history", target=target, limit=100)))
            assert shown <= allowed, (name, target, sorted(shown - allowed))
        for group in GROUPS:
            reply = await peer.request("history", target=group, limit=100)
            shown = set(texts(reply)) if reply.type == "history" else set()
            assert shown <= allowed, (name, group, sorted(shown - allowed))
            assert (reply.type == "history") == (name in members[group]), (name, group, reply)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
@example(actions=[("join", "u0", "g0"), ("say", "u0", "g0"), ("join", "u1", "g0")])
@example(actions=[("join", "u0", "g0"), ("say", "u0", "g0"), ("leave", "u0", "g0"), ("join", "u0", "g0")])
@example(actions=[("private", "u0", "u1"), ("everyone", "u2", ""), ("private", "u2", "u2")])
async def test_search_and_history_show_only_what_one_may_read(
    private_key: rsa.RSAPrivateKey, actions: list[tuple[str, str, str]]
) -> None:
    """Random joins, leaves and messages: each user's search finds exactly the messages
    they may read (a group's from when they last joined it, while they are a member of it),
    and no history shows anything else."""
    async with memory_server(private_key) as server:
        await _run(server, actions)


async def test_a_server_that_stores_nothing_still_numbers_and_delivers(
    private_key: rsa.RSAPrivateKey,
) -> None:
    """--no-store: messages are delivered and numbered as ever; nothing is kept to read."""
    async with memory_server(private_key, store_messages=False) as server:
        ann = await server.login("ann", features=["resume"])
        bob = await server.login("bob")
        sent = await bob.request("broadcast", text="not kept", cmid="c1")
        assert (sent["mid"], sent["seq"]) == (1, 1)
        said = await ann.wait_for(lambda e: e.type == "broadcast", "the broadcast")
        assert (said["text"], said["seq"]) == ("not kept", 1)
        assert (await ann.request("history"))["messages"] == []
        assert (await ann.request("search", words="kept"))["results"] == []
