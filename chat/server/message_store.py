"""Every conversation message, stored before anyone is told it was sent (PROTOCOL.md
section 6.7): broadcasts, private messages and group messages, each with a global id and
a sequence number within its conversation.

Appends are committed in batches: a message waits for the transaction that is being
written and joins the next one, so under load one commit carries many messages and the
event loop never waits on the disk. Ids and sequence numbers are given in commit order on
the database's thread, so ids increase in the order messages became durable.

Retention: the newest ``history_limit`` messages per conversation, and none older than
``retention_days`` (0: no age limit).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sqlite3
import time
from collections import Counter
from collections.abc import Callable

from chat.server.batch_writer import BatchWriter, Pending
from chat.server.conversations import Message, Readable, kind_of
from chat.server.database import Busy, Database
from chat.server.search_index import SearchIndex

#: A conversation is pruned to ``history_limit`` once every this many of its appends.
PRUNE_EVERY = 64
#: New messages are added to the search index at most this long after they are stored
#: (a search first indexes what is not yet): one index update for many messages costs a
#: fraction of one per message. The index has a database file, connection and thread of
#: its own (search_index.py): no message waits for it.
INDEX_DELAY = 0.2

_COLUMNS = "m.id, m.conv, m.seq, m.sender, m.recipient, m.text, m.sent_at"
#: Words shorter than this are not in the trigram index: they are matched by scanning,
#: and a search with no longer word looks at the newest SCAN_LIMIT messages only.
MIN_INDEXED = 3
SCAN_LIMIT = 20_000


class MessageStore:
    """The ``message`` table of ``db``, used from asyncio."""

    def __init__(
        self, db: Database, *, history_limit: int = 1000, retention_days: float = 0, enabled: bool = True
    ) -> None:
        self._db = db
        #: False: nothing is written; messages are numbered in memory only (--no-store).
        self.enabled = enabled
        self.history_limit = history_limit
        self.retention_days = retention_days
        #: The id of the newest stored message (a group member's history starts after the
        #: one that was newest when they joined).
        self.last_id = 0
        #: Messages sent since start, by kind (the server's metrics).
        self.sent: Counter[str] = Counter()
        self._batches = BatchWriter(self._store_batch, store_now=self._store_now)
        self._indexing: asyncio.TimerHandle | None = None
        self._index_job: asyncio.Task[None] | None = None
        self._search = SearchIndex(db)
        self._stopped = False
        #: Used on the database's thread only: conversation -> newest seq, appends since start.
        self._seqs: dict[str, int] = {}
        self._appends: dict[str, int] = {}

    def observe(self, message_id: int) -> None:
        """Another node stored message ``message_id`` (a shared database)."""
        self.last_id = max(self.last_id, message_id)

    async def newest_id(self) -> int:
        return self.last_id  # only this process writes here

    async def in_range(self, conversation: str, start: int, end: int) -> list[Message]:
        """The stored messages of ``conversation`` with seq in [start, end)."""
        sql = f"SELECT {_COLUMNS} FROM message m WHERE conv = ? AND seq >= ? AND seq < ? ORDER BY seq"
        args = (conversation, start, end)
        rows = await self._db._run(lambda: self._db._conn().execute(sql, args).fetchall())
        return [Message(*row) for row in rows]

    async def after(self, message_id: int, limit: int) -> list[Message]:
        sql = f"SELECT {_COLUMNS} FROM message m WHERE m.id > ? ORDER BY m.id LIMIT ?"
        rows = await self._db._run(lambda: self._db._conn().execute(sql, (message_id, limit)).fetchall())
        return [Message(*row) for row in rows]

    def loaded(self, db: sqlite3.Connection) -> None:
        """Called on the database's thread once the schema is current."""
        self.last_id = db.execute("SELECT COALESCE(MAX(id), 0) FROM message").fetchone()[0]
        self._search.open(db)

    async def append(
        self,
        conversation: str,
        sender: str,
        text: str,
        recipient: str = "",
        *,
        sender_key: str = "",
        client_id: str | None = None,
    ) -> Message:
        """Store one message; returns it once committed. A ``client_id`` this sender used
        before returns the message stored then (``fresh`` false) and stores nothing."""
        self.sent[kind_of(conversation)] += 1
        if not self.enabled:
            self.last_id += 1
            seq = self._seqs[conversation] = self._seqs.get(conversation, 0) + 1
            return Message(self.last_id, conversation, seq, sender, recipient, text, time.time())
        pending = Pending(conversation, sender, recipient, text, time.time(), sender_key, client_id)
        return await self._batches.submit(pending)

    async def _store_batch(self, batch: list[Pending]) -> list[Message]:
        insert = functools.partial(self._insert, batch=batch)
        return self._committed(*await self._db._run(self._db._transaction, insert))

    def _store_now(self, batch: list[Pending]) -> list[Message] | None:
        stored = self._db.run_now(self._db._transaction, functools.partial(self._insert, batch=batch))
        return None if isinstance(stored, Busy) else self._committed(*stored)

    def _committed(self, stored: list[Message], pruned: list[int]) -> list[Message]:
        # Committed: the numbers given are the conversations' newest now.
        self._seqs.update((m.conversation, m.seq) for m in stored if m.fresh)
        self.last_id = max([self.last_id, *(m.id for m in stored)])
        self.deleted(pruned)
        self._schedule_index()
        return stored

    def deleted(self, ids: list[int]) -> None:
        """Messages ``ids`` were deleted (committed): out of the search index soon."""
        if ids:
            self._search.forget(ids)
            self._schedule_index()

    def _schedule_index(self) -> None:
        if self._indexing is None and not self._stopped:
            self._indexing = asyncio.get_running_loop().call_later(INDEX_DELAY, self._start_index)

    def _start_index(self) -> None:
        self._index_job = asyncio.get_running_loop().create_task(self._index_now())

    async def _index_now(self) -> None:
        self._indexing = None
        if not self._stopped:
            await self._search.run(self._index_pending())

    def _index_pending(self) -> Callable[[sqlite3.Connection], None]:
        """What the index's thread runs to index what was stored (and take out what was
        deleted) since the last time, if anything."""
        if not self._search.pending(self.last_id):
            return lambda db: None
        return functools.partial(self._search.update, gone=self._search.taken())

    def stop(self) -> None:
        """No more index updates from a timer (the database is closing)."""
        self._stopped = True
        if self._indexing is not None:
            self._indexing.cancel()
            self._indexing = None

    async def close(self) -> None:
        """Stop, and close the search index once it has done what it was asked: an update
        already started finishes first (closed under it, it failed on a closed connection
        and its task's error went unretrieved)."""
        self.stop()
        if self._index_job is not None:
            await asyncio.gather(self._index_job, return_exceptions=True)
        await self._search.close()

    def _insert(self, db: sqlite3.Connection, *, batch: list[Pending]) -> tuple[list[Message], list[int]]:
        """The messages stored, and the ids pruned."""
        stored: list[Message] = []
        pruned: list[int] = []
        touched: dict[str, int] = {}
        for append in batch:
            if append.client_id is not None:
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM message m WHERE sender_key = ? AND client_id = ?",
                    (append.sender_key, append.client_id),
                ).fetchone()
                if row is not None:
                    stored.append(dataclasses.replace(Message(*row), fresh=False))
                    continue
            conv = append.conversation
            seq = touched.get(conv, self._seqs.get(conv))
            if seq is None:
                row = db.execute("SELECT last_seq FROM conversation WHERE conv = ?", (conv,)).fetchone()
                seq = row[0] if row is not None else 0
            seq += 1
            cursor = db.execute(
                "INSERT INTO message (conv, seq, sender, recipient, text, sent_at, sender_key, client_id)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (conv, seq, append.sender, append.recipient, append.text, append.sent_at, append.sender_key,
                 append.client_id),
            )  # fmt: skip
            assert cursor.lastrowid is not None
            row = (append.sender, append.recipient, append.text, append.sent_at)
            stored.append(Message(cursor.lastrowid, conv, seq, *row))
            touched[conv] = seq
            self._prune(db, conv, pruned)
        db.executemany(
            "INSERT INTO conversation (conv, last_seq) VALUES (?, ?)"
            " ON CONFLICT (conv) DO UPDATE SET last_seq = excluded.last_seq",
            touched.items(),
        )
        return stored, pruned

    def _prune(self, db: sqlite3.Connection, conv: str, pruned: list[int]) -> None:
        """Every PRUNE_EVERY appends of a conversation (and its first since start), keep
        its newest history_limit: at most history_limit + PRUNE_EVERY - 1 rows, however
        conversations interleave (review M12). The ids deleted go into ``pruned``."""
        count = self._appends.get(conv, 0)
        self._appends[conv] = count + 1
        if count % PRUNE_EVERY == 0:
            pruned += (row[0] for row in db.execute(
                "DELETE FROM message WHERE conv = ? AND seq <= ("
                " SELECT seq FROM message WHERE conv = ? ORDER BY seq DESC LIMIT 1 OFFSET ?) RETURNING id",
                (conv, conv, self.history_limit),
            ))  # fmt: skip

    async def history(
        self, conversation: str, limit: int, *, after: int = 0, before: int | None = None
    ) -> list[Message]:
        """The newest ``limit`` messages of a conversation with ids in (after, before),
        oldest first."""

        def query() -> list[Message]:
            rows = self._db._conn().execute(
                f"SELECT {_COLUMNS} FROM message m"
                " WHERE conv = ? AND id > ? AND id < ? ORDER BY id DESC LIMIT ?",
                (conversation, after, 1 << 62 if before is None else before, min(limit, self.history_limit)),
            ).fetchall()
            return [Message(*row) for row in reversed(rows)]

        return await self._db._run(query)

    async def search(
        self, words: list[str], readable: Readable, limit: int, *, before: int | None = None
    ) -> list[Message]:
        """The newest ``limit`` messages ``readable`` allows that contain every word
        (case-insensitively), with ids below ``before``; newest first."""
        indexed = [w for w in words if len(w) >= MIN_INDEXED]
        scanned = [w for w in words if len(w) < MIN_INDEXED]
        where, args = _readable_clause(readable)
        for word in scanned:
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where += " AND m.text LIKE ? ESCAPE '\\'"
            args.append(f"%{escaped}%")
        where += " AND m.id < ?"
        args.append(1 << 62 if before is None else before)
        if indexed:
            query = " ".join('"' + w.replace('"', '""') + '"' for w in indexed)
            sql = (
                f"SELECT {_COLUMNS} FROM search.message_text JOIN message m ON m.id = message_text.rowid"
                f" WHERE message_text MATCH ? AND {where} ORDER BY message_text.rowid DESC LIMIT ?"
            )
            args = [query, *args]
        else:
            # No word the index holds: a scan, bounded to the newest SCAN_LIMIT messages so
            # that a search costs the server little whatever it asks for.
            where += " AND m.id > ?"
            args.append(self.last_id - SCAN_LIMIT)
            sql = f"SELECT {_COLUMNS} FROM message m WHERE {where} ORDER BY m.id DESC LIMIT ?"
        args.append(limit)

        index = self._index_pending()  # what was stored last is found too

        def query_rows(db: sqlite3.Connection) -> list[Message]:
            index(db)
            return [Message(*row) for row in db.execute(sql, args).fetchall()]

        return await self._search.run(query_rows)

    async def missed(
        self, readable: Readable, cursors: dict[str, int], since: int, limit: int, *, skip_sender: str = ""
    ) -> tuple[list[Message], int]:
        """What a reconnecting reader missed: in each conversation it has a cursor for, the
        messages after that sequence number; in the others, those after message id
        ``since``; oldest first, at most ``limit`` (one page: the next page is asked with
        the cursors moved on), none sent by ``skip_sender`` (a key). Also how many it
        missed that are gone: past the retention bounds."""
        where, args = _readable_clause(readable)
        where += " AND m.sender_key != ?"
        args.append(skip_sender)
        after = ["(m.conv = ? AND m.seq > ?)" for _ in cursors]
        after.append(f"(m.conv NOT IN ({','.join('?' * len(cursors))}) AND m.id > ?)")
        for conversation, seq in cursors.items():
            args += [conversation, seq]
        args += [*cursors, since]
        condition = f"FROM message m WHERE {where} AND ({' OR '.join(after)})"

        def query() -> tuple[list[Message], int]:
            db = self._db._conn()
            sql = f"SELECT {_COLUMNS} {condition} ORDER BY m.id LIMIT ?"
            rows = db.execute(sql, [*args, limit]).fetchall()
            found = [Message(*row) for row in rows]
            lost = 0
            for conversation, seq in cursors.items():
                row = db.execute(
                    "SELECT (SELECT MIN(seq) FROM message WHERE conv = ?),"
                    " (SELECT last_seq FROM conversation WHERE conv = ?)",
                    (conversation, conversation),
                ).fetchone()
                first = row[0] if row[0] is not None else (row[1] or 0) + 1
                lost += max(0, first - seq - 1)
            return found, lost

        return await self._db._run(query)

    async def withdraw(self, message: Message) -> None:
        """Delete one message that could not be delivered as asked (its ``seq`` is not
        given again)."""

        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM message WHERE id = ?", (message.id,))

        await self._db._run(self._db._transaction, delete)
        self.deleted([message.id])

    async def expire(self, now: float | None = None) -> int:
        """Delete messages older than ``retention_days``; returns how many."""
        if self.retention_days <= 0:
            return 0
        older_than = (now if now is not None else time.time()) - self.retention_days * 86400

        def delete(db: sqlite3.Connection) -> list[int]:
            sql = "DELETE FROM message WHERE sent_at < ? RETURNING id"
            return [row[0] for row in db.execute(sql, (older_than,))]

        gone = await self._db._run(self._db._transaction, delete)
        self.deleted(gone)
        return len(gone)


def _readable_clause(readable: Readable) -> tuple[str, list[object]]:
    """SQL over ``m`` for the messages ``readable`` allows, and its arguments."""
    me = readable.user_key
    clauses = [
        "m.conv = '*'",
        "((substr(m.conv, 1, ?) = ? OR substr(m.conv, -?) = ?) AND m.id > ?)",
    ]
    args: list[object] = [len(me) + 2, f"@{me} ", len(me) + 1, f" {me}", readable.private_after]
    for conversation, after in readable.groups:
        clauses.append("(m.conv = ? AND m.id > ?)")
        args += [conversation, after]
    return "(" + " OR ".join(clauses) + ")", args
