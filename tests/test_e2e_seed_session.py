"""End to end: the example session of README "A first session", as processes.

A real ``python -m chat.server`` and two real ``python -m chat.client`` processes in line
mode, sophia and jojo, each typing their username at the ``Enter your username: ``
prompt. (Files between them are in test_files_e2e.py.)
"""

from __future__ import annotations

from e2e_harness import USERNAME_PROMPT, Chat


async def test_example_chat_session(process_chat: Chat) -> None:
    chat = process_chat
    sophia = await chat.spawn(label="sophia")
    await sophia.expect(USERNAME_PROMPT)
    sophia.send("sophia")
    await sophia.expect("[Welcome sophia]")
    jojo = await chat.spawn(label="jojo")
    await jojo.expect(USERNAME_PROMPT)
    jojo.send("jojo")
    await jojo.expect("[Welcome jojo]")
    await sophia.expect("[jojo joined]")

    # 1. Public message.
    sophia.send("Hello everyone!")
    await jojo.expect("[Broadcast from sophia]: Hello everyone!")

    # 2. List clients.
    sophia.send("/list")
    await sophia.expect("sophia, jojo")

    # 3. Private message.
    sophia.send("/msg jojo How are you?")
    await jojo.expect("Private message from sophia: How are you?")
    await sophia.expect("Private message to jojo: How are you?")

    # 5. Group message.
    sophia.send("/create haha")
    await sophia.expect("Group haha created and joined.")
    jojo.send("/showgroups")
    await jojo.expect("haha")
    jojo.send("/join haha")
    await jojo.expect("Joined group haha")
    await sophia.expect("[jojo joined group haha]")
    jojo.send("/showgroupmembers")
    await jojo.expect("jojo sophia")
    jojo.send("/group haha Hello there!")
    await sophia.expect("[Receive group haha message from jojo]: Hello there!")

    # No echoes: the sender of a broadcast, private or group message sees only its reply.
    await sophia.sync("sophia, jojo")
    await jojo.sync("sophia, jojo")
    await sophia.assert_no_match(lambda s: "Hello everyone!" in s, "an echo of her broadcast")
    await sophia.assert_no_match(lambda s: s.startswith("Private message from"), "an echo of her message")
    await jojo.assert_no_match(lambda s: "Hello there!" in s, "an echo of her group message")

    await jojo.close()
    await sophia.expect("[jojo exited]")
    await sophia.close()
