"""``/history`` and ``/search`` through real line-mode clients (README "Accounts and
guests"), with the exact lines they print."""

from __future__ import annotations

import time

from local_chat import LocalChat, LocalClient

from chat.client.render import when


async def expect_stamped(client: LocalClient, rest: str, start: float) -> None:
    """Exactly ``[YYYY-MM-DD HH:MM] <rest>``, stamped with a minute since ``start``."""
    minutes = {when(int(t)) for t in (start, time.time())}
    line = await client.expect_match(lambda s: s.endswith(f"] {rest}"), repr(rest))
    assert line in {f"[{minute}] {rest}" for minute in minutes}, line


async def test_history_of_each_conversation_and_search(chat: LocalChat) -> None:
    start = time.time()
    sophia, jojo = await chat.login("sophia", "jojo")
    sophia.send("Hello everyone!")
    await jojo.expect("[Broadcast from sophia]: Hello everyone!")
    jojo.send("/msg sophia the deployment is done")
    await sophia.expect("Private message from jojo: the deployment is done")
    sophia.send("/create ops jojo")
    await sophia.expect("Group ops created and joined.")
    jojo.send("/group ops 部署完成")
    await sophia.expect("[Receive group ops message from jojo]: 部署完成")

    jojo.send("/history")
    await expect_stamped(jojo, "sophia: Hello everyone!", start)
    sophia.send("/history @JOJO 5")
    await expect_stamped(sophia, "jojo: the deployment is done", start)
    sophia.send("/history ops")
    await expect_stamped(sophia, "jojo: 部署完成", start)

    sophia.send("/search deployment")
    await expect_stamped(sophia, "@jojo jojo: the deployment is done", start)
    sophia.send("/search 部署")
    await expect_stamped(sophia, "ops jojo: 部署完成", start)
    sophia.send("/search hello")
    await expect_stamped(sophia, "* sophia: Hello everyone!", start)
    sophia.send("/search nowhere-to-be-found")
    await sophia.expect("No messages found for: nowhere-to-be-found")
    sophia.send("/history @nobody")
    await sophia.expect("No messages with nobody yet.")
    await sophia.sync("sophia, jojo")
    await jojo.sync("sophia, jojo")
