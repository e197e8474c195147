"""PostgreSQL from asyncio (asyncpg): a pool of connections, the schema brought up to
date at open (pg_schema.py; one node at a time, under an advisory lock), and every
operation retried while the database is unreachable (it restarted: the node recovers by
itself). An operation that fails is never acknowledged by its caller: handlers reply
only after the await returns."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from chat.server.pg_schema import MIGRATIONS, TRIGRAM_INDEX

log = logging.getLogger("chat.server")

T = TypeVar("T")
if TYPE_CHECKING:
    #: A pooled connection.
    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

#: Seconds an operation keeps trying while the database is unreachable.
RETRY_FOR = 30.0
#: Seconds the pool's connections have to finish at shutdown.
CLOSE_WITHIN = 2.0
#: Any number: the lock nodes hold while migrating the schema.
MIGRATION_LOCK = 0x636861745F6462
#: What a lost or restarting database raises.
LOST = (
    asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, ConnectionError, OSError, TimeoutError,
)  # fmt: skip


def numbered(sql: str) -> str:
    """``?`` placeholders (as the SQLite queries are written) as ``$1``, ``$2``, ..."""
    parts = sql.split("?")
    return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, start=1))


async def one(conn: Conn, sql: str, *args: Any) -> asyncpg.Record:
    """The row a query that always returns one returns."""
    row = await conn.fetchrow(sql, *args)
    assert row is not None, sql
    return row


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """What a connection needs on its way back to the pool: nothing. The server sets no
    session state (no SET, LISTEN or session-level advisory lock: its locks end with their
    transaction), and asyncpg still rolls back a transaction left open; asyncpg's default
    reset would send four more statements after every operation."""


class PgDatabase:
    """A PostgreSQL database used from asyncio; :class:`pg_storage.PgStorage` adds the queries."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._lost_since: float | None = None

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=10, command_timeout=30, reset=_keep_session
        )
        async with self._pool.acquire() as conn:
            await self._migrate(conn)
            await self._loaded(conn)

    async def _migrate(self, conn: Conn) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            version = await conn.fetchval("SELECT MAX(version) FROM schema_version") or 0
            if version > len(MIGRATIONS):
                raise RuntimeError(f"the database has schema version {version}, newer than this server knows")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await conn.execute(script)
                await conn.execute("INSERT INTO schema_version VALUES ($1)", number)
        try:
            for statement in TRIGRAM_INDEX:
                await conn.execute(statement)
        except asyncpg.PostgresError as exc:  # no pg_trgm here, or no right to create it
            log.info("search scans messages: no trigram index (%s)", type(exc).__name__)

    async def _loaded(self, conn: Conn) -> None:
        """Called once the schema is current, before the database is used."""

    async def run(self, fn: Callable[[Conn], Awaitable[T]], *, transaction: bool = True) -> T:
        """``fn`` on a pooled connection (in a transaction), again while the database is
        unreachable, for RETRY_FOR seconds at most."""
        assert self._pool is not None, "open() was not awaited"
        deadline, delay = time.monotonic() + RETRY_FOR, 0.05
        while True:
            try:
                async with self._pool.acquire() as conn:
                    if transaction:
                        async with conn.transaction():
                            result = await fn(conn)
                    else:
                        result = await fn(conn)
            except LOST as exc:
                if self._lost_since is None:
                    self._lost_since = time.monotonic()
                    log.warning("database unreachable (%s); retrying", type(exc).__name__)
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if self._lost_since is not None:
                log.info("database is back after %.1f s", time.monotonic() - self._lost_since)
                self._lost_since = None
            return result

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.run(lambda conn: conn.fetch(numbered(sql), *args), transaction=False)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.run(lambda conn: conn.fetchrow(numbered(sql), *args), transaction=False)

    async def ping(self) -> None:
        """The database answers (the health check): one try, no retries."""
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def close(self) -> None:
        """Close the pool; connections still busy after CLOSE_WITHIN are cut (asyncpg's
        close waits for every connection to come back, which could be forever)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(CLOSE_WITHIN):
                await pool.close()
        except TimeoutError:
            log.warning("database connections still busy at shutdown were closed")
            pool.terminate()
