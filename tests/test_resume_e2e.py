"""No message lost (README "Reconnecting"): real line-mode clients with ``--reconnect``
talk to a real server through a TCP proxy that cuts every connection (abruptly, both
sides) and then black-holes them (the server keeps a dead connection until the client
comes back and takes over), or to a server process killed with ``kill -9`` and
restarted. Every client ends with every message meant for it exactly
once, each sender's messages in the order sent, and prints nothing but events and the two
reconnect lines."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from e2e_harness import HOST, ServerProcess, child_env
from local_chat import LocalChat, LocalClient, LocalServer
from session_helpers import reply
from tcp_proxy import TcpProxy

from chat.client.transport import open_session
from chat.keys import load_public_key

NAMES = ["alice", "bob", "carol"]
ROUNDS = 16
TOKEN = re.compile(r"\b([bgp])-(\w+)-(\d+)$")


def _tokens(client: LocalClient) -> list[tuple[str, str, int]]:
    found = []
    for line in client.out.lines:
        if line.startswith("Private message to "):
            continue  # the sender's own confirmation
        match = TOKEN.search(line)
        if match is not None:
            found.append((match.group(1), match.group(2), int(match.group(3))))
    return found


def _expected(name: str) -> Counter[tuple[str, str, int]]:
    want: Counter[tuple[str, str, int]] = Counter()
    for sender in NAMES:
        if sender == name:
            continue
        for n in range(ROUNDS):
            want["b", sender, n] += 1
            want["g", sender, n] += 1
        if NAMES[(NAMES.index(sender) + 1) % len(NAMES)] == name:
            want.update(("p", sender, n) for n in range(ROUNDS))
    return want


def _the_three(line: str) -> bool:
    """The /list line of the three (registered names are marked ✓)."""
    return sorted(name.removesuffix("✓") for name in line.split(", ")) == NAMES


async def _talk(client: LocalClient) -> None:
    me = client.label
    peer = NAMES[(NAMES.index(me) + 1) % len(NAMES)]
    for n in range(ROUNDS):
        client.send(f"b-{me}-{n}")
        client.send(f"/group g g-{me}-{n}")
        client.send(f"/msg {peer} p-{me}-{n}")
        await asyncio.sleep(0.2)


async def back(client: LocalClient) -> None:
    """The client lost its connection and is back."""
    await client.expect("[Connection lost; reconnecting...]", timeout=10)
    await client.expect(f"[Reconnected as {client.label}.]", timeout=20)


async def _check(clients: list[LocalClient], *, restarted: bool = False) -> None:
    """Every message meant for each client arrived once, each sender's in order, and it
    printed nothing else but the reconnect lines and the events of the start (after a
    server restart also the others logging in again, and privates queued for a user
    who had not yet)."""
    for client in clients:
        want = _expected(client.label)
        for _ in range(400):  # until everything meant for it arrived (20 s at most)
            if Counter(_tokens(client)) >= want:
                break
            await asyncio.sleep(0.05)
        missing = want - Counter(_tokens(client))
        assert not missing, f"{client.label} missed {sorted(missing)}\n{client.report()}"
    for client in clients:
        client.send("/list")
        await client.expect_match(_the_three, "the three online")
        got = _tokens(client)
        assert Counter(got) == _expected(client.label), client.report()
        for kind in "bgp":
            for sender in NAMES:
                seqs = [n for k, s, n in got if (k, s) == (kind, sender)]
                assert seqs == sorted(seqs), (client.label, kind, sender, seqs)
        known = ("[Welcome", "[Connection lost;", "[Reconnected as", "Group g", "[You have been added",
                 "Private message to ")  # fmt: skip
        # Those who logged in after it, once: reconnecting is neither an exit nor a join.
        later = {f"[{name} joined]" for name in NAMES[NAMES.index(client.label) + 1 :]}
        if restarted:
            later |= {f"[{name} joined]" for name in NAMES}
            known += tuple(f"[{name} is offline; " for name in NAMES)
        stray = [
            line for line in client.out.lines
            if TOKEN.search(line) is None and not line.startswith(known)
            and not _the_three(line) and line not in later
        ]  # fmt: skip
        assert stray == [], stray


async def _start(chat: LocalChat, port: int, *options: str) -> list[LocalClient]:
    clients = []
    for name in NAMES:
        argv = [HOST, str(chat.public_pem), "--port", str(port), "--username", name, "--reconnect", *options]
        client = LocalClient(name, argv)
        client.server = chat.server
        chat.clients.append(client)
        await client.expect(f"[Welcome {name}]")
        clients.append(client)
    clients[0].send("/create g bob,carol")
    await clients[0].expect("Group g created and joined.")
    return clients


@pytest.mark.slow
async def test_cut_and_black_holed_connections_lose_and_repeat_nothing(chat: LocalChat) -> None:
    proxy = TcpProxy(chat.server.port)
    port = await proxy.start()
    try:
        clients = await _start(chat, port)
        talking = asyncio.gather(*(_talk(c) for c in clients))
        await asyncio.sleep(0.3)
        proxy.cut()  # the server sees it: the sessions linger until their clients resume
        await asyncio.gather(*(back(c) for c in clients))
        await proxy.black_hole(0.3)  # the server does not see it: the clients take over
        await asyncio.gather(*(back(c) for c in clients))
        await talking
        await _check(clients)
    finally:
        await proxy.close()


@pytest.mark.slow
async def test_a_server_killed_and_restarted_loses_and_repeats_nothing(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """``kill -9`` of the server process in the middle of the traffic, then a restart on
    the same port and database: registered users (their groups are kept) reconnect, get
    what they missed and send again what was not acknowledged, each message once."""
    directory = tmp_path / "server"
    directory.mkdir()
    for name in NAMES:
        added = subprocess.run(
            [sys.executable, "-m", "chat.server", "--add-account", name, "--db", str(directory / "chat.db")],
            input=f"{name} password\n", capture_output=True, text=True, env=child_env(), timeout=30,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        (tmp_path / f"{name}.pw").write_text(f"{name} password\n")
    server = await ServerProcess.start(key_pair[0], directory)
    chat = LocalChat(server, key_pair[1], tmp_path)  # type: ignore[arg-type]
    try:
        clients = []
        for name in NAMES:
            (client,) = await _start_one(chat, server.port, name, tmp_path / f"{name}.pw")
            clients.append(client)
        clients[0].send("/create g bob,carol")
        await clients[0].expect("Group g created and joined.")
        talking = asyncio.gather(*(_talk(c) for c in clients))
        await asyncio.sleep(0.5)
        server.proc.send_signal(signal.SIGKILL)
        assert await server.wait_exit(5) == -signal.SIGKILL
        server = await ServerProcess.start(key_pair[0], directory, "--port", str(server.port))
        await asyncio.gather(*(back(c) for c in clients))
        await talking
        await _check(clients, restarted=True)
    finally:
        await chat.shutdown()
        await server.stop()


async def _start_one(chat: LocalChat, port: int, name: str, password: Path) -> list[LocalClient]:
    argv = [HOST, str(chat.public_pem), "--port", str(port), "--username", name, "--reconnect",
            "--password-file", str(password)]  # fmt: skip
    client = LocalClient(name, argv)
    chat.clients.append(client)
    await client.expect(f"[Welcome {name}]")
    return [client]


async def test_sessions_still_lingering_log_out_cleanly_when_the_server_stops(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """A lost guest session in a group, lingering at shutdown, logs out before the
    database closes: its exit is logged, and nothing fails."""
    server = await LocalServer.start(key_pair[0], tmp_path / "server")
    session = await open_session(HOST, server.port, load_public_key(key_pair[1]))
    assert (await reply(session, "login", name="ann", features=["resume"])).type == "welcome"
    assert (await reply(session, "group_create", group="team")).type == "group_created"
    session._ws.transport.abort()  # lost without a word
    for _ in range(100):
        if server.chat_server.lingering:
            break
        await asyncio.sleep(0.02)
    assert len(server.chat_server.lingering) == 1
    problems = await server.stop()
    assert problems == []
    assert any("exit conn=" in line and "user=ann" in line for line in server.err.lines), server.report()
