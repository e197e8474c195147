"""redis_link.py: the nodes' own pub/sub connections reach Redis however the URL says
(a password, TCP or a Unix socket), and frames cross them in order."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_world import ClusterChat
from local_chat import LocalServer
from services import RedisServer

from chat.server.redis_link import command

pytestmark = pytest.mark.cluster


def test_commands_are_written_in_resp() -> None:
    assert command("PUBLISH", b"chat:all", b"a\r\nb") == (
        b"*3\r\n$7\r\nPUBLISH\r\n$8\r\nchat:all\r\n$4\r\na\r\nb\r\n"
    )
    assert command("AUTH", "ü") == b"*2\r\n$4\r\nAUTH\r\n$2\r\n\xc3\xbc\r\n"


async def test_nodes_reach_a_redis_with_a_password_over_tcp_and_a_unix_socket(
    key_pair: tuple[Path, Path], tmp_path: Path, pg_url: str
) -> None:
    socket = tmp_path / "redis.sock"
    redis = RedisServer(tmp_path / "redis", "--requirepass", "s3cret", "--unixsocket", str(socket),
                        "--unixsocketperm", "700")  # fmt: skip
    await redis.start()
    urls = [f"redis://:s3cret@127.0.0.1:{redis.port}/0", f"unix://:s3cret@{socket}"]
    nodes: list[LocalServer] = []
    try:
        for n, url in enumerate(urls):
            options = ("--redis", url, "--db", pg_url)
            nodes.append(await LocalServer.start(key_pair[0], tmp_path / f"node{n}", *options))
        world = ClusterChat(nodes, key_pair[1], tmp_path, [])
        alice, bob = await world.login("alice", "bob")  # one on each node
        await alice.expect("[bob joined]")
        for n in range(20):  # in order, each once
            alice.send(f"/msg bob p{n}")
            bob.send(f"b{n}")
        for n in range(20):
            await bob.expect(f"Private message from alice: p{n}")
            await alice.expect(f"[Broadcast from bob]: b{n}")
        await alice.sync("alice, bob")
        await world.shutdown()
        for node in nodes:
            trouble = [line for line in node.err.lines if "lost Redis" in line or "cannot reach" in line]
            assert trouble == [], node.report()
            assert not any("s3cret" in line for line in node.err.lines)
    finally:
        for node in nodes:
            await node.stop()
        redis.kill()
