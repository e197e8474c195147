"""The storage test set, run against both databases behind store_api.Store: SQLite (one
process) and PostgreSQL (the nodes of a cluster). Same calls, same answers: accounts
and look-alikes, groups, offline messages and their quotas, conversation messages with
their numbers, client ids, history, search, what a reconnecting reader missed, retention,
pruning and read marks; and, on PostgreSQL, two nodes writing at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from services import create_database, drop_database

from chat.server.config import ServerConfig
from chat.server.conversations import BROADCASTS, Readable, group_conversation, private_conversation
from chat.server.message_store import PRUNE_EVERY, SCAN_LIMIT
from chat.server.schema import MailboxQuota, StoredGroup
from chat.server.store_api import Store, make_store

BACKENDS = [pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.cluster)]
Opener = Callable[..., Any]


@pytest_asyncio.fixture(params=BACKENDS)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens stores on one fresh database (the same one each time, as a restart or a
    second node would), closing them all at the end (a PostgreSQL one is dropped)."""
    database = None
    if request.param == "postgresql":
        url, database = await create_database()
    else:
        url = str(tmp_path / "chat.db")
    opened: list[Store] = []

    async def opener(**options: Any) -> Store:
        store = make_store(url, ServerConfig(**options))
        await store.open()
        opened.append(store)
        return store

    try:
        yield opener
    finally:
        for store in opened:
            await store.close()
        if database is not None:
            await drop_database(database)


@pytest_asyncio.fixture
async def store(open_store: Opener) -> Store:
    result: Store = await open_store()
    return result


async def test_accounts_and_look_alikes(store: Store) -> None:
    assert await store.account("sophia") is None
    assert await store.create_account("sophia", "Sophia", "hash1") is True
    assert await store.create_account("sophia", "SOPHIA", "hash2") is False
    assert await store.create_account("sophıa", "sophıa", "hash3") is False  # dotless ı: a look-alike
    assert await store.account("sophia") == ("Sophia", "hash1")
    assert await store.account_like("sophıa") == "Sophia"
    assert await store.account_like("sophia") is None
    await store.set_password("sophia", "hash4")
    assert await store.account("sophia") == ("Sophia", "hash4")
    assert await store.registered_among(["bob", "Sophia", "carol"]) == ["Sophia"]
    assert await store.create_account("bob", "bob", "h", reads_from=7) is True
    assert await store.reads_from("bob") == 7


async def test_groups_are_saved_loaded_forgotten_and_expired(store: Store) -> None:
    members = [("ann", "Ann"), ("bob", "bob")]
    team = StoredGroup("Team", "ann", members, {"eve"}, True, {"bob"}, {"ann": 0, "bob": 5})
    await store.save_group("team", team)
    await store.save_group("zoo", StoredGroup("zoo", "bob", [("bob", "bob")], joined={"bob": 1}))
    assert await store.load_groups() == [team, StoredGroup("zoo", "bob", [("bob", "bob")], joined={"bob": 1})]
    team.members.append(("carol", "carol"))
    team.kicked.clear()
    team.joined["carol"] = 9
    await store.save_group("team", team)
    assert (await store.load_groups())[0] == team
    await store.messages.append(group_conversation("zoo"), "bob", "in zoo")
    await store.forget_group("team")
    assert [g.name for g in await store.load_groups()] == ["zoo"]
    assert await store.expire_groups(time.time() - 60) == []
    assert await store.expire_groups(time.time() + 60) == ["zoo"]
    assert await store.load_groups() == []
    assert await store.messages.history(group_conversation("zoo"), 10) == []


async def test_offline_messages_quotas_pages_acks_and_expiry(store: Store) -> None:
    quota = MailboxQuota(max_messages=4, max_bytes=100, sender_messages=3, sender_bytes=60, server_bytes=100)
    for n in range(3):
        queued = await store.queue_offline("bob", "ann", "ann", f"m{n}", quota, message_id=n + 1, seq=n + 1)
        assert queued is None
    assert await store.queue_offline("bob", "ann", "ann", "m3", quota) == "sender"
    assert await store.queue_offline("bob", "eve", "eve", "x" * 98, quota) == "recipient"
    assert await store.queue_offline("bob", "eve", "eve", "e0", quota) is None
    assert await store.queue_offline("bob", "eve", "eve", "e1", quota) == "recipient"  # 4 messages
    assert await store.queue_offline("carol", "eve", "eve", "x" * 60, quota) is None
    assert await store.queue_offline("dave", "eve", "eve", "x" * 35, quota) == "server"
    assert await store.offline_count("bob") == 4
    page, left = await store.offline_page("bob", 0, 2, 1000)
    shown = [(m.sender, m.text, m.message_id, m.seq) for m in page]
    assert shown == [("ann", "m0", 1, 1), ("ann", "m1", 2, 2)]
    assert left == 2
    page2, left2 = await store.offline_page("bob", page[-1].id, 10, 3)  # the byte budget: at least one
    assert [m.text for m in page2] == ["m2"] and left2 == 1
    await store.ack_offline("bob", page2[-1].id)
    assert await store.offline_count("bob") == 1
    assert await store.queue_offline("dave", "eve", "eve", "x" * 35, quota) is None  # room again
    assert await store.expire_offline(time.time() - 60) == 0
    assert await store.expire_offline(time.time() + 60) == 3
    assert await store.offline_count("bob") == 0


