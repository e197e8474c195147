"""Shared fixtures: one server key pair per session; per test, a fresh server with
line-mode clients, in this process (``chat``: local_chat.py) or as processes
(``process_chat``, ``server``: e2e_harness.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
import services
from browser_helpers import browser, web  # noqa: F401 (fixtures)
from cluster_world import (  # noqa: F401 (fixtures)
    cluster,
    pg_server,
    pg_template,
    pg_url,
    redis_server,
    redis_url,
    shared_redis,
)
from e2e_harness import Chat, ServerProcess
from local_chat import LocalChat, LocalServer
from robust_helpers import running_server

from chat.keys import generate_private_key, write_key_pair


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` first (the order is otherwise kept): with three workers
    (pytest-xdist), a long test started last would leave the others idle. Tests marked
    ``cluster`` are skipped, with one line saying why, where Redis or PostgreSQL is
    missing, except under CI=true: there they run, and fail."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    lacking = services.missing()
    if lacking and os.environ.get("CI") != "true":
        skip = pytest.mark.skip(reason="cluster tests need Redis and PostgreSQL: " + "; ".join(lacking))
        for item in items:
            if item.get_closest_marker("cluster") is not None:
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Measurements tests recorded as ``measured: <what>`` properties (browser_helpers.
    record_measure) as lines of the summary, with or without -s or xdist; they are in
    the JUnit XML too."""
    lines = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for name, value in getattr(report, "user_properties", ()):
                if isinstance(name, str) and name.startswith("measured: "):
                    lines.append(f"{report.nodeid}: {name.removeprefix('measured: ')} = {value}")
    if lines:
        terminalreporter.write_sep("-", "measurements")
        for line in sorted(lines):
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private.pem, public.pem): one 2048-bit server key for the whole session."""
    directory = tmp_path_factory.mktemp("keys")
    return write_key_pair(directory, generate_private_key(2048))


@pytest.fixture
def own_private_pem(key_pair: tuple[Path, Path], tmp_path: Path) -> Path:
    """The session's server key in a key directory of this test's own (``--tls`` writes
    its certificate beside the key)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "private.pem").write_bytes(key_pair[0].read_bytes())
    (keys / "private.pem").chmod(0o600)
    return keys / "private.pem"


@pytest_asyncio.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ServerProcess]]]:
    """Start server processes this test may stop itself (the ``server`` fixture must
    outlive the test); those still running at the end are stopped and checked."""
    started: list[ServerProcess] = []

    async def start(private_pem: Path, *extra: str) -> ServerProcess:
        process = await ServerProcess.start(private_pem, tmp_path / f"server{len(started)}", *extra)
        started.append(process)
        return process

    yield start
    for process in started:  # those a test stopped itself were checked then
        if process.returncode is None:
            assert await process.stop() == [], process.report()


@pytest_asyncio.fixture
async def server_process(key_pair: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A fresh server process on 127.0.0.1 (port 0), its working directory in tmp_path.

    The test fails if the server died before teardown or printed a Traceback."""
    async with running_server(key_pair[0], tmp_path / "server", process=True) as process:
        yield process


@pytest_asyncio.fixture
async def server(key_pair: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[LocalServer]:
    """A fresh server in this event loop on 127.0.0.1 (port 0), its database in tmp_path.

    The test fails if the server logged a Traceback."""
    async with running_server(key_pair[0], tmp_path / "server") as running:
        yield running


@pytest_asyncio.fixture
async def chat(
    server: LocalServer, key_pair: tuple[Path, Path], tmp_path: Path
) -> AsyncIterator[LocalChat]:
    """The test's server plus a factory for line-mode clients, all tasks of this event
    loop on real sockets (all stopped at teardown)."""
    world = LocalChat(server, key_pair[1], tmp_path)
    try:
        yield world
    finally:
        await world.shutdown()


@pytest_asyncio.fixture
async def process_chat(
    server_process: ServerProcess, key_pair: tuple[Path, Path], tmp_path: Path
) -> AsyncIterator[Chat]:
    """The test's server process plus a factory for line-mode client processes."""
    world = Chat(server_process, key_pair[1], tmp_path)
    try:
        yield world
    finally:
        await world.shutdown()
