"""No message lost (README "Reconnecting"): real line-mode clients with ``--reconnect``
talk to a real server through a TCP proxy that cuts every connection (abruptly, both
sides) and then black-holes them (the server keeps a dead connection until the client
comes back and takes over). Every client ends with every message meant for it exactly
once, each sender's messages in the order sent, and prints nothing but events and the two
reconnect lines."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest
from e2e_harness import HOST
from local_chat import LocalChat, LocalClient
from tcp_proxy import TcpProxy

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


@pytest.mark.slow
async def test_cut_and_black_holed_connections_lose_and_repeat_nothing(chat: LocalChat) -> None:
    proxy = TcpProxy(chat.server.port)
    port = await proxy.start()
    clients = []
    try:
        for name in NAMES:
            argv = [HOST, str(chat.public_pem), "--port", str(port), "--username", name, "--reconnect"]
            client = LocalClient(name, argv)
            client.server = chat.server
            chat.clients.append(client)
            await client.expect(f"[Welcome {name}]")
            clients.append(client)
        alice = clients[0]
        alice.send("/create g bob,carol")
        await alice.expect("Group g created and joined.")

        async def talk(client: LocalClient) -> None:
            me = client.label
            peer = NAMES[(NAMES.index(me) + 1) % len(NAMES)]
            for n in range(ROUNDS):
                client.send(f"b-{me}-{n}")
                client.send(f"/group g g-{me}-{n}")
                client.send(f"/msg {peer} p-{me}-{n}")
                await asyncio.sleep(0.2)

        async def back(client: LocalClient) -> None:
            await client.expect("[Connection lost; reconnecting...]", timeout=10)
            await client.expect(f"[Reconnected as {client.label}.]", timeout=15)

        talking = asyncio.gather(*(talk(c) for c in clients))
        await asyncio.sleep(0.3)
        proxy.cut()  # the server sees it: the sessions linger until their clients resume
        await asyncio.gather(*(back(c) for c in clients))
        await proxy.black_hole(0.3)  # the server does not see it: the clients take over
        await asyncio.gather(*(back(c) for c in clients))
        await talking
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
            await client.expect_match(lambda s: sorted(s.split(", ")) == NAMES, "the three online")
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
            stray = [
                line for line in client.out.lines
                if TOKEN.search(line) is None and not line.startswith(known)
                and sorted(line.split(", ")) != NAMES and line not in later
            ]  # fmt: skip
            assert stray == [], stray
            assert sorted(line for line in client.out.lines if line in later) == sorted(later)
    finally:
        await proxy.close()
