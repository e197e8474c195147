"""The full-text search index of stored messages (message_store.py), in a database file of
its own, ``<db>-search``, written by a connection and a thread of its own.

FTS5 merges its index segments now and then inside whichever transaction adds to it, and
such a transaction takes tens of milliseconds. In the message database it would hold the
write lock (and the database's thread) that every message waits for before it is
delivered; in a file of its own it holds nothing a message needs. That connection opens
the message database too, only to read it: in WAL mode a reader never blocks the writer.

The index is derived data: it is made again from the message table when the file is
missing, or does not match the message database (a database restored without it).

A deleted message leaves the index at its next update (INDEX_DELAY in message_store.py),
on the index's thread, never in the transaction that deleted it: the store tells which
ids it deleted (:meth:`SearchIndex.forget`). A sweep finds those it was not told of (the
process stopped before the next update): for each message indexed it checks SWEEP_RATE
index entries against the message table, in turn, so the index never holds more than
about twice the messages kept (while the sweep goes once over N entries, N / SWEEP_RATE
messages come in, and no more than those can have been deleted meanwhile). A search
never shows a deleted message: it joins the index with the message table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from chat.server.database import Database, private_files
from chat.server.schema import SEARCH_SCHEMA, SEARCH_VERSION

T = TypeVar("T")

#: Index entries checked against the message table per message indexed.
SWEEP_RATE = 2
#: The index thread's nice value (Linux): 10 gets it about a tenth of a core the event
#: loop's thread wants too.
NICE = 10
#: Messages indexed per transaction when the index catches up (after an upgrade).
CHUNK = 10_000


def _in_background() -> None:
    """The index's thread yields the CPU to the event loop's when both want it (Linux,
    where a thread has a nice value of its own): the index can wait, a message should not."""
    if sys.platform == "linux" and NICE:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)


class SearchIndex:
    """The ``search`` database, attached to a connection of its own (to the message
    database's connection when that is ``:memory:``, which no other connection can open)."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._db: sqlite3.Connection | None = None
        #: None: the index shares the message database's connection and thread.
        self._executor: ThreadPoolExecutor | None = None
        #: The newest message id in the index (written on the index's thread).
        self.indexed = 0
        #: Ids deleted from the message table since the last update (the event loop's
        #: thread hands them to :meth:`update`).
        self._gone: list[int] = []
        #: The sweep's position: the index entries up to this id were checked last.
        self._swept = 0

    @property
    def path(self) -> str:
        return self._database.path + "-search"

    def open(self, main: sqlite3.Connection) -> None:
        """On the message database's thread, once its schema is current."""
        if self._database.path == ":memory:":
            main.execute("ATTACH ':memory:' AS search")
            self._prepare(main)
            self._db = main
            return
        try:
            db = self._connect()
        except sqlite3.OperationalError:  # locked, unreadable, out of space: said as is
            raise
        except sqlite3.DatabaseError:  # not a database, or damaged: it is made again
            for name in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path + name)
            db = self._connect()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="chat-db-search", initializer=_in_background
        )
        self._db = db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._database.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            with private_files(self.path):  # as the message database
                db.execute("ATTACH ? AS search", (self.path,))
                db.execute("PRAGMA search.journal_mode=WAL")
            db.execute("PRAGMA search.synchronous=NORMAL")
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Make the index's tables anew unless they are current."""
        if not self._current(db):
            db.executescript(
                "BEGIN; DROP TABLE IF EXISTS search.message_text; DROP TABLE IF EXISTS search.search_state;"
                f" {SEARCH_SCHEMA}; PRAGMA search.user_version={SEARCH_VERSION}; COMMIT;"
            )
        self.indexed = db.execute("SELECT indexed_upto FROM search.search_state").fetchone()[0]

    @staticmethod
    def _current(db: sqlite3.Connection) -> bool:
        """The index is of this version and of this message database: it has indexed no
        id the message table never gave, and its newest entry's text is that message's."""
        if db.execute("PRAGMA search.user_version").fetchone()[0] != SEARCH_VERSION:
            return False
        (done,) = db.execute("SELECT indexed_upto FROM search.search_state").fetchone()
        given = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'message'").fetchone()
        if done > (given[0] if given is not None else 0):
            return False
        sql = "SELECT rowid, text FROM search.message_text ORDER BY rowid DESC LIMIT 1"
        newest = db.execute(sql).fetchone()
        if newest is None:
            return True
        kept = db.execute("SELECT text FROM message WHERE id = ?", (newest[0],)).fetchone()
        return kept is None or kept[0] == newest[1]

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the index's thread."""
        if self._executor is None:
            return await self._database._run(lambda: fn(self._conn()))
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(self._conn()))

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None, "Storage.open() was not awaited"
        return self._db

    async def close(self) -> None:
        """After what was asked of the index's thread (the message database stays open)."""
        if self._executor is not None and self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
            self._executor.shutdown(wait=True)
        self._db = None

    def forget(self, ids: list[int]) -> None:
        """These messages were deleted (committed): out of the index at the next update."""
        self._gone += ids

    def pending(self, newest: int) -> bool:
        return newest > self.indexed or bool(self._gone)

    def taken(self) -> list[int]:
        """On the event loop's thread: the ids to forget at the next update."""
        gone, self._gone = self._gone, []
        return gone

    def update(self, db: sqlite3.Connection, gone: list[int]) -> None:
        """On the index's thread: index the messages stored since the last update (all of
        them, in CHUNK transactions) and take out the deleted ones (``gone``: from
        :meth:`taken`)."""
        while self._transaction(db, gone):
            gone = []

    def _transaction(self, db: sqlite3.Connection, gone: list[int]) -> bool:
        """One update transaction; whether more is left to index."""
        db.execute("BEGIN")  # deferred: only the search database is written
        try:
            # The search database's write lock first, then a snapshot of the messages.
            db.execute("UPDATE search.search_state SET indexed_upto = indexed_upto")
            (done,) = db.execute("SELECT indexed_upto FROM search.search_state").fetchone()
            (newest,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM message").fetchone()
            upto: int = min(newest, done + CHUNK)
            if upto > done:
                db.execute(
                    "INSERT INTO search.message_text (rowid, text)"
                    " SELECT id, text FROM message WHERE id > ? AND id <= ?",
                    (done, upto),
                )
                db.execute("UPDATE search.search_state SET indexed_upto = ?", (upto,))
            if gone:  # one statement each: the thread holds Python's lock for little
                db.execute(
                    "DELETE FROM search.message_text WHERE rowid IN (SELECT value FROM json_each(?)"
                    " WHERE value <= ? AND NOT EXISTS (SELECT 1 FROM message WHERE id = value))",
                    (json.dumps(gone), done),
                )
            more = bool(upto < newest)
            if not more:
                self._sweep(db, SWEEP_RATE * (upto - done))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.indexed = max(upto, done)
        return more

    def _sweep(self, db: sqlite3.Connection, count: int) -> None:
        """Check the next ``count`` index entries after the last checked (from the start
        again at the end); take out those whose message is gone."""
        if count <= 0:
            return
        end = db.execute(
            "SELECT rowid FROM search.message_text WHERE rowid > ? ORDER BY rowid LIMIT 1 OFFSET ?",
            (self._swept, count - 1),
        ).fetchone()
        db.execute(
            "DELETE FROM search.message_text WHERE rowid > ? AND rowid <= ?"
            " AND NOT EXISTS (SELECT 1 FROM message WHERE id = message_text.rowid)",
            (self._swept, 1 << 62 if end is None else end[0]),
        )
        self._swept = 0 if end is None else end[0]
