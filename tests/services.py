"""The servers the cluster tests use, each the test's own: a Redis on a free port (to
kill and restart it), a fresh PostgreSQL database on the machine's server (created and
dropped by the test), and, for a database restart, a PostgreSQL server of the test's own
(initdb and pg_ctl in a temporary directory). Nothing here touches data it did not create.

``missing()`` says what this machine lacks for them: the tests marked ``cluster`` are
then skipped with that one line (conftest.py), except under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

HOST = "127.0.0.1"
#: The machine's PostgreSQL, as a superuser that may create databases (trust auth).
PG_ADMIN = os.environ.get("CHAT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def pg_binaries() -> Path | None:
    """The directory of initdb and pg_ctl (Debian keeps them out of the PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def missing() -> list[str]:
    """What the cluster tests need and this machine lacks."""
    lacking = []
    if shutil.which("redis-server") is None:
        lacking.append("redis-server is not on the PATH")
    if pg_binaries() is None:
        lacking.append("PostgreSQL's initdb/pg_ctl were not found")
    if not _answers(HOST, 5432):
        lacking.append("no PostgreSQL answers on 127.0.0.1:5432")
    return lacking


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1, keeping nothing on disk."""

    def __init__(self, directory: Path, *options: str) -> None:
        self.directory = directory
        self.port = free_port()
        #: More ``redis-server`` options (a password, a Unix socket).
        self.options = list(options)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    async def start(self) -> None:
        self.launch()
        for _ in range(200):
            if _answers(HOST, self.port):
                return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def launch(self) -> None:
        """Start it without waiting (``start`` waits until it answers)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), *self.options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: Redis is gone at once, and everything it held with it."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    async def restart(self) -> None:
        self.kill()
        await self.start()


class PgServer:
    """A PostgreSQL server of the test's own (to stop and start it), trust auth, in a
    directory of its own. PostgreSQL refuses to run as root: as root (a CI container),
    it runs as the ``postgres`` user, which then owns that directory."""

    def __init__(self) -> None:
        binaries = pg_binaries()
        assert binaries is not None
        self._bin = binaries
        self.directory = Path(tempfile.mkdtemp(prefix="chat-test-pg-"))
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.url = f"postgresql://chat@{HOST}:{self.port}/chat"

    def _run(self, *args: str) -> None:
        command = [*self._as, str(self._bin / args[0]), *args[1:]]
        env = {**os.environ, "LC_ALL": "C.UTF-8"}
        subprocess.run(command, check=True, capture_output=True, timeout=60, env=env)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-s", "-w", *args)

    async def create(self) -> None:
        await asyncio.to_thread(self._run, "initdb", "-D", str(self.directory / "data"), "-U", "chat",
                                "--auth=trust", "-E", "UTF8")  # fmt: skip
        await self.start()
        self._run("createdb", "-h", HOST, "-p", str(self.port), "-U", "chat", "chat")

    async def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses={HOST} -k {self.directory} -c fsync=off"
        await asyncio.to_thread(self._pg_ctl, "-o", options, "-l", str(self.directory / "log"), "start")

    async def stop(self, mode: str = "immediate") -> None:
        await asyncio.to_thread(self._pg_ctl, "-m", mode, "stop")


def database_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


async def create_database(template: str | None = None) -> tuple[str, str]:
    """A fresh database on the machine's PostgreSQL (a copy of ``template``, a database
    with the schema already made, if given): (its URL, its name)."""
    name = f"chat_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        copy = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await admin.close()
    return database_url(name), name


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.ObjectInUseError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await admin.close()
