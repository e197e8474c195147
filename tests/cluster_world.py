"""Several nodes of one service (README "Running a cluster") in this event loop, on a
Redis server and a PostgreSQL database of the test's own.

Each client logs in on the next node in turn, so a test written for one server
(``chat.spawn``, ``chat.login``) runs across nodes unchanged: with three nodes, alice,
bob and carol are each on a node of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as redis
from local_chat import LocalChat, LocalClient, LocalServer
from services import PgServer, RedisServer, create_database, drop_database

from chat.server.store_api import make_store

NODES = 3


class ClusterChat(LocalChat):
    """A LocalChat whose clients go to the nodes in turn (or to the node asked for)."""

    def __init__(
        self, nodes: list[LocalServer], public_pem: Path, tmp_path: Path, options: list[str]
    ) -> None:
        super().__init__(nodes[0], public_pem, tmp_path)
        self.nodes = nodes
        #: The options every node was started with (to start another like them).
        self.options = options
        self._turn = 0

    async def spawn(
        self,
        username: str | None = None,
        label: str | None = None,
        *options: str,
        kind: type[LocalClient] = LocalClient,
        node: int | None = None,
    ) -> LocalClient:
        index = self._turn % len(self.nodes) if node is None else node
        self._turn += 1
        self.server = self.nodes[index]
        return await super().spawn(username, label, *options, kind=kind)

    async def stop_nodes(self) -> list[str]:
        problems: list[str] = []
        for node in self.nodes:
            problems += [f"{node.label} :{node.port}: {p}\n{node.report()}" for p in await node.stop()]
        return problems


async def start_cluster(
    private_pem: Path, public_pem: Path, tmp_path: Path, redis_url: str, db_url: str, *extra: str,
    nodes: int = NODES,
) -> ClusterChat:
    options = ["--redis", redis_url, "--db", db_url, *extra]
    started = [await LocalServer.start(private_pem, tmp_path / f"node{n}", *options) for n in range(nodes)]
    return ClusterChat(started, public_pem, tmp_path, options)


@pytest_asyncio.fixture
async def cluster(
    key_pair: tuple[Path, Path], tmp_path: Path, redis_url: str, pg_url: str
) -> AsyncIterator[ClusterChat]:
    """Three nodes on the test's own Redis and database, and a factory for clients."""
    world = await start_cluster(key_pair[0], key_pair[1], tmp_path, redis_url, pg_url)
    try:
        yield world
    finally:
        await world.shutdown()
        problems = await world.stop_nodes()
    if problems:
        pytest.fail("\n".join(problems))


def only_chat_tests(namespace: dict[str, Any]) -> None:
    """Drop, from a module that imported another's tests, those that need anything but
    the ``chat`` world (a server process, say)."""
    import inspect

    for name, value in list(namespace.items()):
        if name.startswith("test_") and callable(value):
            parameters = set(inspect.signature(value).parameters)
            if "chat" not in parameters or parameters - {"chat", "tmp_path"}:
                del namespace[name]


@pytest_asyncio.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A Redis of the test's own on a free port (it may kill and restart it)."""
    server = RedisServer(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis per test worker for the tests that do not stop it (emptied for each)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.launch()
    try:
        yield server
    finally:
        server.kill()


@pytest_asyncio.fixture
async def redis_url(shared_redis: RedisServer) -> str:
    """An empty Redis for this test."""
    for _ in range(200):
        try:
            client = redis.Redis.from_url(shared_redis.url)
            try:
                await client.flushall()
            finally:
                await client.aclose()
            return shared_redis.url
        except redis.ConnectionError:
            await asyncio.sleep(0.02)  # still starting
    raise RuntimeError("the shared redis-server does not answer")


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database with the schema made, for test databases to be copies of (fast)."""

    async def make() -> str:
        url, name = await create_database()
        store = make_store(url)
        await store.open()
        await store.close()
        return name

    name = asyncio.run(make())
    try:
        yield name
    finally:
        asyncio.run(drop_database(name))


@pytest_asyncio.fixture
async def pg_url(pg_template: str) -> AsyncIterator[str]:
    """A fresh database of the test's own on the machine's PostgreSQL, dropped after."""
    url, name = await create_database(pg_template)
    try:
        yield url
    finally:
        await drop_database(name)


@pytest_asyncio.fixture
async def pg_server() -> AsyncIterator[PgServer]:
    """A PostgreSQL server of the test's own (it may stop and restart it)."""
    server = PgServer()
    try:
        await server.create()
        yield server
    finally:
        await asyncio.to_thread(server.remove)
