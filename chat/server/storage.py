"""Durable server state in SQLite (README "Accounts and guests"): accounts, groups, offline messages,
group history.

All database work runs on one dedicated thread, so a slow disk never stalls the event
loop; callers await each call. The database is in WAL mode with ``synchronous=NORMAL``:
a committed transaction survives the server process being killed. Handlers reply to a
request only after its change is committed, so whatever a client saw acknowledged is
there after a crash. The schema is versioned with ``PRAGMA user_version``; each entry of
``MIGRATIONS`` moves it one version up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chat.server.names import key, skeleton

T = TypeVar("T")

MIGRATIONS: list[str] = [
    # 1: accounts, groups, memberships, kicks, offline messages, group history.
    """
    CREATE TABLE account (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE chat_group (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner_key TEXT NOT NULL,
        created_seq INTEGER NOT NULL
    );
    CREATE TABLE group_member (
        group_key TEXT NOT NULL REFERENCES chat_group(name_key) ON DELETE CASCADE,
        user_key TEXT NOT NULL,
        user_name TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (group_key, user_key)
    );
    CREATE TABLE group_kick (
        group_key TEXT NOT NULL REFERENCES chat_group(name_key) ON DELETE CASCADE,
        user_key TEXT NOT NULL,
        PRIMARY KEY (group_key, user_key)
    );
    CREATE TABLE offline_message (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient_key TEXT NOT NULL,
        sender TEXT NOT NULL,
        text TEXT NOT NULL,
        sent_at REAL NOT NULL
    );
    CREATE INDEX offline_by_recipient ON offline_message(recipient_key, id);
    CREATE TABLE group_message (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        group_key TEXT NOT NULL,
        sender TEXT NOT NULL,
        text TEXT NOT NULL,
        sent_at REAL NOT NULL
    );
    CREATE INDEX history_by_group ON group_message(group_key, id);
    """,
    # 2: offline messages know who left them (an account, or a guest's network) and their
    # size, for the per-recipient, per-sender and server-wide quotas.
    """
    ALTER TABLE offline_message ADD COLUMN sender_key TEXT NOT NULL DEFAULT '';
    ALTER TABLE offline_message ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    UPDATE offline_message SET size = length(CAST(text AS BLOB));
    CREATE INDEX offline_by_sender ON offline_message(recipient_key, sender_key);
    CREATE INDEX offline_by_age ON offline_message(sent_at);
    """,
    # 3: what each registered name looks like (names.skeleton), so a look-alike name is
    # refused like the name itself; filled in by _migrate for existing accounts.
    """
    ALTER TABLE account ADD COLUMN skeleton TEXT NOT NULL DEFAULT '';
    CREATE INDEX account_by_skeleton ON account(skeleton);
    """,
    # 4: invite-only groups; members added by the owner who have not accepted yet; where
    # each member's view of the history starts.
    """
    ALTER TABLE chat_group ADD COLUMN invite_only INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE group_member ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE group_member ADD COLUMN joined_at INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: when each group was last used (a message or a change), so abandoned groups expire;
    # existing groups count as used at the migration.
    """
    ALTER TABLE chat_group ADD COLUMN active_at REAL NOT NULL DEFAULT 0;
    UPDATE chat_group SET active_at = CAST(strftime('%s', 'now') AS REAL);
    """,
]


def _tighten(path: str) -> None:
    """Make the database and its WAL files readable by their owner only (POSIX)."""
    for name in (path, path + "-wal", path + "-shm"):
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(os.stat(name).st_mode)
            if mode & 0o077:
                os.chmod(name, mode & 0o700)


#: A group's history is pruned to ``history_limit`` once every this many of its inserts.
PRUNE_EVERY = 64


