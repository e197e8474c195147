"""End to end under load: 50 clients chatting at once against a real server.

The clients are in-process asyncio sessions (``chat.client.transport.open_session``), each
a real WebSocket connection with its own handshake, so 50 of them stay cheap. Every
client sends broadcasts, private messages and group messages concurrently; afterwards
every message must have reached exactly its recipients, once each, in its sender's order.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from e2e_harness import HOST, ServerProcess

from chat.client.transport import open_session
from chat.keys import load_public_key
from chat.protocol.envelope import Envelope

CLIENTS = 50
ROUNDS = 5
#: Group "red" has clients 0..24, group "blue" 20..44 (20..24 in both, 45..49 in none).
GROUPS = {"red": range(0, 25), "blue": range(20, 45)}
TIMEOUT = 20.0


def name(index: int) -> str:
    return f"user{index:02d}"


class Peer:
    """One in-process client: its session and everything it received, in order."""

    def __init__(self, index: int, session: Any) -> None:
        self.index = index
        self.name = name(index)
        self.session = session
        self.events: list[Envelope] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                envelope = await self.session.recv()
            except Exception:
                self._changed.set()
                return
            self.events.append(envelope)
            self._changed.set()

    async def send(self, kind: str, **fields: Any) -> int:
        rid = self.session.send(kind, **fields)
        if inspect.isawaitable(rid):
            rid = await rid
        assert isinstance(rid, int)
        return rid

    async def wait_until(self, predicate: Any, what: str, timeout: float = TIMEOUT) -> None:
        async def poll() -> None:
            while not predicate():
                if self._reader.done():
                    raise AssertionError(f"{self.name}: session ended while waiting for {what}")
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: timed out waiting for {what}; last events: "
                f"{[(e.type, e.fields) for e in self.events[-10:]]}"
            ) from None

    def reply(self, rid: int) -> Envelope | None:
        return next((e for e in self.events if e.get("re") == rid), None)

    async def request(self, kind: str, **fields: Any) -> Envelope:
        """Send a request and wait for its reply (the event whose ``re`` is its rid)."""
        rid = await self.send(kind, **fields)
        await self.wait_until(lambda: self.reply(rid) is not None, f"the reply to {kind}")
        reply = self.reply(rid)
        assert reply is not None
        return reply

    def of_type(self, kind: str) -> list[Envelope]:
        return [e for e in self.events if e.type == kind and "re" not in e.fields]

    async def close(self) -> None:
        self._reader.cancel()
        await self.session.close()


async def _connect(index: int, public_key: Any, port: int) -> Peer:
    session = await open_session(HOST, port, public_key)
    return Peer(index, session)


async def test_fifty_clients_chatting_at_once(server: ServerProcess, key_pair: tuple[Path, Path]) -> None:
    public_key = load_public_key(key_pair[1])
    peers = await asyncio.gather(*(_connect(i, public_key, server.port) for i in range(CLIENTS)))
    try:
        await _run(peers)
        assert server.returncode is None, "the server died"
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)


async def _run(peers: list[Peer]) -> None:
    # Everyone logs in at once; each gets its welcome.
    welcomes = await asyncio.gather(*(p.request("login", name=p.name) for p in peers))
    for peer, welcome in zip(peers, welcomes, strict=True):
        assert (welcome.type, welcome.fields.get("name")) == ("welcome", peer.name), welcome
    users = await peers[0].request("list")
    assert users.type == "user_list"
    assert sorted(users["users"]) == sorted(p.name for p in peers)

    # Two overlapping groups, created with their members (all online).
    for group, members in GROUPS.items():
        owner = peers[members[0]]
        reply = await owner.request(
            "group_create", group=group, members=[name(i) for i in members if i != members[0]]
        )
        assert (reply.type, reply.fields.get("group")) == ("group_created", group), reply
    for group, members in GROUPS.items():
        for i in members[1:]:
            await peers[i].wait_until(
                lambda p=peers[i], g=group: any(e["group"] == g for e in p.of_type("group_added")),
                f"group_added {group}",
            )

    # Everyone sends at once: per round a broadcast, a private message to the next
    # client and a message to each of its groups (about 20 requests: under the burst limit).
    groups_of = {i: [g for g, members in GROUPS.items() if i in members] for i in range(CLIENTS)}
    rids: dict[int, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)

    async def chatter(peer: Peer) -> None:
        i = peer.index
        for k in range(ROUNDS):
            text = f"b {i} {k}"
            rids[i].append((await peer.send("broadcast", text=text), "ok", {}))
            to, text = name((i + 1) % CLIENTS), f"p {i} {k}"
            rid = await peer.send("private", to=to, text=text)
            rids[i].append((rid, "private_sent", {"to": to, "text": text}))
            for group in groups_of[i]:
                text = f"g {group} {i} {k}"
                rids[i].append((await peer.send("group_message", group=group, text=text), "ok", {}))
            await asyncio.sleep(0)

    await asyncio.gather(*(chatter(p) for p in peers))

    # Every request gets exactly its reply.
    for peer in peers:
        expected = rids[peer.index]
        await peer.wait_until(
            lambda p=peer, e=expected: all(p.reply(rid) is not None for rid, _, _ in e), "all replies"
        )
        for rid, kind, fields in expected:
            replies = [e for e in peer.events if e.get("re") == rid]
            assert len(replies) == 1, (peer.name, rid, replies)
            assert replies[0].type == kind, (peer.name, replies[0])
            for key, value in fields.items():
                assert replies[0][key] == value, (peer.name, replies[0])

    # What each client must receive (as notifications), per sender in send order.
    expected_broadcasts = {
        p.index: {j: [f"b {j} {k}" for k in range(ROUNDS)] for j in range(CLIENTS) if j != p.index}
        for p in peers
    }
    expected_privates = {
        p.index: {(p.index - 1) % CLIENTS: [f"p {(p.index - 1) % CLIENTS} {k}" for k in range(ROUNDS)]}
        for p in peers
    }
    expected_group: dict[int, dict[tuple[str, str], list[str]]] = {p.index: {} for p in peers}
    for group, members in GROUPS.items():
        for receiver in members:
            for sender in members:
                if sender != receiver:
                    expected_group[receiver][(group, name(sender))] = [
                        f"g {group} {sender} {k}" for k in range(ROUNDS)
                    ]

    def counts(peer: Peer) -> tuple[int, int, int]:
        return (
            len(peer.of_type("broadcast")),
            len(peer.of_type("private")),
            len(peer.of_type("group_message")),
        )

    for peer in peers:
        want = (
            (CLIENTS - 1) * ROUNDS,
            ROUNDS,
            sum(len(v) for v in expected_group[peer.index].values()),
        )
        await peer.wait_until(lambda p=peer, w=want: all(c >= n for c, n in zip(counts(p), w, strict=True)),
                              f"all messages {want}")

    # A final round trip per client: anything extra (a duplicate) would show up before it.
    await asyncio.gather(*(p.request("list") for p in peers))

    for peer in peers:
        got_broadcasts: dict[int, list[str]] = defaultdict(list)
        for e in peer.of_type("broadcast"):
            got_broadcasts[int(e["sender"][4:])].append(e["text"])
        assert dict(got_broadcasts) == expected_broadcasts[peer.index], peer.name

        got_privates: dict[int, list[str]] = defaultdict(list)
        for e in peer.of_type("private"):
            got_privates[int(e["sender"][4:])].append(e["text"])
        assert dict(got_privates) == expected_privates[peer.index], peer.name

        got_group: dict[tuple[str, str], list[str]] = defaultdict(list)
        for e in peer.of_type("group_message"):
            got_group[(e["group"], e["sender"])].append(e["text"])
        assert dict(got_group) == expected_group[peer.index], peer.name

        every_text = Counter(
            e["text"] for e in peer.events if e.type in ("broadcast", "private", "group_message")
        )
        assert all(n == 1 for n in every_text.values()), (peer.name, every_text.most_common(3))

    for peer in peers:
        assert not peer._reader.done(), f"{peer.name}: the session ended"
