"""README "Running a cluster" shows an nginx configuration for several nodes: it is run
here as written (the node addresses and the port replaced by the test's), in front of
three real nodes, and real clients log in and talk through it; a node that stops is
routed around."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from cluster_world import ClusterChat
from e2e_harness import HOST, REPO_ROOT
from local_chat import LocalClient
from services import free_port

pytestmark = pytest.mark.cluster


def readme_nginx() -> str:
    """The nginx block of README "Running a cluster"."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Running a cluster") :]
    match = re.search(r"```nginx\n(.*?)```", section, re.S)
    assert match is not None, "README's cluster section has no nginx block"
    return match.group(1)


@pytest_asyncio.fixture
async def proxy(cluster: ClusterChat, tmp_path: Path) -> AsyncIterator[int]:
    """nginx with README's configuration in front of the cluster's nodes; its port."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    servers = iter(node.port for node in cluster.nodes)
    config = re.sub(r"server 10\.0\.0\.\d+:8767", lambda _: f"server {HOST}:{next(servers)}", readme_nginx())
    assert next(servers, None) is None, "README's upstream does not list three nodes"
    config = config.replace("listen 8767;", f"listen {HOST}:{port};")
    directory = tmp_path / "nginx"
    directory.mkdir()
    (directory / "nginx.conf").write_text(
        f"error_log {directory}/error.log;\npid {directory}/nginx.pid;\nevents {{}}\n"
        f"http {{\n access_log off;\n client_body_temp_path {directory};\n proxy_temp_path {directory};\n"
        f"{config}}}\n"
    )
    command = [nginx, "-p", str(directory), "-c", str(directory / "nginx.conf")]
    process = subprocess.Popen(
        [*command, "-g", "daemon off; master_process off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection(HOST, port)
                writer.close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                await asyncio.sleep(0.02)
        yield port
    finally:
        process.terminate()
        process.wait(5)


def _client(cluster: ClusterChat, port: int, name: str) -> LocalClient:
    argv = [HOST, str(cluster.public_pem), "--port", str(port), "--username", name]
    client = LocalClient(name, argv)
    cluster.clients.append(client)
    return client


async def test_clients_through_the_readme_nginx_reach_every_node_as_one(
    cluster: ClusterChat, proxy: int
) -> None:
    clients = []
    for name in ("alice", "bob", "carol", "dave"):
        client = _client(cluster, proxy, name)
        await client.expect(f"[Welcome {name}]")
        clients.append(client)
    alice, bob, carol, dave = clients
    users = [sum(1 for c in node.chat_server.connections if c.name) for node in cluster.nodes]
    assert sum(users) == 4 and max(users) <= 2, users  # least_conn spreads them
    alice.send("hello through the proxy")
    for other in (bob, carol, dave):
        await other.expect("[Broadcast from alice]: hello through the proxy")
    dave.send("/msg alice and back")
    await alice.expect("Private message from dave: and back")
    await alice.sync("alice, bob, carol, dave")
    await cluster.nodes[0].stop()  # a node goes away: new connections go to the others
    late = _client(cluster, proxy, "erin")
    await late.expect("[Welcome erin]")
