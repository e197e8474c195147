"""Review findings H1 (a guest's groups taken over with its name), M9 (groups without
access control), M6 (others' adds eating a user's quota) and M5 (replies over the
envelope limits), against a real server.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_harness import REPO_ROOT, child_env
from robust_helpers import (
    NO_ADDRESS_LIMITS,
    RawSession,
    ask,
    assert_fresh_pair_chats,
    outcome,
    running_server,
)

from chat.keys import load_public_key


@pytest.fixture
def public_key(key_pair: tuple[Path, Path]) -> rsa.RSAPublicKey:
    return load_public_key(key_pair[1])


async def _user(port: int, key: rsa.RSAPublicKey, name: str, password: str | None = None) -> RawSession:
    session = await RawSession.established(port, key)
    fields = {"name": name} | ({"password": password} if password else {})
    welcome = await session.request("login", **fields)
    assert welcome.type == "welcome", welcome
    return session


async def test_a_guests_name_brings_nothing_of_the_previous_holder(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """The review's H1: alice creates staff with bob, both post, alice quits; a new guest
    'Alice' gets no membership, no ownership, no history, and cannot kick bob."""
    async with running_server(key_pair[0], tmp_path / "server") as server:
        alice = await _user(server.port, public_key, "alice")
        bob = await _user(server.port, public_key, "bob")
        assert outcome(await ask(alice, "group_create", group="staff", members=["bob"])) == "group_created"
        assert outcome(await ask(alice, "group_message", group="staff", text="door code is 4711")) == "ok"
        assert outcome(await ask(bob, "group_message", group="staff", text="salary review: bob 5%")) == "ok"
        await ask(alice, "quit")
        mallory = await _user(server.port, public_key, "Alice")
        assert outcome(await ask(mallory, "group_history", group="staff")) == "not_member"
        assert outcome(await ask(mallory, "group_kick", group="staff", user="bob")) == "not_owner"
        mine = await ask(mallory, "group_members")
        assert mine["groups"] == []
        # bob owns it now; an open group can be joined, but its past stays unread.
        assert outcome(await ask(mallory, "group_join", group="staff")) == "group_joined"
        assert (await ask(mallory, "group_history", group="staff"))["messages"] == []
        assert outcome(await ask(bob, "group_message", group="staff", text="after")) == "ok"
        after = await ask(mallory, "group_history", group="staff")
        assert [m["text"] for m in after["messages"]] == ["after"]
        await assert_fresh_pair_chats(server, public_key)


async def test_invite_only_groups_and_kicks_that_stick(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """M9: an invite-only group cannot be joined nor its members listed by outsiders; a
    kicked account stays out; a kicked guest's other name cannot get in either."""
    async with running_server(key_pair[0], tmp_path / "server") as server:
        owner = await _user(server.port, public_key, "olga")
        assert outcome(await ask(owner, "register", password="olga password")) == "registered"
        member = await _user(server.port, public_key, "member1")
        assert outcome(await ask(member, "register", password="member password")) == "registered"
        assert outcome(await ask(owner, "group_create", group="g1", members=["member1"])) == "group_created"
        assert outcome(await ask(owner, "group_message", group="g1", text="pre-join secret")) == "ok"
        on = await ask(owner, "group_invite_only", group="g1", on=True)
        assert (on.type, on["on"]) == ("group_invite_only", True)
        outsider = await _user(server.port, public_key, "member1_alt")
        assert outcome(await ask(outsider, "group_join", group="g1")) == "invite_only"
        assert outcome(await ask(outsider, "group_members", group="g1")) == "not_member"
        assert outcome(await ask(member, "group_invite_only", group="g1", on=False)) == "not_owner"
        # Added by the owner: in, and reads only what follows.
        assert outcome(await ask(owner, "group_add", group="g1", user="member1_alt")) == "member_added"
        assert (await ask(outsider, "group_history", group="g1"))["messages"] == []
        # A kicked account stays out, across a reconnect.
        assert outcome(await ask(owner, "group_kick", group="g1", user="member1")) == "member_removed"
        await ask(member, "quit")
        member = await _user(server.port, public_key, "member1", "member password")
        assert outcome(await ask(member, "group_join", group="g1")) == "kicked"
        await assert_fresh_pair_chats(server, public_key)