async def test_appends_number_each_conversation_and_client_ids_store_once(store: Store) -> None:
    targets = [BROADCASTS, group_conversation("g"), BROADCASTS, private_conversation("x", "y")] * 25
    stored = await asyncio.gather(*(store.messages.append(t, "s", str(n)) for n, t in enumerate(targets)))
    assert sorted(m.id for m in stored) == [m.id for m in sorted(stored, key=lambda m: m.id)]
    assert len({m.id for m in stored}) == 100
    for conversation in set(targets):
        mine = [m for m in stored if m.conversation == conversation]
        assert sorted(m.seq for m in mine) == list(range(1, len(mine) + 1))
        # Numbers follow the order of the calls, and ids follow the numbers.
        assert [m.seq for m in mine] == sorted(m.seq for m in mine)
        assert [m.id for m in sorted(mine, key=lambda m: m.seq)] == sorted(m.id for m in mine)
    # A client id sent twice at once, among others (stored together where they batch).
    appends = [store.messages.append(BROADCASTS, "bo", f"b{n}", sender_key="bo", client_id=f"k{n % 3}")
               for n in range(6)]  # fmt: skip
    burst = await asyncio.gather(*appends)
    assert sorted(m.fresh for m in burst) == [False, False, False, True, True, True]
    for n in range(3):
        copies = {(m.id, m.seq, m.text) for m in burst if m.text in (f"b{n}", f"b{n + 3}")}
        assert len(copies) == 1 and copies.pop()[2] == f"b{n}", burst
    first = await store.messages.append(BROADCASTS, "ann", "once", sender_key="ann", client_id="c-1")
    again = await store.messages.append(BROADCASTS, "ann", "once", sender_key="ann", client_id="c-1")
    assert again.fresh is False and (again.id, again.seq, again.text) == (first.id, first.seq, "once")
    assert store.messages.last_id == first.id == await store.messages.newest_id()
    later = await store.messages.after(first.id - 1, 10)
    assert [m.id for m in later] == [first.id]


async def test_history_pages_and_read_rules(store: Store) -> None:
    ids = [(await store.messages.append(BROADCASTS, "ann", f"b{n}")).id for n in range(5)]
    page = await store.messages.history(BROADCASTS, 2)
    assert [m.text for m in page] == ["b3", "b4"]
    page = await store.messages.history(BROADCASTS, 2, before=page[0].id)
    assert [m.text for m in page] == ["b1", "b2"]
    assert [m.text for m in await store.messages.history(BROADCASTS, 10, after=ids[2])] == ["b3", "b4"]


async def test_search_finds_every_word_case_insensitively_within_what_one_may_read(store: Store) -> None:
    await store.messages.append(BROADCASTS, "ann", "The Quick brown fox")
    await store.messages.append(private_conversation("ann", "bob"), "ann", "quick note for bob", "bob")
    await store.messages.append(group_conversation("g"), "bob", "quick group news", "g")
    await store.messages.append(BROADCASTS, "bob", "北京欢迎你 quick")
    await store.messages.append(BROADCASTS, "bob", "50%_off \\ sale")
    readable = Readable("bob", 0, ((group_conversation("g"), 0),))
    found = await store.messages.search(["QUICK"], readable, 10)
    assert [m.text for m in found] == [
        "北京欢迎你 quick", "quick group news", "quick note for bob", "The Quick brown fox"
    ]  # fmt: skip
    both = await store.messages.search(["quick", "fox"], readable, 10)
    assert [m.text for m in both] == ["The Quick brown fox"]
    assert [m.text for m in await store.messages.search(["欢迎"], readable, 10)] == ["北京欢迎你 quick"]
    assert [m.text for m in await store.messages.search(["%_off"], readable, 10)] == ["50%_off \\ sale"]
    assert await store.messages.search(["%"], Readable("carol", 0), 10) != []
    outsider = await store.messages.search(["quick"], Readable("carol", 0), 10)
    assert [m.text for m in outsider] == ["北京欢迎你 quick", "The Quick brown fox"]
    newest = await store.messages.search(["quick"], readable, 2)
    older = await store.messages.search(["quick"], readable, 10, before=newest[-1].id)
    assert [m.text for m in newest + older] == [m.text for m in found]


