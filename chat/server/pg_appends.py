"""Conversation messages stored on PostgreSQL in batches: what arrives while a batch is
being committed goes into the next one, numbered and stored by one statement.

One transaction per message cost the database about 220 µs of CPU per message on the
benchmark machine (BENCHMARKS.md, scenario 7); a batch pays that once. A message that
arrives when nothing is being written goes at once, alone, so latency does not pay for
throughput. Within a batch each conversation's numbers follow the order of arrival, and
conversation rows are locked in name order, so two nodes' batches cannot deadlock."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from chat.server.conversations import Message
from chat.server.pg_database import one

if TYPE_CHECKING:
    from chat.server.pg_database import Conn, PgDatabase

#: Messages one statement stores at most (more wait for the next).
MAX_BATCH = 128
COLUMNS = "m.id, m.conv, m.seq, m.sender, m.recipient, m.text, m.sent_at"
#: One message: the conversation's next number (its row locked until the statement
#: commits, which orders the nodes' appends to one conversation) and the message with it.
#: A client id stored already fails the whole statement on the unique index.
_APPEND_ONE = (
    "WITH numbered AS (INSERT INTO conversation (conv, last_seq) VALUES ($1, 1) ON CONFLICT (conv)"
    " DO UPDATE SET last_seq = conversation.last_seq + 1 RETURNING last_seq)"
    " INSERT INTO message (conv, seq, sender, recipient, text, sent_at, sender_key, client_id)"
    " SELECT $1, last_seq, $2, $3, $4, $5, $6, $7 FROM numbered RETURNING id, seq"
)
#: Several: each conversation's count added to its row at once, the messages numbered
#: in their order of arrival below the new last number.
_APPEND_MANY = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::text[])
        WITH ORDINALITY AS t(conv, sender, recipient, text, sent_at, sender_key, client_id, n)
), counts AS (
    SELECT conv, count(*) AS k FROM input GROUP BY conv
), numbered AS (
    INSERT INTO conversation (conv, last_seq) SELECT conv, k FROM counts ORDER BY conv
    ON CONFLICT (conv) DO UPDATE SET last_seq = conversation.last_seq + excluded.last_seq
    RETURNING conv, last_seq
)
INSERT INTO message (conv, seq, sender, recipient, text, sent_at, sender_key, client_id)
SELECT i.conv, b.last_seq - c.k + row_number() OVER (PARTITION BY i.conv ORDER BY i.n),
       i.sender, i.recipient, i.text, i.sent_at, i.sender_key, i.client_id
FROM input i JOIN counts c ON c.conv = i.conv JOIN numbered b ON b.conv = i.conv
ORDER BY i.n
RETURNING id, conv, seq
"""


@dataclass(frozen=True)
class Pending:
    """A message to store."""

    conversation: str
    sender: str
    recipient: str
    text: str
    sent_at: float
    sender_key: str
    client_id: str | None

    def stored(self, message_id: int, seq: int) -> Message:
        return Message(
            message_id, self.conversation, seq, self.sender, self.recipient, self.text, self.sent_at
        )


def stored_row(row: asyncpg.Record) -> Message:
    return Message(int(row[0]), row[1], int(row[2]), row[3], row[4], row[5], float(row[6]))


async def _one(conn: Conn, item: Pending) -> Message:
    try:
        fields = (item.sender, item.recipient, item.text, item.sent_at, item.sender_key, item.client_id)
        row = await one(conn, _APPEND_ONE, item.conversation, *fields)
    except asyncpg.UniqueViolationError:  # this client id is stored: the client sent it again
        sql = f"SELECT {COLUMNS} FROM message m WHERE sender_key = $1 AND client_id = $2"
        earlier = stored_row(await one(conn, sql, item.sender_key, item.client_id))
        return dataclasses.replace(earlier, fresh=False)
    return item.stored(int(row[0]), int(row[1]))


async def _many(conn: Conn, items: list[Pending]) -> list[Message]:
    columns = [
        [i.conversation for i in items], [i.sender for i in items], [i.recipient for i in items],
        [i.text for i in items], [i.sent_at for i in items], [i.sender_key for i in items],
        [i.client_id for i in items],
    ]  # fmt: skip
    rows = await conn.fetch(_APPEND_MANY, *columns)
    numbers: dict[str, list[tuple[int, int]]] = {}
    for row in rows:
        numbers.setdefault(row[1], []).append((int(row[2]), int(row[0])))
    taken = {conv: iter(sorted(pairs)) for conv, pairs in numbers.items()}
    stored = []
    for item in items:  # a conversation's numbers go to its messages in order of arrival
        seq, message_id = next(taken[item.conversation])
        stored.append(item.stored(message_id, seq))
    return stored


class AppendBatcher:
    """Stores messages in batches, one writer at a time; each caller gets its message."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._queue: list[tuple[Pending, asyncio.Future[Message]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, item: Pending) -> Message:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        self._queue.append((item, future))
        if self._writer is None:
            self._writer = loop.create_task(self._write())
        return await future

    async def _write(self) -> None:
        batch: list[tuple[Pending, asyncio.Future[Message]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    messages = await self._store([item for item, _ in batch])
                except Exception as exc:  # nothing of the batch is acknowledged
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), message in zip(batch, messages, strict=True):
                    if not future.done():
                        future.set_result(message)
                batch = []
        finally:
            self._writer = None
            for _, future in [*batch, *self._queue]:
                if not future.done():  # the writer was cancelled (shutdown)
                    future.cancel()
            self._queue = []

    async def _store(self, items: list[Pending]) -> list[Message]:
        if len(items) == 1:
            return [await self._db.run(lambda conn: _one(conn, items[0]), transaction=False)]
        try:
            return await self._db.run(lambda conn: _many(conn, items), transaction=False)
        except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
            # A client id sent again (or twice in this batch): one at a time, in order.
            return [await self._db.run(lambda conn, i=i: _one(conn, i), transaction=False)  # type: ignore[misc]
                    for i in items]  # fmt: skip

    def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
