"""Read marks (PROTOCOL.md 6.6, feature ``unread``): how far each of a registered user's
groups had gone when they left, so that their next login is told what is new."""

from __future__ import annotations

import sqlite3

from chat.server.database import Database


async def mark_read(db: Database, user_key: str, conversations: list[str]) -> None:
    """``user_key`` has seen ``conversations`` up to their newest message."""

    def upsert(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO read_mark (user_key, conv, seq)"
            " SELECT ?, conv, last_seq FROM conversation WHERE conv = ?"
            " ON CONFLICT (user_key, conv) DO UPDATE SET seq = excluded.seq",
            [(user_key, conversation) for conversation in conversations],
        )

    await db._run(db._transaction, upsert)


async def unread(db: Database, user_key: str, conversations: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """For each (conversation, id after which the user may read it) with a read mark,
    how many messages came after the mark (those with none are left out)."""

    def count() -> list[tuple[str, int]]:
        conn = db._conn()
        found = []
        for conversation, after in conversations:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM message m JOIN read_mark r ON r.conv = m.conv AND r.user_key = ?"
                " WHERE m.conv = ? AND m.seq > r.seq AND m.id > ? AND m.sender_key != ?",
                (user_key, conversation, after, user_key),
            ).fetchone()
            if n:
                found.append((conversation, n))
        return found

    return await db._run(count)
