"""How a batch of conversation messages (batch_writer.py) is stored on PostgreSQL: numbered
and stored by one statement.

One transaction per message cost the database about 220 µs of CPU per message on the
benchmark machine (BENCHMARKS.md, scenario 7); a batch pays that once. Within a batch each
conversation's numbers follow the order of arrival, and conversation rows are locked in
name order, so two nodes' batches cannot deadlock."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import asyncpg

from chat.server.batch_writer import Pending, StoreBatch
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


def batch_store(db: PgDatabase) -> StoreBatch:
    """Stores a batch: one statement, or one message at a time where a client id was sent
    again (or twice in the batch), in order."""

    async def store(items: list[Pending]) -> list[Message]:
        if len(items) == 1:
            return [await db.run(functools.partial(_one, item=items[0]), transaction=False)]
        try:
            return await db.run(functools.partial(_many, items=items), transaction=False)
        except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
            return [await db.run(functools.partial(_one, item=item), transaction=False) for item in items]

    return store