async def test_adds_by_others_do_not_use_up_a_users_quota(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """M6: spammers create groups 'with' the victim; the victim's own /create and /join
    still work, and the victim can leave what it was added to."""
    options = ("--max-groups-per-user", "3", "--rate-limit", "0")
    async with running_server(key_pair[0], tmp_path / "server", *options) as server:
        victim = await _user(server.port, public_key, "victim")
        spammers = [await _user(server.port, public_key, f"spammer{i}") for i in range(3)]
        for i, spammer in enumerate(spammers):
            reply = await ask(spammer, "group_create", group=f"spam{i}", members=["victim"])
            assert outcome(reply) == "group_created"
        extra = await _user(server.port, public_key, "spammer3")
        refused = await ask(extra, "group_create", group="spam3", members=["victim"])
        assert outcome(refused) == "too_many_invitations"
        assert outcome(await ask(victim, "group_create", group="mine")) == "group_created"
        assert outcome(await ask(spammers[0], "group_create", group="open")) == "group_created"
        assert outcome(await ask(victim, "group_join", group="open")) == "group_joined"
        assert outcome(await ask(victim, "group_leave", group="spam0")) == "group_left"
        await assert_fresh_pair_chats(server, public_key)


@pytest.mark.slow
async def test_every_list_reply_fits_one_envelope(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """M5: 17 messages of 4,096 characters and the default /history; 1,030 groups and
    /showgroups; a group of 300 members with 32-character names and /showgroupmembers.
    Each answers with what fits and counts the rest (it was ``internal_error``)."""
    options = ("--rate-limit", "0", "--max-groups-per-user", "2000", "--max-per-ip", "0", *NO_ADDRESS_LIMITS,
               "--handshake-queue", "1000")  # fmt: skip
    async with running_server(key_pair[0], tmp_path / "server", *options) as server:
        alice = await _user(server.port, public_key, "alice")
        assert outcome(await ask(alice, "group_create", group="big")) == "group_created"
        for n in range(17):
            posted = await ask(alice, "group_message", group="big", text=chr(0x4E00 + n) * 4096)
            assert outcome(posted) == "ok"
        history = await ask(alice, "group_history", group="big")
        assert history.type == "group_history" and history["more"] == 17 - len(history["messages"]) > 0
        older = await ask(alice, "group_history", group="big", before=history["before"] + 1, limit=1)
        assert len(older["messages"]) == 1

        for n in range(1030):
            await alice.send("group_create", group=f"group{n:04d}")
        listed = await ask(alice, "group_list")
        assert listed.type == "group_list" and len(listed["groups"]) + listed["more"] == 1031

        names = [f"member{n:03d}".ljust(32, "x") for n in range(300)]
        sessions = await asyncio.gather(*(_user(server.port, public_key, name) for name in names))
        for session in sessions:
            await session.send("group_join", group="big")
        await asyncio.sleep(0.5)
        members = await ask(alice, "group_members", group="big")
        shown = members["groups"][0]["members"]
        assert members.type == "group_members" and len(shown) + members["more"] == 301, members.type
        await assert_fresh_pair_chats(server, public_key)


async def test_registered_only_refuses_guests(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    directory = tmp_path / "server"
    directory.mkdir()
    added = subprocess.run(
        [sys.executable, "-m", "chat.server", "--add-account", "sophia"], input="sophia's password\n",
        cwd=directory, env=child_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert REPO_ROOT.exists()
    async with running_server(key_pair[0], directory, "--registered-only") as server:
        guest = await RawSession.established(server.port, public_key)
        refused = await guest.request("login", name="jojo")
        assert (refused.type, refused["code"]) == ("error", "registration_required")
        sophia = await _user(server.port, public_key, "sophia", "sophia's password")
        listed = await ask(sophia, "list")
        assert (listed["users"], listed["registered"]) == (["sophia"], ["sophia"])
