"""Durable server state (README "Accounts and guests"): the queries for accounts,
groups and offline messages (conversation messages: message_store.py), over
database.Database (SQLite on its own thread; the schema is in schema.py). Handlers reply
to a request only after its change is committed, so whatever a client saw acknowledged is
there after a crash."""

from __future__ import annotations

import sqlite3
import time

from chat.server.conversations import group_conversation
from chat.server.database import Database
from chat.server.message_store import MessageStore
from chat.server.names import key, skeleton
from chat.server.schema import MailboxQuota, StoredGroup, StoredMessage


class Storage(Database):
    """The SQLite database behind the server, used from asyncio."""

    def __init__(
        self, path: str, *, history_limit: int = 1000, retention_days: float = 0, store_messages: bool = True
    ) -> None:
        super().__init__(path)
        #: Every conversation message (message_store.py).
        self.messages = MessageStore(
            self, history_limit=history_limit, retention_days=retention_days, enabled=store_messages
        )
        self._group_seq = 0
        #: Bytes of text of every offline message stored (the server-wide quota).
        self._offline_bytes = 0

    async def close(self) -> None:
        await self.messages.close()
        await super().close()

    def _loaded(self, db: sqlite3.Connection) -> None:
        self._group_seq = db.execute("SELECT COALESCE(MAX(created_seq), 0) FROM chat_group").fetchone()[0]
        missing = db.execute("SELECT name_key, name FROM account WHERE skeleton = ''").fetchall()
        db.executemany(
            "UPDATE account SET skeleton = ? WHERE name_key = ?", [(skeleton(n), k) for k, n in missing]
        )
        self.messages.loaded(db)
        self._offline_bytes = db.execute("SELECT COALESCE(SUM(size), 0) FROM offline_message").fetchone()[0]

    # --- accounts ---------------------------------------------------------------------

    async def account(self, name_key: str) -> tuple[str, str] | None:
        """(name as registered, password hash), or None if the name is not registered."""

        def query() -> tuple[str, str] | None:
            row = self._conn().execute(
                "SELECT name, password_hash FROM account WHERE name_key = ?", (name_key,)
            ).fetchone()
            return (row[0], row[1]) if row else None

        return await self._quick(query)

    async def create_account(
        self, name_key: str, name: str, password_hash: str, *, reads_from: int | None = None
    ) -> bool:
        """False if the name, or a name that looks like it, is registered already. The
        account reads its private conversations from message id ``reads_from`` on (by
        default from now: nothing said to an earlier holder of the name)."""
        floor = self.messages.last_id if reads_from is None else reads_from

        def insert(db: sqlite3.Connection) -> bool:
            look = skeleton(name)
            if db.execute(
                "SELECT 1 FROM account WHERE skeleton = ? AND name_key != ?", (look, name_key)
            ).fetchone():
                return False  # a look-alike of a registered name
            cursor = db.execute(
                "INSERT OR IGNORE INTO account"
                " (name_key, name, password_hash, created_at, skeleton, reads_from) VALUES (?,?,?,?,?,?)",
                (name_key, name, password_hash, time.time(), look, floor),
            )
            return cursor.rowcount == 1

        return await self._run(self._transaction, insert)

    async def reads_from(self, name_key: str) -> int:
        """From which message id the account reads its private conversations."""

        def query() -> int:
            sql = "SELECT reads_from FROM account WHERE name_key = ?"
            row = self._conn().execute(sql, (name_key,)).fetchone()
            return int(row[0]) if row else self.messages.last_id

        return await self._quick(query)

    async def account_like(self, name: str) -> str | None:
        """A registered name that looks like ``name`` (same skeleton) but is not it."""

        def query() -> str | None:
            row = self._conn().execute(
                "SELECT name FROM account WHERE skeleton = ? AND name_key != ?", (skeleton(name), key(name))
            ).fetchone()
            return row[0] if row else None

        return await self._quick(query)

    async def set_password(self, name_key: str, password_hash: str) -> None:
        def update(db: sqlite3.Connection) -> None:
            db.execute("UPDATE account SET password_hash = ? WHERE name_key = ?", (password_hash, name_key))

        await self._run(self._transaction, update)

    # --- groups -----------------------------------------------------------------------

    async def load_groups(self) -> list[StoredGroup]:
        """Every group in creation order, members in join order."""

        def query() -> list[StoredGroup]:
            db = self._conn()
            groups: dict[str, StoredGroup] = {}
            for group_key, name, owner, invite_only in db.execute(
                "SELECT name_key, name, owner_key, invite_only FROM chat_group ORDER BY created_seq"
            ):
                groups[group_key] = StoredGroup(name, owner, invite_only=bool(invite_only))
            for group_key, user_key, user_name, pending, joined_at in db.execute(
                "SELECT group_key, user_key, user_name, pending, joined_at FROM group_member"
                " ORDER BY group_key, position"
            ):
                group = groups[group_key]
                group.members.append((user_key, user_name))
                group.joined[user_key] = joined_at
                if pending:
                    group.pending.add(user_key)
            for group_key, user_key in db.execute("SELECT group_key, user_key FROM group_kick"):
                groups[group_key].kicked.add(user_key)
            return list(groups.values())

        return await self._run(query)

    async def save_group(self, group_key: str, group: StoredGroup) -> None:
        """Write one group's whole state (it is small), creating it if new."""
        now = time.time()

        def write(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT created_seq FROM chat_group WHERE name_key = ?", (group_key,)).fetchone()
            if row is None:
                self._group_seq += 1
                db.execute(
                    "INSERT INTO chat_group (name_key, name, owner_key, created_seq, invite_only, active_at)"
                    " VALUES (?,?,?,?,?,?)",
                    (group_key, group.name, group.owner_key, self._group_seq, int(group.invite_only), now),
                )
            else:
                db.execute(
                    "UPDATE chat_group SET owner_key = ?, invite_only = ?, active_at = ? WHERE name_key = ?",
                    (group.owner_key, int(group.invite_only), now, group_key),
                )
            db.execute("DELETE FROM group_member WHERE group_key = ?", (group_key,))
            db.executemany(
                "INSERT INTO group_member (group_key, user_key, user_name, position, pending, joined_at)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (group_key, k, n, i, int(k in group.pending), group.joined.get(k, 0))
                    for i, (k, n) in enumerate(group.members)
                ],
            )
            db.execute("DELETE FROM group_kick WHERE group_key = ?", (group_key,))
            db.executemany(
                "INSERT INTO group_kick (group_key, user_key) VALUES (?,?)",
                [(group_key, k) for k in sorted(group.kicked)],
            )

        await self._run(self._transaction, write)

    async def forget_group(self, group_key: str) -> None:
        """Stop storing a group (it passed to a guest) but keep its history."""

        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM chat_group WHERE name_key = ?", (group_key,))

        await self._run(self._transaction, delete)

    async def registered_among(self, names: list[str]) -> list[str]:
        """Those of ``names`` that are registered accounts, in the given order."""

        def query() -> list[str]:
            found: set[str] = set()
            keys = [key(name) for name in names]
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    row[0] for row in self._conn().execute(
                        f"SELECT name_key FROM account WHERE name_key IN ({marks})", chunk
                    )
                )
            return [name for name, k in zip(names, keys, strict=True) if k in found]

        return await self._run(query)

    async def delete_group(self, group_key: str) -> None:
        def delete(db: sqlite3.Connection) -> list[int]:
            db.execute("DELETE FROM chat_group WHERE name_key = ?", (group_key,))
            return _delete_messages(db, group_key)

        self.messages.deleted(await self._run(self._transaction, delete))

    # --- messages ---------------------------------------------------------------------

    async def queue_offline(
        self,
        recipient_key: str,
        sender: str,
        sender_key: str,
        text: str,
        quota: MailboxQuota,
        *,
        message_id: int = 0,
        seq: int = 0,
    ) -> str | None:
        """Store a message for an offline user unless a quota says no; the refusal
        (``"recipient"``, ``"sender"`` or ``"server"``) or None once stored. Checked and
        written in one transaction, so concurrent senders cannot overshoot."""
        size = len(text.encode("utf-8"))

        def insert(db: sqlite3.Connection) -> str | None:
            count, used = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM offline_message WHERE recipient_key = ?",
                (recipient_key,),
            ).fetchone()
            if count + 1 > quota.max_messages or used + size > quota.max_bytes:
                return "recipient"
            mine_count, mine_used = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM offline_message"
                " WHERE recipient_key = ? AND sender_key = ?",
                (recipient_key, sender_key),
            ).fetchone()
            if mine_count + 1 > quota.sender_messages or mine_used + size > quota.sender_bytes:
                return "sender"
            if self._offline_bytes + size > quota.server_bytes:
                return "server"
            db.execute(
                "INSERT INTO offline_message"
                " (recipient_key, sender, text, sent_at, sender_key, size, message_id, seq)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (recipient_key, sender, text, time.time(), sender_key, size, message_id, seq),
            )
            self._offline_bytes += size
            return None

        return await self._run(self._transaction, insert)

    async def offline_page(
        self, recipient_key: str, after_id: int, max_messages: int, max_bytes: int
    ) -> tuple[list[StoredMessage], int]:
        """The oldest messages queued for the user after ``after_id`` that fit in
        ``max_messages`` and ``max_bytes`` (at least one), and how many more wait."""

        def query() -> tuple[list[StoredMessage], int]:
            rows = self._conn().execute(
                "SELECT id, sender, text, sent_at, size, message_id, seq FROM offline_message"
                " WHERE recipient_key = ? AND id > ? ORDER BY id LIMIT ?",
                (recipient_key, after_id, max_messages + 1),
            ).fetchall()
            page: list[StoredMessage] = []
            budget = max_bytes
            for row_id, sender, text, sent_at, size, message_id, seq in rows[:max_messages]:
                if page and size > budget:
                    break
                budget -= size
                page.append(StoredMessage(sender, text, sent_at, row_id, message_id, seq))
            if len(page) == len(rows):
                return page, 0
            (left,) = self._conn().execute(
                "SELECT COUNT(*) FROM offline_message WHERE recipient_key = ? AND id > ?",
                (recipient_key, page[-1].id),
            ).fetchone()
            return page, left

        return await self._run(query)

    async def offline_count(self, recipient_key: str) -> int:
        def query() -> int:
            return int(self._conn().execute(
                "SELECT COUNT(*) FROM offline_message WHERE recipient_key = ?", (recipient_key,)
            ).fetchone()[0])

        return await self._quick(query)

    async def ack_offline(self, recipient_key: str, upto_id: int) -> None:
        """Delete the user's messages up to ``upto_id``: they were delivered."""

        def delete(db: sqlite3.Connection) -> None:
            (size,) = db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM offline_message WHERE recipient_key = ? AND id <= ?",
                (recipient_key, upto_id),
            ).fetchone()
            db.execute(
                "DELETE FROM offline_message WHERE recipient_key = ? AND id <= ?", (recipient_key, upto_id)
            )
            self._offline_bytes -= size

        await self._run(self._transaction, delete)

    async def expire_offline(self, older_than: float) -> int:
        """Delete messages stored before ``older_than`` (a Unix time); how many."""

        def delete(db: sqlite3.Connection) -> int:
            (size,) = db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM offline_message WHERE sent_at < ?", (older_than,)
            ).fetchone()
            cursor = db.execute("DELETE FROM offline_message WHERE sent_at < ?", (older_than,))
            self._offline_bytes -= size
            return cursor.rowcount

        return await self._run(self._transaction, delete)

    async def expire_groups(self, unused_since: float) -> list[str]:
        """Delete the groups (and their history) not used since ``unused_since``; their
        keys. Abandoned groups would otherwise hold their names and the group table
        forever (review M6)."""

        def delete(db: sqlite3.Connection) -> tuple[list[str], list[int]]:
            keys: list[str] = [
                row[0]
                for row in db.execute("SELECT name_key FROM chat_group WHERE active_at < ?", (unused_since,))
            ]
            gone: list[int] = []
            for group_key in keys:
                db.execute("DELETE FROM chat_group WHERE name_key = ?", (group_key,))
                gone += _delete_messages(db, group_key)
            return keys, gone

        done: tuple[list[str], list[int]] = await self._run(self._transaction, delete)
        self.messages.deleted(done[1])
        return done[0]

    # --- read marks (PROTOCOL.md 6.6, feature ``unread``) ------------------------------

    async def mark_read(self, user_key: str, conversations: list[str]) -> None:
        """``user_key`` has seen ``conversations`` up to their newest message."""

        def upsert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO read_mark (user_key, conv, seq)"
                " SELECT ?, conv, last_seq FROM conversation WHERE conv = ?"
                " ON CONFLICT (user_key, conv) DO UPDATE SET seq = excluded.seq",
                [(user_key, conversation) for conversation in conversations],
            )

        await self._run(self._transaction, upsert)

    async def unread(self, user_key: str, conversations: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """For each (conversation, id after which the user may read it) with a read mark,
        how many messages came after the mark (those with none are left out)."""

        def count() -> list[tuple[str, int]]:
            found = []
            for conversation, after in conversations:
                (n,) = self._conn().execute(
                    "SELECT COUNT(*) FROM message m JOIN read_mark r ON r.conv = m.conv AND r.user_key = ?"
                    " WHERE m.conv = ? AND m.seq > r.seq AND m.id > ? AND m.sender_key != ?",
                    (user_key, conversation, after, user_key),
                ).fetchone()
                if n:
                    found.append((conversation, n))
            return found

        return await self._run(count)


def _delete_messages(db: sqlite3.Connection, group_key: str) -> list[int]:
    """Delete a group's history; the ids deleted (for the search index)."""
    sql = "DELETE FROM message WHERE conv = ? RETURNING id"
    return [row[0] for row in db.execute(sql, (group_conversation(group_key),))]
