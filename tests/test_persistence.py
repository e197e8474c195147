"""Accounts and storage (README "Accounts and guests") end to end: accounts, groups,
offline messages and history survive restarts and a ``kill -9``; every check runs against
a real server on 127.0.0.1 (in the test's event loop, local_chat.py; a process where it
is killed)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import session_helpers
from e2e_harness import ServerProcess
from local_chat import LocalServer

from chat.client.transport import ClientError, ClientSession, Disconnected, open_session
from chat.keys import load_public_key
from chat.protocol.envelope import Envelope

#: Events about others that may arrive while a test waits for its own reply.
NOTIFICATIONS = {
    "user_joined", "user_exited", "member_joined", "member_left", "member_removed", "group_added"
}


class Server:
    """A server whose database lives in one directory across restarts; a process if
    ``killable``."""

    def __init__(self, private_pem: Path, public_pem: Path, directory: Path, *, killable: bool) -> None:
        self.private_pem = private_pem
        self.public_key = load_public_key(public_pem)
        self.directory = directory
        self.killable = killable
        self.process: ServerProcess | LocalServer | None = None

    async def start(self, *options: str) -> None:
        options = ("--rate-limit", "0", "--network-rate-limit", "0", *options)
        kind = ServerProcess if self.killable else LocalServer
        self.process = await kind.start(self.private_pem, self.directory, *options)

    async def stop(self) -> None:
        assert self.process is not None
        problems = await self.process.stop()
        assert not problems, problems

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def kill(self) -> None:
        assert isinstance(self.process, ServerProcess)
        os.kill(self.process.proc.pid, signal.SIGKILL)

    async def connect(self) -> ClientSession:
        assert self.process is not None
        return await open_session("127.0.0.1", self.process.port, self.public_key)

    async def login(
        self, name: str, password: str | None = None, features: list[str] | None = None
    ) -> ClientSession:
        session = await self.connect()
        fields: dict[str, object] = {"name": name}
        if password is not None:
            fields["password"] = password
        if features is not None:
            fields["features"] = features
        welcome = await reply(session, "login", **fields)
        assert welcome.type == "welcome", welcome
        assert welcome["name"].casefold() == name.casefold(), welcome
        return session


    async def account(self, name: str) -> ClientSession:
        """A session of ``name``, registered with the password ``name + ' password'``
        (only registered users' groups and memberships are kept)."""
        session = await self.login(name)
        assert (await reply(session, "register", password=f"{name} password")).type == "registered"
        return session

    async def login_account(self, name: str) -> ClientSession:
        return await self.login(name, f"{name} password")


async def reply(session: ClientSession, kind: str, **fields: object) -> Envelope:
    """Send a request and return its reply, skipping only NOTIFICATIONS."""
    return await session_helpers.reply(session, kind, skip=NOTIFICATIONS, **fields)


async def _started(key_pair: tuple[Path, Path], tmp_path: Path, *, killable: bool) -> AsyncIterator[Server]:
    instance = Server(key_pair[0], key_pair[1], tmp_path / "server", killable=killable)
    await instance.start()
    yield instance
    if instance.process is not None and instance.process.returncode is None:
        await instance.stop()


@pytest.fixture
async def server(key_pair: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[Server]:
    async for instance in _started(key_pair, tmp_path, killable=False):
        yield instance


@pytest.fixture
async def server_process(key_pair: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[Server]:
    async for instance in _started(key_pair, tmp_path, killable=True):
        yield instance


@pytest.mark.slow
async def test_registered_name_needs_its_password_after_a_restart(server: Server) -> None:
    alice = await server.login("Alice")
    weak = await reply(alice, "register", password="short")
    assert weak.fields == {"code": "weak_password", "limit": 8, "re": 2}
    registered = await reply(alice, "register", password="correct horse")
    assert (registered.type, registered["name"]) == ("registered", "Alice")
    again = await reply(alice, "register", password="another one")
    assert (again.type, again["code"]) == ("error", "already_registered")
    await server.restart()

    session = await server.connect()
    missing = await reply(session, "login", name="alice")
    assert (missing.type, missing["code"], missing["name"]) == ("error", "password_required", "Alice")
    started = time.monotonic()
    wrong = await reply(session, "login", name="alice", password="wrong horse")
    assert (wrong.type, wrong["code"]) == ("error", "wrong_password")
    assert time.monotonic() - started >= 0.9, "a wrong password must be answered slowly"
    welcome = await reply(session, "login", name="alice", password="correct horse")
    assert (welcome.type, welcome["name"]) == ("welcome", "Alice"), "shown as registered"

    new = "battery staple"
    bad_old = await reply(session, "change_password", old_password="nope nope", new_password=new)
    assert (bad_old.type, bad_old["code"]) == ("error", "wrong_password")
    changed = await reply(session, "change_password", old_password="correct horse", new_password=new)
    assert changed.type == "password_changed"
    await reply(session, "quit")
    await server.restart()
    alice = await server.login("alice", "battery staple")
    await reply(alice, "quit")
    refused = await reply(await server.connect(), "login", name="ALICE", password="correct horse")
    assert (refused.type, refused["code"]) == ("error", "wrong_password")


async def test_unregistered_names_work_without_password(server: Server) -> None:
    bob = await server.login("bob")
    listed = await reply(bob, "list")
    assert listed["users"] == ["bob"]
    not_registered = await reply(bob, "change_password", old_password="whatever1", new_password="whatever2")
    assert (not_registered.type, not_registered["code"]) == ("error", "not_registered")


@pytest.mark.slow
async def test_wrong_passwords_are_throttled_per_name(server: Server) -> None:
    await server.stop()
    await server.start("--wrong-password-delay", "0.05")
    owner = await server.login("carol")
    await reply(owner, "register", password="the right one")
    await reply(owner, "quit")
    session = await server.connect()
    codes = []
    for _ in range(6):
        codes.append((await reply(session, "login", name="carol", password="not it at all"))["code"])
    assert codes == ["wrong_password"] * 5 + ["too_many_attempts"]
    blocked = await reply(session, "login", name="carol", password="the right one")
    assert (blocked.type, blocked["code"]) == ("error", "too_many_attempts")


async def test_groups_members_and_kicks_survive_a_restart(server: Server) -> None:
    alice = await server.account("alice")
    bob = await server.account("bob")
    carl = await server.account("carl")
    assert (await reply(alice, "group_create", group="Team", members=["bob"])).type == "group_created"
    assert (await reply(alice, "group_create", group="second")).type == "group_created"
    assert (await reply(carl, "group_join", group="team")).type == "group_joined"
    assert (await reply(alice, "group_kick", group="team", user="bob")).type == "member_removed"
    for session in (alice, bob, carl):
        await session.close()
    await server.restart()

    alice = await server.login_account("alice")
    bob = await server.login_account("bob")
    groups = await reply(bob, "group_list")
    assert groups["groups"] == ["Team", "second"]
    kicked = await reply(bob, "group_join", group="team")
    assert (kicked.type, kicked["code"]) == ("error", "kicked")
    members = await reply(alice, "group_members", group="team")
    team = {"group": "Team", "members": ["alice", "carl"], "registered": ["alice", "carl"]}
    assert members["groups"] == [team]
    # alice still owns it: she can remove carl, who is offline but a member.
    assert (await reply(alice, "group_kick", group="team", user="carl")).type == "member_removed"
    # ...and leaving passes nothing on (no members left): the group is gone after a restart.
    assert (await reply(alice, "group_leave", group="team")).type == "group_left"
    await server.restart()
    bob = await server.login_account("bob")
    assert (await reply(bob, "group_list"))["groups"] == ["second"]


async def test_offline_private_message_is_delivered_once_at_next_login(server: Server) -> None:
    bob = await server.login("bob")
    await reply(bob, "register", password="bob's secret")
    await reply(bob, "quit")
    alice = await server.login("alice")
    queued = await reply(alice, "private", to="BOB", text="see you tomorrow")
    assert (queued.type, queued["to"], queued["text"]) == ("private_queued", "bob", "see you tomorrow")
    unknown = await reply(alice, "private", to="nobody", text="hello?")
    assert (unknown.type, unknown["code"], unknown["users"]) == ("error", "user_not_online", ["nobody"])
    before = int(time.time())
    await server.restart()

    bob = await server.login("bob", "bob's secret", ["offline_pages"])
    late = await asyncio.wait_for(bob.recv(), 5)
    assert (late.type, late["sender"], late["text"]) == ("private", "alice", "see you tomorrow")
    assert before - 60 <= late["sent_at"] <= before + 1
    page = await asyncio.wait_for(bob.recv(), 5)
    assert (page.type, page["upto"], page["more"]) == ("offline_page", late["id"], 0)
    await reply(bob, "quit")  # not acknowledged: kept, and delivered again
    bob = await server.login("bob", "bob's secret", ["offline_pages"])
    again = await asyncio.wait_for(bob.recv(), 5)
    assert (again.type, again["id"], again["text"]) == ("private", late["id"], "see you tomorrow")
    assert (await asyncio.wait_for(bob.recv(), 5)).type == "offline_page"
    assert (await reply(bob, "offline_ack", upto=late["id"])).type == "ok"
    await reply(bob, "quit")
    bob = await server.login("bob", "bob's secret")
    listed = await reply(bob, "list")  # the reply comes first: nothing was queued again
    assert listed["users"] == ["bob"]


async def test_a_client_without_offline_pages_gets_stored_messages_as_version_1_did(server: Server) -> None:
    """PROTOCOL.md section 6.6: a client that does not ask for ``offline_pages`` (an
    earlier version-1 client) gets its stored messages right after ``welcome`` as plain
    ``private {sender, text, sent_at}``, with no ``id``, no ``offline_page`` and no
    ``welcome.offline``, and they are deleted once sent."""
    bob = await server.login("bob")
    await reply(bob, "register", password="bob's secret")
    await reply(bob, "quit")
    alice = await server.login("alice")
    for text in ("one", "two"):
        assert (await reply(alice, "private", to="bob", text=text)).type == "private_queued"
    session = await server.connect()
    welcome = await reply(session, "login", name="bob", password="bob's secret")
    assert welcome.fields == {"name": "bob", "re": welcome["re"]}
    first, second = [await asyncio.wait_for(session.recv(), 5) for _ in range(2)]
    assert [(e.type, e["text"], "id" in e.fields) for e in (first, second)] == [
        ("private", "one", False), ("private", "two", False),
    ]  # fmt: skip
    listed = await reply(session, "list")  # no offline_page before it
    assert listed.type == "user_list"
    await reply(session, "quit")
    bob = await server.login("bob", "bob's secret", ["offline_pages"])
    welcome_again = await reply(bob, "list")
    assert welcome_again.type == "user_list", "nothing was kept to deliver again"


async def test_history_is_kept_for_members_only(server: Server) -> None:
    alice = await server.account("alice")
    bob = await server.login("bob")
    await reply(alice, "group_create", group="g")
    for n in range(3):
        assert (await reply(alice, "group_message", group="g", text=f"message {n}")).type == "ok"
    refused = await reply(bob, "group_history", group="g")
    assert (refused.type, refused["code"], refused["group"]) == ("error", "not_member", "g")
    await server.restart()
    alice = await server.login_account("alice")
    history = await reply(alice, "group_history", group="G")
    assert [(m["sender"], m["text"]) for m in history["messages"]] == [
        ("alice", "message 0"), ("alice", "message 1"), ("alice", "message 2")
    ]
    last_two = await reply(alice, "group_history", group="g", limit=2)
    assert [m["text"] for m in last_two["messages"]] == ["message 1", "message 2"]


async def test_kill_9_during_traffic_loses_nothing_acknowledged(server_process: Server) -> None:
    server = server_process
    alice = await server.account("alice")
    await server.login("bob")
    await reply(alice, "group_create", group="busy", members=["bob"])
    acked_texts: list[str] = []
    acked_groups: list[str] = []
    pending: dict[int, tuple[str, str]] = {}

    async def traffic() -> None:
        try:
            for n in range(400):
                rid = await alice.send("group_message", group="busy", text=f"m{n}")
                pending[rid] = ("text", f"m{n}")
                if n % 40 == 0:
                    rid = await alice.send("group_create", group=f"g{n}")
                    pending[rid] = ("group", f"g{n}")
                await asyncio.sleep(0)
        except ClientError:
            pass  # the server was killed under us

    async def acknowledgements() -> None:
        while True:
            event = await alice.recv()
            kind_value = pending.pop(event.get("re", -1), None)
            if kind_value is None:
                continue
            kind, value = kind_value
            if kind == "text" and event.type == "ok":
                acked_texts.append(value)
            elif kind == "group" and event.type == "group_created":
                acked_groups.append(value)
            if len(acked_texts) == 150:
                server.kill()

    reader = asyncio.create_task(acknowledgements())
    await traffic()
    with pytest.raises(Disconnected):
        await asyncio.wait_for(reader, 10)
    assert len(acked_texts) >= 150
    assert server.process is not None
    assert await server.process.wait_exit(5) == -signal.SIGKILL

    await server.start()
    alice = await server.login_account("alice")
    history = await reply(alice, "group_history", group="busy", limit=1000)
    stored = [m["text"] for m in history["messages"]]
    assert stored[: len(acked_texts)] == acked_texts, "every acknowledged message is there, in order"
    groups = (await reply(alice, "group_list"))["groups"]
    assert set(acked_groups) <= set(groups)
