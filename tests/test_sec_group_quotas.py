"""Review finding M6 (throwaway names filling the group table): groups one user may own,
groups created per hour per creator and per network, and abandoned groups expiring;
against a real server.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from robust_helpers import RawSession, ask, assert_fresh_pair_chats, opened_from, outcome, running_server

from chat.keys import load_public_key


@pytest.fixture
def public_key(key_pair: tuple[Path, Path]) -> rsa.RSAPublicKey:
    return load_public_key(key_pair[1])


async def _user(port: int, key: rsa.RSAPublicKey, name: str, source: str = "127.0.0.1") -> RawSession:
    session = await opened_from(port, source)
    await session.handshake(key)
    welcome = await session.request("login", name=name)
    assert welcome.type == "welcome", welcome
    return session


async def test_groups_one_user_may_own(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """Past --max-owned-groups a user's /create is refused until they delete one."""
    async with running_server(key_pair[0], tmp_path, "--max-owned-groups", "3") as server:
        olga = await _user(server.port, public_key, "olga")
        for number in range(3):
            assert outcome(await ask(olga, "group_create", group=f"g{number}")) == "group_created"
        refused = await ask(olga, "group_create", group="g3")
        assert (refused["code"], refused["limit"]) == ("too_many_owned_groups", 3)
        assert outcome(await ask(olga, "group_delete", group="g0")) == "group_delete_done"
        assert outcome(await ask(olga, "group_create", group="g3")) == "group_created"
        # Another user is not affected by olga's quota.
        pia = await _user(server.port, public_key, "pia")
        assert outcome(await ask(pia, "group_create", group="p0")) == "group_created"
        await assert_fresh_pair_chats(server, public_key)


async def test_group_creation_rate_per_creator_and_per_network(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """The review's attack: many throwaway names from one network creating groups. One
    creator gets --group-creations-per-hour; one network six times that, shared by all its
    names; another network is unaffected."""
    async with running_server(
        key_pair[0], tmp_path, "--group-creations-per-hour", "2", "--max-owned-groups", "0"
    ) as server:
        first = await _user(server.port, public_key, "spam0", "127.0.3.1")
        assert outcome(await ask(first, "group_create", group="s0a")) == "group_created"
        assert outcome(await ask(first, "group_create", group="s0b")) == "group_created"
        refused = await ask(first, "group_create", group="s0c")
        assert (refused["code"], refused["limit"]) == ("creating_groups_too_fast", 2)
        # Fresh names from the same /24: the network's 12 are used up after 10 more.
        created = 2
        results: list[str] = []
        for number in range(1, 8):
            spammer = await _user(server.port, public_key, f"spam{number}", f"127.0.3.{number + 1}")
            for letter in "ab":
                results.append(outcome(await ask(spammer, "group_create", group=f"s{number}{letter}")))
        created += results.count("group_created")
        assert created == 12
        assert results[10:] == ["creating_groups_too_fast"] * 4
        # A user on another network still creates groups.
        other = await _user(server.port, public_key, "teacher", "127.0.4.1")
        assert outcome(await ask(other, "group_create", group="class")) == "group_created"
        await assert_fresh_pair_chats(server, public_key)


async def test_abandoned_groups_expire(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """A stored group unused for --group-expiry-days is deleted with its history (at
    start and hourly), so its name is free again; a used group stays."""
    async with running_server(key_pair[0], tmp_path) as server:
        olga = await _user(server.port, public_key, "olga")
        assert outcome(await ask(olga, "register", password="olga password")) == "registered"
        for group in ("old", "used"):
            assert outcome(await ask(olga, "group_create", group=group)) == "group_created"
            assert outcome(await ask(olga, "group_message", group=group, text=f"in {group}")) == "ok"
    # 'old' was last used 40 days ago (as if the server had run that long).
    with sqlite3.connect(tmp_path / "chat.db") as db:
        db.execute("UPDATE chat_group SET active_at = ? WHERE name_key = 'old'", (time.time() - 40 * 86400,))
    async with running_server(key_pair[0], tmp_path, "--group-expiry-days", "30") as server:
        olga = await RawSession.established(server.port, public_key)
        welcome = await olga.request("login", name="olga", password="olga password")
        assert welcome.type == "welcome", welcome
        mine = await ask(olga, "group_members")
        assert [group["group"] for group in mine["groups"]] == ["used"]
        assert outcome(await ask(olga, "group_history", group="old")) == "no_such_group"
        history = await ask(olga, "group_history", group="used")
        assert [m["text"] for m in history["messages"]] == ["in used"]
        # The name is free; the new group has none of the old one's history.
        assert outcome(await ask(olga, "group_create", group="old")) == "group_created"
        assert (await ask(olga, "group_history", group="old"))["messages"] == []
    with sqlite3.connect(tmp_path / "chat.db") as db:
        texts = [row[0] for row in db.execute("SELECT text FROM message WHERE conv LIKE '#%' ORDER BY id")]
    assert texts == ["in used"]
