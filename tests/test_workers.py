"""``chat-server --workers N`` (README "Workers on one machine"): N processes share one
port through SO_REUSEPORT and act as one service; a worker that dies is started again;
SIGTERM or SIGINT stops them all. Options that cannot work together are refused."""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from services import free_port
from session_helpers import login, reply

from chat.client.transport import ClientSession
from chat.server.__main__ import main as server_main
from chat.tls import CERT_NAME, cert_fingerprint

HOST = "127.0.0.1"
START_TIMEOUT = 30.0


@dataclass
class Workers:
    process: asyncio.subprocess.Process
    port: int
    lines: list[str]

    def worker_pids(self) -> set[int]:
        return {child.pid for child in psutil.Process(self.process.pid).children()}

    def listening(self, pid: int) -> bool:
        found = psutil.Process(pid).net_connections(kind="tcp")
        return any(c.laddr and c.laddr.port == self.port and c.status == "LISTEN" for c in found)

    def connections_of(self, pid: int) -> int:
        """TCP connections accepted on the service port by the process ``pid``."""
        found = psutil.Process(pid).net_connections(kind="tcp")
        return sum(1 for c in found if c.laddr and c.laddr.port == self.port and c.status == "ESTABLISHED")


async def start_workers(
    key: Path, cwd: Path, redis_url: str, pg_url: str, *extra: str, count: int = 2
) -> Workers:
    port = free_port()
    cwd.mkdir(parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chat.server", str(key), "--host", HOST, "--port", str(port),
        "--workers", str(count), "--redis", redis_url, "--db", pg_url, "--log-level", "WARNING", *extra,
        cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(START_TIMEOUT):
        while not lines or not lines[-1].startswith("Workers:"):
            raw = await process.stdout.readline()
            assert raw, f"the server ended before its workers were listening: {lines}"
            lines.append(raw.decode().rstrip("\n"))
    return Workers(process, port, lines)


@pytest_asyncio.fixture
async def workers(
    key_pair: tuple[Path, Path], tmp_path: Path, redis_url: str, pg_url: str
) -> AsyncIterator[Workers]:
    running = await start_workers(key_pair[0], tmp_path / "server", redis_url, pg_url)
    try:
        yield running
    finally:
        if running.process.returncode is None:
            running.process.kill()
            await running.process.wait()


async def login_until_both_workers_serve(workers: Workers, public_pem: Path) -> list[ClientSession]:
    """Users log in until each worker has at least one (the kernel picks the worker by a
    hash of the client's address and port: a few logins are nearly always enough)."""
    sessions = []
    for n in range(40):
        sessions.append(await login(workers.port, public_pem, f"user{n}"))
        counts = [workers.connections_of(pid) for pid in workers.worker_pids()]
        if len(sessions) >= 4 and min(counts) > 0:
            return sessions
    pytest.fail(f"40 connections all went to one worker: {counts}")


async def events_of(session: ClientSession, kind: str, count: int) -> list[dict[str, Any]]:
    found = []
    async with asyncio.timeout(10):
        while len(found) < count:
            event = await session.recv()
            if event.type == kind:
                found.append(event.fields)
    return found


@pytest.mark.cluster
async def test_workers_share_one_port_and_act_as_one_service(
    workers: Workers, key_pair: tuple[Path, Path]
) -> None:
    # The start lines are printed once, for the service, then the workers.
    assert workers.lines[0] == f"WebSocket server started and listening on ws://{HOST}:{workers.port}"
    assert workers.lines[1].startswith("Server key fingerprint: SHA256:")
    assert workers.lines[2] == f"Web client: http://{HOST}:{workers.port}/"
    assert workers.lines[4].startswith("Clients on the LAN connect with: python -m chat.client ")
    pids = workers.worker_pids()
    assert len(pids) == 2
    head, _, listed_pids = workers.lines[5].partition(" (pids ")
    assert head == "Workers: 2 server processes share the port"
    assert {int(pid) for pid in listed_pids.rstrip(")").split(", ")} == pids
    assert len(workers.lines) == 6

    sessions = await login_until_both_workers_serve(workers, key_pair[1])
    names = [f"user{n}" for n in range(len(sessions))]
    first, others = sessions[0], sessions[1:]
    listed = await reply(first, "list", skip={"user_joined", "presence"})
    assert sorted(listed["users"]) == sorted(names)
    for n, other in enumerate(others, start=1):
        sent = await reply(
            first, "private", to=f"user{n}", text=f"hello {n}", skip={"user_joined", "presence"}
        )
        assert sent.type == "private_sent"
        [received] = await events_of(other, "private", 1)
        assert (received["sender"], received["text"]) == ("user0", f"hello {n}")
    for session in sessions:
        await session.close()

    workers.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await workers.process.wait() == 0
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


@pytest.mark.cluster
async def test_a_dead_worker_is_started_again(workers: Workers, key_pair: tuple[Path, Path]) -> None:
    before = workers.worker_pids()
    victim = min(before)
    psutil.Process(victim).kill()
    async with asyncio.timeout(20):
        while True:
            now = workers.worker_pids()
            if len(now) == 2 and victim not in now and all(workers.listening(pid) for pid in now):
                break
            await asyncio.sleep(0.1)
    assert now & before == before - {victim}
    # The new worker serves: logins land on both again and talk to each other.
    sessions = await login_until_both_workers_serve(workers, key_pair[1])
    sent = await reply(
        sessions[0], "private", to="user1", text="still here", skip={"user_joined", "presence"}
    )
    assert sent.type == "private_sent"
    [received] = await events_of(sessions[1], "private", 1)
    assert received["text"] == "still here"
    for session in sessions:
        await session.close()

    workers.process.send_signal(signal.SIGINT)
    async with asyncio.timeout(20):
        assert await workers.process.wait() == 0
    assert not [pid for pid in now if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--workers", "2"],
         "--workers needs --redis and --db postgresql://...: the workers are nodes of one service "
         "(README \"Running a cluster\")"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--redis", "redis://127.0.0.1:1/0"],
         "--redis needs --db postgresql://...: the nodes of a cluster share one database "
         "(an SQLite file is one process's own)"),
        (["--workers", "2", "--redis", "redis://127.0.0.1:1/0", "--db", "postgresql://nobody@127.0.0.1:1/x",
          "--port", "0"],
         "--workers needs a fixed --port: with port 0 each worker would listen on a port of its own"),
    ],
)  # fmt: skip
def test_options_that_cannot_work_together_are_refused(
    options: list[str], error: str, key_pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert server_main([str(key_pair[0]), *options]) == 2
    assert capsys.readouterr().err == f"chat-server: error: {error}\n"


@pytest.mark.cluster
async def test_workers_serve_tls_with_the_one_certificate(
    own_private_pem: Path, tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    """The supervisor makes the certificate once; every worker serves that one."""
    keys = own_private_pem.parent
    running = await start_workers(own_private_pem, tmp_path / "server", redis_url, pg_url, "--tls")
    try:
        assert running.lines[0] == f"WebSocket server started and listening on wss://{HOST}:{running.port}"
        printed = running.lines[2].removeprefix("TLS certificate SHA-256: ")
        made = x509.load_pem_x509_certificate((keys / CERT_NAME).read_bytes())
        assert printed == cert_fingerprint(made.public_bytes(serialization.Encoding.DER))
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        seen = set()
        for _ in range(12):  # the kernel spreads these over both workers
            _, writer = await asyncio.open_connection(HOST, running.port, ssl=context)
            seen.add(cert_fingerprint(writer.get_extra_info("ssl_object").getpeercert(binary_form=True)))
            writer.close()
        assert seen == {printed}
    finally:
        running.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await running.process.wait() == 0
