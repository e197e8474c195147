"""SQLite from asyncio: one dedicated thread runs the statements (so a slow query or disk
never stalls the event loop), except the small commits :meth:`Database.run_now` makes on
the loop's own thread while that thread is idle; the file is private to its user (review L4), WAL mode with
``synchronous=NORMAL`` (a committed transaction survives the process being killed), and
the schema is brought up to date at open (schema.MIGRATIONS)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from chat.server.schema import MIGRATIONS

T = TypeVar("T")

class Busy:
    """:meth:`Database.run_now` could not run now: the database's thread was using it."""


BUSY = Busy()

#: Commits between checkpoints of the WAL into the database file.
CHECKPOINT_EVERY = 256


def _tighten(path: str) -> None:
    """Make the database and its WAL files readable by their owner only (POSIX)."""
    for name in (path, path + "-wal", path + "-shm"):
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(os.stat(name).st_mode)
            if mode & 0o077:
                os.chmod(name, mode & 0o700)


@contextlib.contextmanager
def private_files(path: str) -> Iterator[None]:
    """SQLite files made inside are private to their user: created under a umask of 077
    (SQLite gives the -wal and -shm files the database file's mode), and an existing
    file with looser permissions is tightened after (review L4). POSIX only."""
    private = path != ":memory:" and hasattr(os, "umask")
    old_umask = os.umask(0o077) if private else None
    try:
        yield
    finally:
        if old_umask is not None:
            os.umask(old_umask)
    if private:
        _tighten(path)


class Database:
    """An SQLite database used from asyncio; :class:`storage.Storage` adds the queries."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-db")
        self._db: sqlite3.Connection | None = None
        #: Held by whichever thread uses the connection: the database's own, or the event
        #: loop's in :meth:`run_now`.
        self._in_use = threading.Lock()
        #: Checkpoints run on a thread and connection of their own (SQLite's automatic
        #: checkpoint would run in whichever commit crosses its threshold, and wait for
        #: the disk there, possibly on the event loop's thread).
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-db-checkpoint")
        self._checkpoint_db: sqlite3.Connection | None = None
        self._commits = 0
        self._checkpointing = False

    # --- plumbing ---------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._locked, fn, *args)

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._in_use:
            return fn(*args)

    def run_now(self, fn: Callable[..., T], *args: Any) -> T | Busy:
        """Run ``fn`` here and now if the database's thread is not using the connection
        (BUSY if it is). For small writes and indexed lookups: a commit in WAL mode with
        ``synchronous=NORMAL`` only writes to the WAL file (the checkpoints, which wait
        for the disk, run on a thread of their own), and either costs less than handing
        the work to a thread and back (BENCHMARKS.md, "Where the server's time goes")."""
        if self._db is None or not self._in_use.acquire(blocking=False):
            return BUSY
        try:
            return fn(*args)
        finally:
            self._in_use.release()

    async def _quick(self, fn: Callable[[], T]) -> T:
        """An indexed lookup: here and now if the database is free, else on its thread."""
        result = self.run_now(fn)
        return await self._run(fn) if isinstance(result, Busy) else result

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None, "Storage.open() was not awaited"
        return self._db

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        # The database holds password hashes, offline messages and history: private to the
        # server's user.
        with private_files(self.path):
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
        self._migrate(db)

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database {self.path} has schema version {version}, newer than this server knows"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
        self._loaded(db)
        self._db = db

    def _loaded(self, db: sqlite3.Connection) -> None:
        """Called once the schema is current, before the database is used."""

    async def ping(self) -> None:
        """The database answers (the health check)."""
        await self._run(lambda: self._conn().execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._conn().close)
            self._db = None
        self._executor.shutdown(wait=True)
        self._checkpointer.shutdown(wait=True)
        if self._checkpoint_db is not None:
            self._checkpoint_db.close()
            self._checkpoint_db = None

    def _committed(self) -> None:
        """Count a commit; every CHECKPOINT_EVERY, copy the WAL into the database file."""
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY and not self._checkpointing and self.path != ":memory:":
            self._commits = 0
            self._checkpointing = True
            self._checkpointer.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        """On the checkpoint thread: a PASSIVE checkpoint, which waits for no reader or
        writer (WAL mode lets the other connection go on committing meanwhile)."""
        try:
            if self._checkpoint_db is None:
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA busy_timeout=5000")
                self._checkpoint_db = db
            self._checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            pass  # the next one tries again; until then the WAL grows
        finally:
            self._checkpointing = False

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._committed()
        return result
