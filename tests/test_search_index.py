"""The search index in a database file of its own (chat/server/search_index.py): no
message waits for it, it leaves nothing deleted behind, it is made again from the
messages when it is missing or does not match them, and an older database moves to it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from chat.server.conversations import BROADCASTS, Readable, group_conversation
from chat.server.schema import MIGRATIONS, StoredGroup
from chat.server.search_index import SWEEP_RATE
from chat.server.storage import Storage

READER = Readable("reader", 0, [(group_conversation("g"), 0)])


@contextlib.asynccontextmanager
async def opened(path: str, **options: Any) -> AsyncIterator[Storage]:
    """The storage at ``path``, open for the block."""
    storage = Storage(path, **options)
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


def _ids(path: Path, table: str = "message") -> list[int]:
    """The message ids in the message table, or (``message_text``) in the search index."""
    name, column = (f"{path}-search", "rowid") if table == "message_text" else (str(path), "id")
    with closing(sqlite3.connect(name)) as db:
        return [row[0] for row in db.execute(f"SELECT {column} FROM {table} ORDER BY {column}")]


async def _texts(storage: Storage, word: str) -> list[str]:
    return [m.text for m in await storage.messages.search([word], READER, 1000)]


async def test_messages_are_stored_while_an_index_transaction_is_open(tmp_path: Path) -> None:
    """The index's thread holds the search database's write lock and a snapshot of the
    messages (as while FTS5 merges its segments): messages are stored, numbered and read
    meanwhile, and the next search finds them."""
    path = tmp_path / "chat.db"
    storage = Storage(str(path))
    await storage.open()
    try:
        await storage.messages.append(BROADCASTS, "s", "needle before")
        assert await _texts(storage, "needle") == ["needle before"]
        started, release = threading.Event(), threading.Event()

        def hold(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            db.execute("UPDATE search.search_state SET indexed_upto = indexed_upto")
            db.execute("SELECT COUNT(*) FROM message").fetchone()
            started.set()
            release.wait(10)
            db.execute("COMMIT")

        held = asyncio.ensure_future(storage.messages._search.run(hold))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        stored = []
        for n in range(5):
            stored.append(await asyncio.wait_for(storage.messages.append(BROADCASTS, "s", f"needle {n}"), 2))
        assert [m.seq for m in stored] == [2, 3, 4, 5, 6]
        history = await asyncio.wait_for(storage.messages.history(BROADCASTS, 10), 2)
        assert [m.text for m in history] == ["needle before", *(f"needle {n}" for n in range(5))]
        assert not held.done()
        release.set()
        await held
        newest_first = [*(f"needle {n}" for n in range(4, -1, -1)), "needle before"]
        assert await _texts(storage, "needle") == newest_first
    finally:
        release.set()
        await storage.close()


async def test_every_way_of_deleting_takes_the_message_out_of_the_index(tmp_path: Path) -> None:
    """Pruning, a withdrawn message, expiry, a deleted group and an expired group: once
    the index is updated (a search updates it first), it holds exactly the messages kept."""
    path = tmp_path / "chat.db"
    async with opened(str(path), history_limit=3, retention_days=1) as storage:
        for n in range(70):
            await storage.messages.append(BROADCASTS, "s", f"word {n}")
        with closing(sqlite3.connect(path)) as db:
            kept = [row[0] for row in db.execute("SELECT text FROM message ORDER BY id DESC")]
        assert await _texts(storage, "word") == kept and 3 <= len(kept) < 70
        for n in range(70, 140):  # pruned after being indexed
            await storage.messages.append(BROADCASTS, "s", f"word {n}")
            if n % 10 == 0:
                await _texts(storage, "word")
        assert len(await _texts(storage, "word")) == len(_ids(path)) < 70
        assert _ids(path, "message_text") == _ids(path)
        last = await storage.messages.append(BROADCASTS, "s", "word withdrawn")
        await _texts(storage, "word")
        await storage.messages.withdraw(last)
        assert "word withdrawn" not in await _texts(storage, "word")
        assert _ids(path, "message_text") == _ids(path)
        for name in ("g", "h"):
            await storage.save_group(name, StoredGroup(name, "s"))
            await storage.messages.append(group_conversation(name), "s", f"word in {name}")
        await _texts(storage, "word")
        await storage.delete_group("g")
        assert await storage.expire_groups(time.time() + 1) == ["h"]
        await _texts(storage, "word")
        assert _ids(path, "message_text") == _ids(path)
        count = len(_ids(path))
        assert await storage.messages.expire(now=time.time() + 2 * 86400) == count > 0
        assert await _texts(storage, "word") == []
        assert _ids(path, "message_text") == _ids(path) == []


async def test_what_the_index_was_not_told_of_is_swept_out(tmp_path: Path) -> None:
    """Messages deleted without the index hearing of it (here by another connection while
    the server was stopped; in life, a process killed between a deletion and the next
    index update) are never found, and leave the index as new messages are indexed:
    SWEEP_RATE entries checked per new message."""
    path = tmp_path / "chat.db"
    async with opened(str(path)) as storage:
        for n in range(100):
            await storage.messages.append(BROADCASTS, "s", f"needle {n}")
        assert len(await _texts(storage, "needle")) == 100
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM message WHERE id <= 80")
    async with opened(str(path)) as storage:
        assert await _texts(storage, "needle") == [f"needle {n}" for n in range(99, 79, -1)]
        assert len(_ids(path, "message_text")) == 100
        for n in range(80 // SWEEP_RATE):
            await storage.messages.append(BROADCASTS, "s", f"new {n}")
        await _texts(storage, "needle")
        assert _ids(path, "message_text") == _ids(path) == list(range(81, 141))


async def test_an_index_that_does_not_match_the_messages_is_made_again(tmp_path: Path) -> None:
    """The message database restored from a copy older than its index (the index has
    ids the restored database gives again, to other messages), or the index file lost:
    the index is made again from the messages, and finds exactly them."""
    path = tmp_path / "chat.db"
    async with opened(str(path)) as storage:
        for n in range(3):
            await storage.messages.append(BROADCASTS, "s", f"alpha {n}")
    shutil.copy(path, tmp_path / "backup.db")
    async with opened(str(path)) as storage:
        for n in range(3):
            await storage.messages.append(BROADCASTS, "s", f"beta {n}")
        assert len(await _texts(storage, "beta")) == 3
    for more in (0, 4):  # the restored database has not, then has, given the index's ids again
        shutil.copy(tmp_path / "backup.db", path)
        with closing(sqlite3.connect(path)) as db, db:
            for n in range(more):
                db.execute("INSERT INTO message (conv, seq, sender, text, sent_at)"
                           " VALUES ('*', ?, 's', ?, 1.0)", (4 + n, f"gamma {n}"))  # fmt: skip
            db.execute("UPDATE conversation SET last_seq = ? WHERE conv = '*'", (3 + more,))
        async with opened(str(path)) as storage:
            assert await _texts(storage, "beta") == []
            assert await _texts(storage, "alpha") == ["alpha 2", "alpha 1", "alpha 0"]
            assert await _texts(storage, "gamma") == [f"gamma {n}" for n in range(more - 1, -1, -1)]
            new = await storage.messages.append(BROADCASTS, "s", "delta")
            assert (new.id, await _texts(storage, "delta")) == (4 + more, ["delta"])
        for name in ("", "-wal", "-shm"):
            Path(f"{path}-search{name}").unlink(missing_ok=True)
    async with opened(str(path)) as storage:
        assert await _texts(storage, "alpha") == ["alpha 2", "alpha 1", "alpha 0"]


async def test_a_database_of_the_previous_version_moves_its_index_out(tmp_path: Path) -> None:
    """Schema 6 kept the index in the message database (with a trigger taking deleted
    messages out): the migration drops both, and the index file is made from the
    messages kept."""
    path = tmp_path / "chat.db"
    with closing(sqlite3.connect(path)) as db, db:
        for script in MIGRATIONS[:6]:
            db.executescript(script)
        db.execute("PRAGMA user_version=6")
        for n in range(5):
            db.execute("INSERT INTO message (conv, seq, sender, text, sent_at) VALUES ('*', ?, 's', ?, 1.0)",
                       (n + 1, f"needle {n}"))  # fmt: skip
        db.execute("INSERT INTO conversation VALUES ('*', 5)")
        db.execute("INSERT INTO message_text (rowid, text) SELECT id, text FROM message")
        db.execute("UPDATE search_state SET indexed_upto = 5")
        db.execute("DELETE FROM message WHERE id = 2")
    async with opened(str(path)) as storage:
        assert await _texts(storage, "needle") == ["needle 4", "needle 3", "needle 2", "needle 0"]
        assert (await storage.messages.append(BROADCASTS, "s", "needle 5")).seq == 6
        assert (await _texts(storage, "needle"))[0] == "needle 5"
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 7
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert not {n for n in names if n.startswith(("message_text", "search_state"))}, names
    assert _ids(path, "message_text") == [1, 3, 4, 5, 6]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
async def test_the_index_file_is_private(tmp_path: Path) -> None:
    """Made under the usual umask (022), the index's files are its owner's only, as the
    message database's (it holds every message's text); an older, looser one is tightened."""
    path = tmp_path / "chat.db"
    old = os.umask(0o022)
    try:
        for n in range(2):
            async with opened(str(path)) as storage:
                await storage.messages.append(BROADCASTS, "s", f"needle {n}")
                assert await _texts(storage, f"needle {n}") == [f"needle {n}"]
                for name in ("", "-wal", "-shm"):
                    assert stat.S_IMODE(os.stat(f"{path}-search{name}").st_mode) == 0o600
            os.chmod(f"{path}-search", 0o644)
    finally:
        os.umask(old)


async def test_a_damaged_index_file_is_made_again(tmp_path: Path) -> None:
    """The index file is not a database (damaged, or something else wrote there): the
    server starts all the same, with the index made again from the messages."""
    path = tmp_path / "chat.db"
    async with opened(str(path)) as storage:
        await storage.messages.append(BROADCASTS, "s", "needle kept")
    Path(f"{path}-search").write_bytes(b"not a database" * 1000)
    async with opened(str(path)) as storage:
        assert await _texts(storage, "needle") == ["needle kept"]


@pytest.mark.parametrize("where", [":memory:", "file"])
async def test_closing_waits_for_an_index_update_under_way(tmp_path: Path, where: str) -> None:
    """An update that started before the storage closed finishes on an open connection
    (closed under it, it failed on a closed one, and its task's error went unretrieved)."""
    storage = Storage(":memory:" if where == ":memory:" else str(tmp_path / "chat.db"))
    await storage.open()
    await storage.messages.append(BROADCASTS, "s", "needle at the close")
    store = storage.messages
    store._start_index()
    job = store._index_job
    assert job is not None
    await asyncio.sleep(0)  # the update is handed to the index's thread
    await storage.close()
    assert job.done() and not job.cancelled() and job.exception() is None