@dataclass
class StoredGroup:
    name: str
    owner_key: str
    #: (user_key, user_name) in join order.
    members: list[tuple[str, str]] = field(default_factory=list)
    kicked: set[str] = field(default_factory=set)
    invite_only: bool = False
    #: Members who have not accepted the owner's add yet.
    pending: set[str] = field(default_factory=set)
    #: user_key -> id of the last group message before they joined.
    joined: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredMessage:
    sender: str
    text: str
    sent_at: float
    #: The row's id, where the caller needs it (offline messages, acknowledged by id).
    id: int = 0


@dataclass(frozen=True)
class MailboxQuota:
    """What may wait for one offline user: in all, from one sender (an account, or a
    guest's network), and on the whole server."""

    max_messages: int
    max_bytes: int
    sender_messages: int
    sender_bytes: int
    server_bytes: int


class Storage:
    """The SQLite database behind the server, used from asyncio."""

    def __init__(self, path: str, *, history_limit: int = 1000) -> None:
        self.path = path
        self.history_limit = history_limit
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-db")
        self._db: sqlite3.Connection | None = None
        self._group_seq = 0
        #: The id of the newest group message (a member's history starts after the one
        #: that was newest when they joined).
        self.last_message_id = 0
        #: Bytes of text of every offline message stored (the server-wide quota).
        self._offline_bytes = 0
        #: Inserts per group since start, which decide when a group's history is pruned.
        self._inserts: dict[str, int] = {}

    # --- plumbing ---------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None, "Storage.open() was not awaited"
        return self._db

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        private = self.path != ":memory:" and hasattr(os, "umask")
        # The database holds password hashes, offline messages and history: private to the
        # server's user (review L4). SQLite gives the -wal and -shm files the database
        # file's mode, so a new database is created under a umask of 077 and an existing
        # one with looser permissions is tightened.
        old_umask = os.umask(0o077) if private else None
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if private:
            _tighten(self.path)
        self._migrate(db)

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database {self.path} has schema version {version}, newer than this server knows"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
        self._group_seq = db.execute("SELECT COALESCE(MAX(created_seq), 0) FROM chat_group").fetchone()[0]
        missing = db.execute("SELECT name_key, name FROM account WHERE skeleton = ''").fetchall()
        db.executemany(
            "UPDATE account SET skeleton = ? WHERE name_key = ?", [(skeleton(n), k) for k, n in missing]
        )
        self.last_message_id = db.execute("SELECT COALESCE(MAX(id), 0) FROM group_message").fetchone()[0]
        self._offline_bytes = db.execute("SELECT COALESCE(SUM(size), 0) FROM offline_message").fetchone()[0]
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._conn().close)
            self._db = None
        self._executor.shutdown(wait=True)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    # --- accounts ---------------------------------------------------------------------

    async def account(self, name_key: str) -> tuple[str, str] | None:
        """(name as registered, password hash), or None if the name is not registered."""

        def query() -> tuple[str, str] | None:
            row = self._conn().execute(
                "SELECT name, password_hash FROM account WHERE name_key = ?", (name_key,)
            ).fetchone()
            return (row[0], row[1]) if row else None

        return await self._run(query)

    async def create_account(self, name_key: str, name: str, password_hash: str) -> bool:
        """False if the name, or a name that looks like it, is registered already."""

        def insert(db: sqlite3.Connection) -> bool:
            look = skeleton(name)
            if db.execute(
                "SELECT 1 FROM account WHERE skeleton = ? AND name_key != ?", (look, name_key)
            ).fetchone():
                return False  # a look-alike of a registered name
            cursor = db.execute(
                "INSERT OR IGNORE INTO account (name_key, name, password_hash, created_at, skeleton)"
                " VALUES (?,?,?,?,?)",
                (name_key, name, password_hash, time.time(), look),
            )
            return cursor.rowcount == 1

        return await self._run(self._transaction, insert)

    async def account_like(self, name: str) -> str | None:
        """A registered name that looks like ``name`` (same skeleton) but is not it."""

        def query() -> str | None:
            row = self._conn().execute(
                "SELECT name FROM account WHERE skeleton = ? AND name_key != ?", (skeleton(name), key(name))
            ).fetchone()
            return row[0] if row else None

        return await self._run(query)

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
        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM chat_group WHERE name_key = ?", (group_key,))
            db.execute("DELETE FROM group_message WHERE group_key = ?", (group_key,))
            self._inserts.pop(group_key, None)

        await self._run(self._transaction, delete)

    # --- messages ---------------------------------------------------------------------

    async def queue_offline(
        self, recipient_key: str, sender: str, sender_key: str, text: str, quota: MailboxQuota
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
                "INSERT INTO offline_message (recipient_key, sender, text, sent_at, sender_key, size)"
                " VALUES (?,?,?,?,?,?)",
                (recipient_key, sender, text, time.time(), sender_key, size),
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
                "SELECT id, sender, text, sent_at, size FROM offline_message"
                " WHERE recipient_key = ? AND id > ? ORDER BY id LIMIT ?",
                (recipient_key, after_id, max_messages + 1),
            ).fetchall()
            page: list[StoredMessage] = []
            budget = max_bytes
            for row_id, sender, text, sent_at, size in rows[:max_messages]:
                if page and size > budget:
                    break
                budget -= size
                page.append(StoredMessage(sender, text, sent_at, row_id))
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

        return await self._run(query)

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

        def delete(db: sqlite3.Connection) -> list[str]:
            keys = [
                row[0]
                for row in db.execute("SELECT name_key FROM chat_group WHERE active_at < ?", (unused_since,))
            ]
            for group_key in keys:
                db.execute("DELETE FROM chat_group WHERE name_key = ?", (group_key,))
                db.execute("DELETE FROM group_message WHERE group_key = ?", (group_key,))
                self._inserts.pop(group_key, None)
            return keys

        return await self._run(self._transaction, delete)

    async def append_history(self, group_key: str, sender: str, text: str) -> None:
        """Record a group message, keeping only the newest ``history_limit`` per group."""

        now = time.time()

        def insert(db: sqlite3.Connection) -> None:
            cursor = db.execute(
                "INSERT INTO group_message (group_key, sender, text, sent_at) VALUES (?,?,?,?)",
                (group_key, sender, text, now),
            )
            # Used at most once a minute is enough for expiry, and spares most messages a write.
            db.execute(
                "UPDATE chat_group SET active_at = ? WHERE name_key = ? AND active_at < ?",
                (now, group_key, now - 60),
            )
            self.last_message_id = max(self.last_message_id, cursor.lastrowid or 0)
            # Prune this group every PRUNE_EVERY of its own inserts (and at its first since
            # start): at most history_limit + PRUNE_EVERY - 1 rows per group, however the
            # inserts of all groups interleave (review M12: a global id modulo could be dodged).
            count = self._inserts.get(group_key, 0)
            self._inserts[group_key] = count + 1
            if count % PRUNE_EVERY == 0:
                db.execute(
                    "DELETE FROM group_message WHERE group_key = ? AND id <= ("
                    " SELECT id FROM group_message WHERE group_key = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (group_key, group_key, self.history_limit),
                )

        await self._run(self._transaction, insert)

    async def history(
        self, group_key: str, limit: int, *, after: int = 0, before: int | None = None
    ) -> list[StoredMessage]:
        """The newest ``limit`` messages of a group with ids in (after, before), oldest
        first."""

        def query() -> list[StoredMessage]:
            rows = self._conn().execute(
                "SELECT sender, text, sent_at, id FROM group_message"
                " WHERE group_key = ? AND id > ? AND id < ? ORDER BY id DESC LIMIT ?",
                (group_key, after, before if before is not None else 1 << 62, min(limit, self.history_limit)),
            ).fetchall()
            return [StoredMessage(*row) for row in reversed(rows)]

        return await self._run(query)