async def test_a_search_of_short_words_only_looks_at_the_newest_messages(store: Store) -> None:
    await store.messages.append(BROADCASTS, "s", "ok 老 first")
    await store.messages.append(BROADCASTS, "s", "ok 老 last")
    readable = Readable("reader", 0)
    found = await store.messages.search(["老", "ok"], readable, 10)
    assert [m.text for m in found] == ["ok 老 last", "ok 老 first"]
    for _ in range(2):
        await store.messages.append(BROADCASTS, "s", "filler")
    store.messages.observe(store.messages.last_id + SCAN_LIMIT - 3)  # as if 20,000 more had come since
    assert [m.text for m in await store.messages.search(["老"], readable, 10)] == ["ok 老 last"]


async def test_missed_messages_by_cursor_and_since_and_what_is_lost(store: Store) -> None:
    messages = store.messages
    for n in range(4):
        await messages.append(BROADCASTS, "ann", f"b{n}", sender_key="ann")
    since = messages.last_id
    await messages.append(group_conversation("g"), "ann", "g0", "g", sender_key="ann")
    await messages.append(private_conversation("bob", "eve"), "eve", "p0", "bob", sender_key="eve")
    await messages.append(BROADCASTS, "bob", "mine", sender_key="bob")
    readable = Readable("bob", 0, ((group_conversation("g"), 0),))
    found, lost = await messages.missed(readable, {BROADCASTS: 2}, since, 10, skip_sender="bob")
    assert [m.text for m in found] == ["b2", "b3", "g0", "p0"] and lost == 0
    found, _ = await messages.missed(readable, {BROADCASTS: 2}, since, 2, skip_sender="bob")
    assert [m.text for m in found] == ["b2", "b3"]
    found, _ = await messages.missed(Readable("carol", 0), {}, since, 10, skip_sender="carol")
    assert [m.text for m in found] == ["mine"]


async def test_history_is_pruned_and_sequence_numbers_never_go_back(open_store: Opener) -> None:
    limit = 10
    store = await open_store(history_limit=limit, retention_days=1)
    big, decoy = group_conversation("big"), group_conversation("decoy")
    to = [decoy if n % 64 == 0 else big for n in range(1, 701)]
    stored = [await store.messages.append(conversation, "mallory", "x") for conversation in to]
    assert [m.seq for m in stored if m.conversation == decoy] == list(range(1, 11))
    kept = await store.messages.history(big, 1000)
    assert [m.seq for m in kept] == list(range(681, 691))
    found, lost = await store.messages.missed(Readable("r", 0, ((big, 0),)), {big: 0}, 0, 1000)
    assert len([m for m in found if m.conversation == big]) < limit + PRUNE_EVERY
    assert lost >= 690 - limit - PRUNE_EVERY
    assert await store.messages.expire(now=time.time() + 2 * 86400) > 0
    assert await store.messages.history(big, 10) == []
    await store.delete_group("decoy")
    await store.close()
    reopened = await open_store(history_limit=limit, retention_days=1)
    assert (await reopened.messages.append(big, "s", "after")).seq == 691
    assert (await reopened.messages.append(decoy, "s", "after")).seq == 11


async def test_withdrawn_messages_are_gone(store: Store) -> None:
    message = await store.messages.append(private_conversation("a", "b"), "a", "not kept", "b")
    await store.messages.withdraw(message)
    assert await store.messages.history(private_conversation("a", "b"), 10) == []


async def test_read_marks_count_what_came_after(store: Store) -> None:
    g = group_conversation("g")
    await store.messages.append(g, "ann", "one", sender_key="ann")
    await store.mark_read("bob", [g])
    assert await store.unread("bob", [(g, 0)]) == []
    await store.messages.append(g, "ann", "two", sender_key="ann")
    await store.messages.append(g, "bob", "mine", sender_key="bob")
    await store.messages.append(g, "ann", "three", sender_key="ann")
    assert await store.unread("bob", [(g, 0), (group_conversation("other"), 0)]) == [(g, 2)]


@pytest.mark.cluster
async def test_two_nodes_appending_at_once_never_share_a_number(pg_url: str) -> None:
    """Two stores on one PostgreSQL database, as two nodes: every message of a
    conversation gets its own sequence number, with no gap, and its own id."""
    nodes = [make_store(pg_url) for _ in range(2)]
    for node in nodes:
        await node.open()
    try:
        appends = [nodes[n % 2].messages.append(BROADCASTS, f"s{n % 2}", str(n)) for n in range(200)]
        stored = await asyncio.gather(*appends)
        assert sorted(m.seq for m in stored) == list(range(1, 201))
        assert len({m.id for m in stored}) == 200
        quota = MailboxQuota(10, 10_000, 10, 10_000, 10**9)
        queued = [nodes[n % 2].queue_offline("bob", "a", "a", "x", quota) for n in range(30)]
        results = await asyncio.gather(*queued)
        assert results.count(None) == 10 and results.count("recipient") == 20
    finally:
        for node in nodes:
            await node.close()
