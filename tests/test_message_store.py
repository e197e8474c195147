"""Every conversation message stored with an id and a per-conversation sequence number
before its sender's ``ok`` (chat/server/message_store.py): the migration from the group
history table, batched commits, retention by age, sequence numbers that never go back."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from local_chat import LocalServer
from session_helpers import login, reply

from chat.server.conversations import BROADCASTS, Readable, group_conversation, private_conversation
from chat.server.database import CHECKPOINT_EVERY
from chat.server.message_store import SCAN_LIMIT
from chat.server.schema import MIGRATIONS
from chat.server.storage import Storage


def _rows(path: Path) -> list[tuple[str, int, str, str]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT conv, seq, sender, text FROM message ORDER BY id"))


async def test_every_message_is_stored_before_its_ok(
    server: LocalServer, key_pair: tuple[Path, Path]
) -> None:
    """Read from the database file by another connection as soon as each ``ok`` arrives."""
    database = Path(server.chat_server.config.db_path)
    ann = await login(server.port, key_pair[1], "Ann")
    bob = await login(server.port, key_pair[1], "bob")
    assert (await reply(ann, "broadcast", text="hello all")).type == "ok"
    assert _rows(database)[-1] == (BROADCASTS, 1, "Ann", "hello all")
    assert (await reply(ann, "private", to="BOB", text="hi bob")).type == "private_sent"
    assert _rows(database)[-1] == (private_conversation("ann", "bob"), 1, "Ann", "hi bob")
    assert (await reply(bob, "private", to="ann", text="hi ann")).type == "private_sent"
    assert _rows(database)[-1] == (private_conversation("ann", "bob"), 2, "bob", "hi ann")
    assert (await reply(bob, "group_create", group="Team", members=["ann"])).type == "group_created"
    assert (await reply(ann, "group_message", group="team", text="in the team")).type == "ok"
    assert _rows(database)[-1] == (group_conversation("team"), 1, "Ann", "in the team")
    assert (await reply(bob, "broadcast", text="bye all")).type == "ok"
    assert _rows(database)[-1] == (BROADCASTS, 2, "bob", "bye all")
    await ann.close()
    await bob.close()


async def test_the_group_history_moves_into_the_message_table(tmp_path: Path) -> None:
    """A database of the previous schema: every group message kept with its id (members'
    join points are ids), numbered per group in order; new ids continue after the highest
    id ever given, even when that message was deleted."""
    path = tmp_path / "chat.db"
    with sqlite3.connect(path) as db:
        for script in MIGRATIONS[:5]:
            db.executescript(script)
        db.execute("PRAGMA user_version=5")
        db.execute("INSERT INTO account (name_key, name, password_hash, created_at, skeleton)"
                   " VALUES ('ann', 'Ann', 'hash', 1.0, 'ann')")  # fmt: skip
        db.execute("INSERT INTO chat_group VALUES ('a', 'A', 'ann', 1, 0, 0)")
        db.execute("INSERT INTO group_member VALUES ('a', 'ann', 'Ann', 0, 0, 2)")
        for text, group in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a"), ("gone", "b")]:
            db.execute(
                "INSERT INTO group_message (group_key, sender, text, sent_at) VALUES (?, 'ann', ?, 1.0)",
                (group, text),
            )
        db.execute("DELETE FROM group_message WHERE text = 'gone'")
    storage = Storage(str(path))
    await storage.open()
    try:
        assert await storage.account("ann") == ("Ann", "hash")
        (group,) = await storage.load_groups()
        assert (group.name, group.members, group.joined) == ("A", [("ann", "Ann")], {"ann": 2})
        assert storage.messages.last_id == 4
        kept = await storage.messages.history(group_conversation("a"), 10)
        assert [(m.id, m.seq, m.text, m.recipient) for m in kept] == [
            (1, 1, "a1", "A"), (3, 2, "a2", "A"), (4, 3, "a3", "A")
        ]  # fmt: skip
        after_join = await storage.messages.history(group_conversation("a"), 10, after=1)
        assert [m.text for m in after_join] == ["a2", "a3"]
        new = await storage.messages.append(group_conversation("b"), "bob", "b2")
        assert (new.id, new.seq) == (6, 2)
    finally:
        await storage.close()


async def test_batched_appends_number_each_conversation_in_order(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "chat.db"))
    await storage.open()
    try:
        targets = [BROADCASTS, group_conversation("g"), BROADCASTS, private_conversation("x", "y")] * 25
        appends = [storage.messages.append(target, "s", str(n)) for n, target in enumerate(targets)]
        stored = await asyncio.gather(*appends)
        assert [m.id for m in stored] == list(range(1, 101))
        for conversation in set(targets):
            seqs = [m.seq for m in stored if m.conversation == conversation]
            assert seqs == list(range(1, len(seqs) + 1))
    finally:
        await storage.close()


async def test_appends_keep_their_order_while_the_database_thread_is_busy(tmp_path: Path) -> None:
    """An append commits on the event loop's thread when the database's thread is idle,
    and is queued behind the thread's work when it is not: appends made before, during
    and after a slow query on the thread are numbered in the order they were made."""
    storage = Storage(str(tmp_path / "chat.db"))
    await storage.open()
    try:
        first = await storage.messages.append(BROADCASTS, "s", "before")
        started = threading.Event()

        def slow_query() -> None:
            started.set()
            time.sleep(0.3)

        busy = asyncio.ensure_future(storage._run(slow_query))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        during = asyncio.gather(*(storage.messages.append(BROADCASTS, "s", f"during {i}") for i in range(5)))
        await asyncio.sleep(0.05)
        assert not during.done()  # waiting for the thread
        await busy
        after = await storage.messages.append(BROADCASTS, "s", "after")
        seqs = [first.seq, *(m.seq for m in await during), after.seq]
        assert seqs == list(range(1, 8))
        texts = [m.text for m in await storage.messages.history(BROADCASTS, 10)]
        assert texts == ["before", *(f"during {i}" for i in range(5)), "after"]
    finally:
        await storage.close()


async def test_the_wal_is_checkpointed_into_the_database_file(tmp_path: Path) -> None:
    """SQLite's automatic checkpoint is off (it would wait for the disk in whichever commit
    crossed its threshold, possibly on the event loop's thread); the server's own
    checkpoints, on a thread of their own, still copy the WAL into the database file."""
    path = tmp_path / "chat.db"
    storage = Storage(str(path))
    await storage.open()
    try:
        size = path.stat().st_size
        for i in range(3 * CHECKPOINT_EVERY):
            await storage.messages.append(BROADCASTS, "s", f"{i:04d} " + "x" * 1000)
        for _ in range(100):  # the checkpoint runs on its own thread
            if path.stat().st_size > size + CHECKPOINT_EVERY * 1000:
                break
            await asyncio.sleep(0.02)
        assert path.stat().st_size > size + CHECKPOINT_EVERY * 1000
    finally:
        await storage.close()


async def test_retention_by_age_and_sequence_numbers_never_go_back(tmp_path: Path) -> None:
    """Expired messages are deleted; a conversation emptied by expiry, or by deleting its
    group, goes on numbering where it was, also after a restart (a client's cursor stays
    valid)."""
    path = str(tmp_path / "chat.db")
    storage = Storage(path, retention_days=1)
    await storage.open()
    try:
        for text in ("one", "two"):
            await storage.messages.append(BROADCASTS, "s", text)
        await storage.messages.append(group_conversation("g"), "s", "in g")
        assert await storage.messages.expire() == 0
        assert await storage.messages.expire(now=time.time() + 2 * 86400) == 3
        assert await storage.messages.history(BROADCASTS, 10) == []
        await storage.delete_group("g")
    finally:
        await storage.close()
    storage = Storage(path, retention_days=1)
    await storage.open()
    try:
        assert (await storage.messages.append(BROADCASTS, "s", "three")).seq == 3
        assert (await storage.messages.append(group_conversation("g"), "s", "new g")).seq == 2
    finally:
        await storage.close()


async def test_the_search_index_follows_in_batches_and_stays_consistent(tmp_path: Path) -> None:
    """Messages pruned before they were indexed never reach the index; messages deleted
    after it are taken out of it; a search finds exactly what is kept, even right after
    it was stored; FTS5's own integrity check passes."""
    path = tmp_path / "chat.db"
    storage = Storage(str(path), history_limit=3)
    readable = Readable("reader", 0)
    await storage.open()
    try:
        for n in range(70):
            await storage.messages.append(BROADCASTS, "s", f"needle {n}")
        found = await storage.messages.search(["needle"], readable, 50)
        kept = _rows(path)[::-1]  # pruning keeps the newest 3, and up to 63 more until the next
        assert [m.text for m in found] == [text for _, _, _, text in kept] and 3 <= len(kept) < 70
        for n in range(70, 140):  # now pruned after being indexed
            await storage.messages.append(BROADCASTS, "s", f"needle {n}")
            if n % 10 == 0:
                await storage.messages.search(["needle"], readable, 1)
        found = await storage.messages.search(["needle"], readable, 50)
        kept = _rows(path)[::-1]
        assert [m.text for m in found] == [text for _, _, _, text in kept][:50]
    finally:
        await storage.close()
    with sqlite3.connect(f"{path}-search") as db:  # search_index.py
        db.execute("INSERT INTO message_text (message_text, rank) VALUES ('integrity-check', 1)")


async def test_a_search_of_short_words_only_looks_at_the_newest_messages(tmp_path: Path) -> None:
    """Words under 3 characters are not in the index: such a search scans, but only the
    newest SCAN_LIMIT messages, so no search makes the server read the whole table."""
    storage = Storage(str(tmp_path / "chat.db"))
    await storage.open()
    try:
        await storage.messages.append(BROADCASTS, "s", "ok 老 first")
        for n in range(30):
            await storage.messages.append(BROADCASTS, "s", f"filler {n}")
        await storage.messages.append(BROADCASTS, "s", "ok 老 last")
        readable = Readable("reader", 0)
        found = await storage.messages.search(["老", "ok"], readable, 10)
        assert [m.text for m in found] == ["ok 老 last", "ok 老 first"]
        storage.messages.last_id += SCAN_LIMIT - 20  # as if 20,000 more had come since
        found = await storage.messages.search(["老"], readable, 10)
        assert [m.text for m in found] == ["ok 老 last"]
        assert [m.text for m in await storage.messages.search(["first"], readable, 10)] == ["ok 老 first"]
    finally:
        await storage.close()
