"""A cluster losing a node, Redis or PostgreSQL in the middle of the traffic (README
"Running a cluster"): three real nodes, real line-mode clients that talk all the while
(each message carries a token: kind, sender, number), and at the end every client has
every message meant for it exactly once, each sender's in order (test_resume_e2e's
checks), whatever failed on the way."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from cluster_world import ClusterChat, start_cluster
from e2e_harness import HOST, USERNAME_PROMPT, ServerProcess
from local_chat import LocalChat, LocalClient
from services import PgServer, RedisServer
from test_resume_e2e import NAMES, _check, _expected, _talk, _tokens, back

from chat.client.own_lines import LINE_MODE_LOST

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

LOST_LINK = "[The server lost contact with the other servers of the service; "
BACK_LINK = "[The server is in contact with the other servers again; delayed messages follow.]"


def _servers(ports: list[int], first: int) -> str:
    """The node list as a client is given it, starting with node ``first``."""
    turn = ports[first:] + ports[:first]
    return ",".join(f"{HOST}:{port}" for port in turn)


async def _clients(chat: LocalChat, ports: list[int]) -> list[LocalClient]:
    """alice, bob and carol, each on a node of their own, in a group ``g``."""
    clients = []
    for n, name in enumerate(NAMES):
        argv = [_servers(ports, n), str(chat.public_pem), "--username", name, "--reconnect"]
        client = LocalClient(name, argv)
        client.server = chat.server
        chat.clients.append(client)
        await client.expect(f"[Welcome {name}]")
        clients.append(client)
    clients[0].send("/create g bob,carol")
    await clients[0].expect("Group g created and joined.")
    return clients


async def test_a_node_killed_its_users_resume_elsewhere_and_miss_nothing(
    key_pair: tuple[Path, Path], tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    """``kill -9`` of bob's node: bob resumes on another node at once (his token lets him
    take his name over from the dead node), gets what was said meanwhile from the
    database, sends again what was not acknowledged; nobody sees him leave."""
    options = ("--redis", redis_url, "--db", pg_url)
    nodes = [await ServerProcess.start(key_pair[0], tmp_path / f"node{n}", *options) for n in range(3)]
    chat = LocalChat(nodes[0], key_pair[1], tmp_path)  # type: ignore[arg-type]
    try:
        clients = await _clients(chat, [node.port for node in nodes])
        talking = asyncio.gather(*(_talk(c) for c in clients))
        await asyncio.sleep(0.6)
        nodes[1].proc.send_signal(signal.SIGKILL)
        assert await nodes[1].wait_exit(5) == -signal.SIGKILL
        await back(clients[1])
        await talking
        await _check(clients)
    finally:
        await chat.shutdown()
        for n, node in enumerate(nodes):
            if n != 1:
                await node.stop()


async def test_a_dead_nodes_names_are_free_within_15_seconds(
    cluster: ClusterChat, key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """A node killed with its users: their names are taken until its heartbeat lapses,
    then free on the other nodes, and the others are told they left."""
    doomed = await ServerProcess.start(key_pair[0], tmp_path / "doomed", *cluster.options)
    watcher = await cluster.spawn("watcher", node=0)
    await watcher.expect("[Welcome watcher]")
    argv = [HOST, str(cluster.public_pem), "--port", str(doomed.port), "--username", "dana"]
    dana = LocalClient("dana", argv)
    cluster.clients.append(dana)
    await dana.expect("[Welcome dana]")
    await watcher.expect("[dana joined]")
    doomed.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await doomed.wait_exit(5)
    await watcher.expect("[dana exited]", timeout=20)
    again = await cluster.spawn(label="again", node=2)
    while time.monotonic() - killed < 20:
        await again.expect(USERNAME_PROMPT)
        again.send("dana")
        line = await again.expect_match(lambda s: "dana" in s, "an answer about dana")
        if line == "[Welcome dana]":
            break
        assert line == "[Username 'dana' is already in use. Please enter another name.]"
        await asyncio.sleep(0.5)
    assert time.monotonic() - killed < 16


def _check_with_link_notices(clients: list[LocalClient]) -> None:
    """_check's rules, where each client may also have been told the link to the other
    nodes was lost and is back (once each, in that order)."""
    for client in clients:
        notices = [line for line in client.out.lines if line.startswith(LOST_LINK) or line == BACK_LINK]
        assert notices in ([], [notices[0], BACK_LINK]), client.report()
        got = _tokens(client)
        assert Counter(got) == _expected(client.label), client.report()
        for kind in "bgp":
            for sender in NAMES:
                seqs = [n for k, s, n in got if (k, s) == (kind, sender)]
                assert seqs == sorted(seqs), (client.label, kind, sender, seqs)
        assert LINE_MODE_LOST not in client.out.lines  # nobody was disconnected


async def _wait_for_all(clients: list[LocalClient]) -> None:
    for client in clients:
        for _ in range(400):
            if Counter(_tokens(client)) >= _expected(client.label):
                break
            await asyncio.sleep(0.05)


async def test_redis_restarts_during_traffic_and_nothing_is_lost(
    key_pair: tuple[Path, Path], tmp_path: Path, redis_server: RedisServer, pg_url: str
) -> None:
    """Redis killed and started again (empty) while everyone talks: nodes keep their
    users, say what happened, claim their names again, and deliver from the database
    every stored message that pub/sub lost, once."""
    cluster = await start_cluster(key_pair[0], key_pair[1], tmp_path, redis_server.url, pg_url)
    try:
        clients = await _clients(cluster, [node.port for node in cluster.nodes])
        talking = asyncio.gather(*(_talk(c) for c in clients))
        await asyncio.sleep(0.6)
        redis_server.kill()
        for client in clients:
            await client.expect_prefix(LOST_LINK, timeout=10)
        for client in clients:  # /list without Redis: everyone known, this node's users first
            client.send("/list")
            others = ", ".join(sorted(set(NAMES) - {client.label}))
            first = f"{client.label}, "
            listed = await client.expect_match(lambda s, first=first: s.startswith(first), "a /list reply")
            assert ", ".join(sorted(listed.split(", ")[1:])) == others, listed
        await asyncio.sleep(1.0)
        await redis_server.restart()
        for client in clients:
            await client.expect(BACK_LINK, timeout=15)
        await talking
        await _wait_for_all(clients)
        _check_with_link_notices(clients)
        for client in clients:  # everyone is still online everywhere, names claimed again
            client.send("/list")
            await client.expect("alice, bob, carol")
        assert any("cluster: lost Redis" in line for line in cluster.nodes[0].err.lines)
    finally:
        await cluster.shutdown()
        await cluster.stop_nodes()


async def test_postgresql_restarts_during_traffic_and_nothing_acknowledged_is_lost(
    key_pair: tuple[Path, Path], tmp_path: Path, redis_url: str, pg_server: PgServer
) -> None:
    """The database stopped (immediate shutdown) and started again while everyone talks:
    nodes keep their users and retry; every message ends up delivered once."""
    cluster = await start_cluster(key_pair[0], key_pair[1], tmp_path, redis_url, pg_server.url)
    try:
        clients = await _clients(cluster, [node.port for node in cluster.nodes])
        talking = asyncio.gather(*(_talk(c) for c in clients))
        await asyncio.sleep(0.6)
        await pg_server.stop()
        await asyncio.sleep(1.0)
        await pg_server.start()
        await talking
        await _check(clients)
        assert any("database unreachable" in line for line in cluster.nodes[0].err.lines)
        assert any("database is back" in line for line in cluster.nodes[0].err.lines)
    finally:
        await cluster.shutdown()
        await cluster.stop_nodes()
