"""Accounts (README "Accounts and guests") through the real line-mode client: /register, Password: at login,
[Wrong password.], /passwd, --password-file, offline messages and /history."""

from __future__ import annotations

import re
import time
from pathlib import Path

from e2e_harness import USERNAME_PROMPT, LineExpectations
from local_chat import LocalChat as Chat

from chat.client.render import when

HISTORY_LINE = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d\] ")


async def register(client: LineExpectations, password: str) -> None:
    client.send("/register")
    await client.expect("Password: ")
    client.send(password)
    await client.expect("Repeat password: ")
    client.send(password)
    await client.expect(f"[Name '{client.name}' is now registered.]")


async def login_with_password(chat: Chat, name: str, password: str) -> LineExpectations:
    client = await chat.spawn(label=name)
    await client.expect(USERNAME_PROMPT)
    client.send(name)
    await client.expect("Password: ")
    client.send(password)
    await client.expect(f"[Welcome {name}]")
    client.name = name
    return client


async def test_register_then_password_needed_and_wrong_password_asks_again(chat: Chat) -> None:
    sophia = await chat.login_one("sophia")
    await register(sophia, "flower bottle")
    await sophia.close()

    again = await chat.spawn(label="sophia-again")
    await again.expect(USERNAME_PROMPT)
    again.send("sophia")
    await again.expect("Password: ")
    again.send("not the password")
    await again.expect("[Wrong password.]")
    await again.expect(USERNAME_PROMPT)
    again.send("sophia")
    await again.expect("Password: ")
    again.send("flower bottle")
    await again.expect("[Welcome sophia]")
    again.name = "sophia"
    await again.close()


async def test_register_mismatch_short_and_twice(chat: Chat) -> None:
    jojo = await chat.login_one("jojo")
    jojo.send("/register")
    await jojo.expect("Password: ")
    jojo.send("first one!")
    await jojo.expect("Repeat password: ")
    jojo.send("second one")
    await jojo.expect("Passwords do not match; nothing was changed.")
    jojo.send("/register")
    jojo.send("short")
    jojo.send("short")
    await jojo.expect("Password too short: use at least 8 characters.")
    await register(jojo, "long enough")
    jojo.send("/register")
    jojo.send("long enough")
    jojo.send("long enough")
    await jojo.expect("[Name 'jojo' is already registered.]")


async def test_passwd_changes_the_password(chat: Chat, tmp_path: Path) -> None:
    nana = await chat.login_one("nana")
    nana.send("/passwd")
    nana.send("whatever1")
    nana.send("whatever2")
    nana.send("whatever2")
    await nana.expect("[Name 'nana' is not registered; use /register first.]")
    await register(nana, "old password")
    nana.send("/passwd")
    await nana.expect("Password: ")
    nana.send("wrong old one")
    await nana.expect("New password: ")
    nana.send("new password")
    await nana.expect("Repeat password: ")
    nana.send("new password")
    await nana.expect("[Wrong password.]")
    nana.send("/passwd")
    nana.send("old password")
    nana.send("new password")
    nana.send("new password")
    await nana.expect("[Password changed.]")
    await nana.close()

    # --password-file answers the Password: question itself (for scripts).
    secret = tmp_path / "password.txt"
    secret.write_text("new password\n")
    scripted = await chat.spawn("nana", None, "--password-file", str(secret))
    await scripted.expect("[Welcome nana]")
    await scripted.assert_no_line("Password: ")


async def test_offline_message_arrives_once_marked_late(chat: Chat) -> None:
    bob = await chat.login_one("bob")
    await register(bob, "bob's password")
    await bob.close()
    alice = await chat.login_one("alice")
    before = int(time.time())
    alice.send("/msg bob see you tomorrow")
    await alice.expect("[bob is offline; the message will be delivered at their next login.]")
    alice.send("/msg carl hello?")
    await alice.expect("User 'carl' is not online.")

    bob = await login_with_password(chat, "bob", "bob's password")
    late = await bob.expect_prefix("Private message from alice (sent ")
    assert late in {
        f"Private message from alice (sent {when(t)}): see you tomorrow" for t in (before, before + 1)
    }
    await bob.close()
    bob = await login_with_password(chat, "bob", "bob's password")
    await bob.sync("alice, bob\u2713")  # bob is registered: marked
    await bob.assert_no_line(late)


async def test_history_for_members_only(chat: Chat) -> None:
    sophia, jojo = await chat.login("sophia", "jojo")
    sophia.send("/create haha")
    await sophia.expect("Group haha created and joined.")
    now = int(time.time())
    sophia.send("/group haha first")
    sophia.send("/group haha second")
    sophia.send("/history haha")
    stamps = {when(t) for t in (now, now + 1)}
    first = await sophia.expect_match(HISTORY_LINE.match, "a history line")
    second = await sophia.expect_match(HISTORY_LINE.match, "a history line")
    assert first in {f"[{s}] sophia: first" for s in stamps}
    assert second in {f"[{s}] sophia: second" for s in stamps}
    sophia.send("/history haha 1")
    assert await sophia.expect_match(HISTORY_LINE.match, "a history line") == second
    jojo.send("/history haha")
    await jojo.expect("You are not a member of group haha.")
    jojo.send("/history")
    await jojo.expect("No messages to everyone yet.")
    jojo.send("/history haha 2 3")
    await jojo.expect("Usage: /history [* | @<username> | <group>] [<count>]")
    jojo.send("/create empty")
    jojo.send("/history empty")
    await jojo.expect("No messages in group empty yet.")
