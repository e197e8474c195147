"""The storage of a cluster on PostgreSQL (``--db postgresql://...``): the same queries
and answers as storage.py, for several nodes writing at once, so nothing is cached in a
process as the truth (quotas are summed in the transaction that checks them, under a
lock per recipient)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from chat.server.conversations import group_conversation
from chat.server.names import key, skeleton
from chat.server.pg_database import PgDatabase, numbered, one

if TYPE_CHECKING:
    from chat.server.pg_database import Conn
from chat.server.pg_messages import PgMessageStore
from chat.server.schema import MailboxQuota, StoredGroup, StoredMessage


class PgStorage(PgDatabase):
    """The PostgreSQL database behind the nodes of a cluster, used from asyncio."""

    def __init__(
        self, url: str, *, history_limit: int = 1000, retention_days: float = 0, store_messages: bool = True
    ) -> None:
        super().__init__(url)
        self.messages = PgMessageStore(
            self, history_limit=history_limit, retention_days=retention_days, enabled=store_messages
        )

    async def _loaded(self, conn: Conn) -> None:
        self.messages.last_id = await conn.fetchval("SELECT COALESCE(MAX(id), 0) FROM message")

    async def close(self) -> None:
        await super().close()
        self.messages.stop()

    # --- accounts ---------------------------------------------------------------------

    async def account(self, name_key: str) -> tuple[str, str] | None:
        row = await self.fetchrow("SELECT name, password_hash FROM account WHERE name_key = ?", name_key)
        return (row[0], row[1]) if row else None

    async def create_account(
        self, name_key: str, name: str, password_hash: str, *, reads_from: int | None = None
    ) -> bool:
        floor = self.messages.last_id if reads_from is None else reads_from
        look = skeleton(name)

        async def insert(conn: Conn) -> bool:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "account:" + look)
            if await conn.fetchval(
                "SELECT 1 FROM account WHERE skeleton = $1 AND name_key != $2", look, name_key
            ):
                return False  # a look-alike of a registered name
            status = await conn.execute(
                "INSERT INTO account (name_key, name, password_hash, created_at, skeleton, reads_from)"
                " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING",
                name_key, name, password_hash, time.time(), look, floor,
            )  # fmt: skip
            return bool(status == "INSERT 0 1")

        return await self.run(insert)

    async def reads_from(self, name_key: str) -> int:
        row = await self.fetchrow("SELECT reads_from FROM account WHERE name_key = ?", name_key)
        return int(row[0]) if row else self.messages.last_id

    async def account_like(self, name: str) -> str | None:
        row = await self.fetchrow(
            "SELECT name FROM account WHERE skeleton = ? AND name_key != ?", skeleton(name), key(name)
        )
        return str(row[0]) if row else None

    async def set_password(self, name_key: str, password_hash: str) -> None:
        sql = numbered("UPDATE account SET password_hash = ? WHERE name_key = ?")
        await self.run(lambda conn: conn.execute(sql, password_hash, name_key))

    async def registered_among(self, names: list[str]) -> list[str]:
        keys = [key(name) for name in names]
        rows = await self.fetch("SELECT name_key FROM account WHERE name_key = ANY(?::text[])", keys)
        found = {row[0] for row in rows}
        return [name for name, k in zip(names, keys, strict=True) if k in found]

    # --- groups -----------------------------------------------------------------------

    async def load_groups(self) -> list[StoredGroup]:
        async def query(conn: Conn) -> list[StoredGroup]:
            groups: dict[str, StoredGroup] = {}
            for group_key, name, owner, invite_only in await conn.fetch(
                "SELECT name_key, name, owner_key, invite_only FROM chat_group ORDER BY created_seq"
            ):
                groups[group_key] = StoredGroup(name, owner, invite_only=bool(invite_only))
            for group_key, user_key, user_name, pending, joined_at in await conn.fetch(
                "SELECT group_key, user_key, user_name, pending, joined_at FROM group_member"
                " ORDER BY group_key, position"
            ):
                group = groups[group_key]
                group.members.append((user_key, user_name))
                group.joined[user_key] = joined_at
                if pending:
                    group.pending.add(user_key)
            for group_key, user_key in await conn.fetch("SELECT group_key, user_key FROM group_kick"):
                groups[group_key].kicked.add(user_key)
            return list(groups.values())

        return await self.run(query)

    async def save_group(self, group_key: str, group: StoredGroup) -> None:
        now = time.time()

        async def write(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO chat_group (name_key, name, owner_key, invite_only, active_at)"
                " VALUES ($1,$2,$3,$4,$5) ON CONFLICT (name_key) DO UPDATE"
                " SET owner_key = excluded.owner_key, invite_only = excluded.invite_only,"
                " active_at = excluded.active_at",
                group_key, group.name, group.owner_key, group.invite_only, now,
            )  # fmt: skip
            await conn.execute("DELETE FROM group_member WHERE group_key = $1", group_key)
            await conn.executemany(
                "INSERT INTO group_member (group_key, user_key, user_name, position, pending, joined_at)"
                " VALUES ($1,$2,$3,$4,$5,$6)",
                [(group_key, k, n, i, k in group.pending, group.joined.get(k, 0))
                 for i, (k, n) in enumerate(group.members)],
            )  # fmt: skip
            await conn.execute("DELETE FROM group_kick WHERE group_key = $1", group_key)
            await conn.executemany(
                "INSERT INTO group_kick (group_key, user_key) VALUES ($1,$2)",
                [(group_key, k) for k in sorted(group.kicked)],
            )

        await self.run(write)

    async def forget_group(self, group_key: str) -> None:
        await self.run(lambda conn: conn.execute("DELETE FROM chat_group WHERE name_key = $1", group_key))

    async def delete_group(self, group_key: str) -> None:
        async def delete(conn: Conn) -> None:
            await conn.execute("DELETE FROM chat_group WHERE name_key = $1", group_key)
            await conn.execute("DELETE FROM message WHERE conv = $1", group_conversation(group_key))

        await self.run(delete)

    async def expire_groups(self, unused_since: float) -> list[str]:
        async def delete(conn: Conn) -> list[str]:
            rows = await conn.fetch(
                "DELETE FROM chat_group WHERE active_at < $1 RETURNING name_key", unused_since
            )
            keys = [str(row[0]) for row in rows]
            await conn.execute(
                "DELETE FROM message WHERE conv = ANY($1::text[])", [group_conversation(k) for k in keys]
            )
            return keys

        return await self.run(delete)

    # --- offline messages -------------------------------------------------------------

    async def queue_offline(
        self, recipient_key: str, sender: str, sender_key: str, text: str, quota: MailboxQuota, *,
        message_id: int = 0, seq: int = 0,
    ) -> str | None:  # fmt: skip
        size = len(text.encode("utf-8"))

        async def insert(conn: Conn) -> str | None:
            # One writer per mailbox, and one for the server-wide total.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "mailbox:" + recipient_key)
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('mailbox:*'))")
            count, used = await one(conn,
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM offline_message WHERE recipient_key = $1",
                recipient_key,
            )
            if count + 1 > quota.max_messages or used + size > quota.max_bytes:
                return "recipient"
            mine_count, mine_used = await one(conn,
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM offline_message"
                " WHERE recipient_key = $1 AND sender_key = $2",
                recipient_key, sender_key,
            )  # fmt: skip
            if mine_count + 1 > quota.sender_messages or mine_used + size > quota.sender_bytes:
                return "sender"
            total = await conn.fetchval("SELECT COALESCE(SUM(size), 0) FROM offline_message")
            if total + size > quota.server_bytes:
                return "server"
            await conn.execute(
                "INSERT INTO offline_message"
                " (recipient_key, sender, text, sent_at, sender_key, size, message_id, seq)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                recipient_key, sender, text, time.time(), sender_key, size, message_id, seq,
            )  # fmt: skip
            return None

        return await self.run(insert)

    async def offline_page(
        self, recipient_key: str, after_id: int, max_messages: int, max_bytes: int
    ) -> tuple[list[StoredMessage], int]:
        async def query(conn: Conn) -> tuple[list[StoredMessage], int]:
            rows = await conn.fetch(
                "SELECT id, sender, text, sent_at, size, message_id, seq FROM offline_message"
                " WHERE recipient_key = $1 AND id > $2 ORDER BY id LIMIT $3",
                recipient_key, after_id, max_messages + 1,
            )  # fmt: skip
            page: list[StoredMessage] = []
            budget = max_bytes
            for row_id, sender, text, sent_at, size, message_id, seq in rows[:max_messages]:
                if page and size > budget:
                    break
                budget -= size
                page.append(StoredMessage(sender, text, sent_at, row_id, message_id, seq))
            if len(page) == len(rows):
                return page, 0
            left = await conn.fetchval(
                "SELECT COUNT(*) FROM offline_message WHERE recipient_key = $1 AND id > $2",
                recipient_key, page[-1].id,
            )  # fmt: skip
            return page, int(left)

        return await self.run(query, transaction=False)

    async def offline_count(self, recipient_key: str) -> int:
        sql = "SELECT COUNT(*) FROM offline_message WHERE recipient_key = ?"
        row = await self.fetchrow(sql, recipient_key)
        return int(row[0]) if row else 0

    async def ack_offline(self, recipient_key: str, upto_id: int) -> None:
        sql = "DELETE FROM offline_message WHERE recipient_key = $1 AND id <= $2"
        await self.run(lambda conn: conn.execute(sql, recipient_key, upto_id))

    async def expire_offline(self, older_than: float) -> int:
        status = await self.run(lambda conn: conn.execute("DELETE FROM offline_message WHERE sent_at < $1",
                                                          older_than))
        return int(str(status).rsplit(" ", 1)[-1])

    # --- read marks (PROTOCOL.md 6.6, feature ``unread``) ------------------------------

    async def mark_read(self, user_key: str, conversations: list[str]) -> None:
        await self.run(lambda conn: conn.executemany(
            "INSERT INTO read_mark (user_key, conv, seq)"
            " SELECT $1, conv, last_seq FROM conversation WHERE conv = $2"
            " ON CONFLICT (user_key, conv) DO UPDATE SET seq = excluded.seq",
            [(user_key, conversation) for conversation in conversations],
        ))  # fmt: skip

    async def unread(self, user_key: str, conversations: list[tuple[str, int]]) -> list[tuple[str, int]]:
        async def count(conn: Conn) -> list[tuple[str, int]]:
            found = []
            for conversation, after in conversations:
                n = await conn.fetchval(
                    "SELECT COUNT(*) FROM message m JOIN read_mark r ON r.conv = m.conv AND r.user_key = $1"
                    " WHERE m.conv = $2 AND m.seq > r.seq AND m.id > $3 AND m.sender_key != $1",
                    user_key, conversation, after,
                )  # fmt: skip
                if n:
                    found.append((conversation, int(n)))
            return found

        return await self.run(count, transaction=False)
