"""Shared fixtures: one server key pair per session, a fresh server process per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from e2e_harness import Chat, ServerProcess

from chat.keys import generate_private_key, write_key_pair


@pytest.fixture(scope="session")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private.pem, public.pem): one 2048-bit server key for the whole session."""
    directory = tmp_path_factory.mktemp("keys")
    return write_key_pair(directory, generate_private_key(2048))


@pytest_asyncio.fixture
async def server(key_pair: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A fresh server process on 127.0.0.1 (port 0), its working directory in tmp_path.

    The test fails if the server died before teardown or printed a Traceback."""
    process = await ServerProcess.start(key_pair[0], tmp_path / "server")
    try:
        yield process
    finally:
        problems = await process.stop()
    if problems:
        pytest.fail("; ".join(problems) + "\n" + process.report())


@pytest_asyncio.fixture
async def chat(server: ServerProcess, key_pair: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[Chat]:
    """The test's server plus a factory for line-mode clients (all stopped at teardown)."""
    world = Chat(server, key_pair[1], tmp_path)
    try:
        yield world
    finally:
        await world.shutdown()
