"""Every conversation message on PostgreSQL, for the nodes of a cluster: the same
answers as message_store.py. A message's sequence number comes from its conversation's
row, incremented by the statement that stores the message (the row lock orders the
nodes' appends to one conversation; messages are stored in batches, pg_appends.py); ids
come from the table's sequence."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from chat.server.batch_writer import BatchWriter, Pending
from chat.server.conversations import Message, Readable, kind_of
from chat.server.message_store import MIN_INDEXED, PRUNE_EVERY, SCAN_LIMIT
from chat.server.pg_appends import COLUMNS, MAX_BATCH, batch_store, stored_row
from chat.server.pg_database import numbered, one

if TYPE_CHECKING:
    from chat.server.pg_database import Conn, PgDatabase

_NEWEST = 1 << 62


class PgMessageStore:
    """The ``message`` table of a PostgreSQL database, used from asyncio."""

    def __init__(
        self, db: PgDatabase, *, history_limit: int = 1000, retention_days: float = 0, enabled: bool = True
    ) -> None:
        self._db = db
        self.enabled = enabled
        self.history_limit = history_limit
        self.retention_days = retention_days
        #: The newest message id this node knows of (its own, and others' it was told of).
        self.last_id = 0
        self.sent: Counter[str] = Counter()
        self._seqs: dict[str, int] = {}
        self._appends = BatchWriter(batch_store(db), MAX_BATCH)

    def observe(self, message_id: int) -> None:
        self.last_id = max(self.last_id, message_id)

    def stop(self) -> None:
        """Stop the writer (messages still waiting are not acknowledged)."""
        self._appends.close()

    async def newest_id(self) -> int:
        """The newest message id of the whole cluster (a group joined now reads after it)."""
        row = await self._db.fetchrow("SELECT COALESCE(MAX(id), 0) FROM message")
        self.observe(int(row[0]) if row else 0)
        return self.last_id

    async def append(
        self, conversation: str, sender: str, text: str, recipient: str = "", *,
        sender_key: str = "", client_id: str | None = None,
    ) -> Message:  # fmt: skip
        self.sent[kind_of(conversation)] += 1
        if not self.enabled:
            self.last_id += 1
            seq = self._seqs[conversation] = self._seqs.get(conversation, 0) + 1
            return Message(self.last_id, conversation, seq, sender, recipient, text, time.time())
        pending = Pending(conversation, sender, recipient, text, time.time(), sender_key, client_id)
        message = await self._appends.submit(pending)
        if message.fresh and message.seq % PRUNE_EVERY == 1 and message.seq > self.history_limit:
            upto = message.seq - self.history_limit
            prune = "DELETE FROM message WHERE conv = $1 AND seq <= $2"
            await self._db.run(lambda conn: conn.execute(prune, conversation, upto), transaction=False)
        self.observe(message.id)
        return message

    async def in_range(self, conversation: str, start: int, end: int) -> list[Message]:
        rows = await self._db.fetch(
            f"SELECT {COLUMNS} FROM message m WHERE conv = ? AND seq >= ? AND seq < ? ORDER BY seq",
            conversation, start, end,
        )  # fmt: skip
        return [stored_row(row) for row in rows]

    async def after(self, message_id: int, limit: int) -> list[Message]:
        rows = await self._db.fetch(
            f"SELECT {COLUMNS} FROM message m WHERE m.id > ? ORDER BY m.id LIMIT ?", message_id, limit
        )
        return [stored_row(row) for row in rows]

    async def history(
        self, conversation: str, limit: int, *, after: int = 0, before: int | None = None
    ) -> list[Message]:
        rows = await self._db.fetch(
            f"SELECT {COLUMNS} FROM message m WHERE conv = ? AND id > ? AND id < ? ORDER BY id DESC LIMIT ?",
            conversation, after, _NEWEST if before is None else before, min(limit, self.history_limit),
        )  # fmt: skip
        return [stored_row(row) for row in reversed(rows)]

    async def search(
        self, words: list[str], readable: Readable, limit: int, *, before: int | None = None
    ) -> list[Message]:
        where, args = _readable_clause(readable)
        for word in words:
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where += " AND m.text ILIKE ?"
            args.append(f"%{escaped}%")
        where += " AND m.id < ?"
        args.append(_NEWEST if before is None else before)
        if not any(len(w) >= MIN_INDEXED for w in words):
            # No word a trigram index can use: bounded to the newest SCAN_LIMIT messages.
            where += " AND m.id > ?"
            args.append(await self.newest_id() - SCAN_LIMIT)
        sql = f"SELECT {COLUMNS} FROM message m WHERE {where} ORDER BY m.id DESC LIMIT ?"
        rows = await self._db.fetch(sql, *args, limit)
        return [stored_row(row) for row in rows]

    async def missed(
        self, readable: Readable, cursors: dict[str, int], since: int, limit: int, *, skip_sender: str = ""
    ) -> tuple[list[Message], int]:
        where, args = _readable_clause(readable)
        where += " AND m.sender_key != ?"
        args.append(skip_sender)
        after = ["(m.conv = ? AND m.seq > ?)" for _ in cursors]
        after.append("(NOT (m.conv = ANY(?::text[])) AND m.id > ?)")
        for conversation, seq in cursors.items():
            args += [conversation, seq]
        args += [list(cursors), since]
        condition = f"{where} AND ({' OR '.join(after)})"
        sql = f"SELECT {COLUMNS} FROM message m WHERE {condition} ORDER BY m.id LIMIT ?"

        async def query(conn: Conn) -> tuple[list[Message], int]:
            found = [stored_row(row) for row in await conn.fetch(numbered(sql), *args, limit)]
            lost = 0
            for conversation, seq in cursors.items():
                first, last = await one(conn,
                    "SELECT (SELECT MIN(seq) FROM message WHERE conv = $1),"
                    " (SELECT last_seq FROM conversation WHERE conv = $1)",
                    conversation,
                )
                first = first if first is not None else (last or 0) + 1
                lost += max(0, int(first) - seq - 1)
            return found, lost

        return await self._db.run(query, transaction=False)

    async def withdraw(self, message: Message) -> None:
        await self._db.run(lambda conn: conn.execute("DELETE FROM message WHERE id = $1", message.id))

    async def expire(self, now: float | None = None) -> int:
        if self.retention_days <= 0:
            return 0
        older_than = (now if now is not None else time.time()) - self.retention_days * 86400
        status = await self._db.run(lambda conn: conn.execute("DELETE FROM message WHERE sent_at < $1",
                                                              older_than))
        return int(str(status).rsplit(" ", 1)[-1])


def _readable_clause(readable: Readable) -> tuple[str, list[object]]:
    """SQL over ``m`` for the messages ``readable`` allows (``?`` placeholders)."""
    me = readable.user_key
    clauses = ["m.conv = '*'", "((left(m.conv, ?) = ? OR right(m.conv, ?) = ?) AND m.id > ?)"]
    args: list[object] = [len(me) + 2, f"@{me} ", len(me) + 1, f" {me}", readable.private_after]
    for conversation, after in readable.groups:
        clauses.append("(m.conv = ? AND m.id > ?)")
        args += [conversation, after]
    return "(" + " OR ".join(clauses) + ")", args
