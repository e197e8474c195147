"""Who is online anywhere in a cluster, as one node knows it (redis_hub.py keeps it
current from the other nodes' frames).

A node keeps its own users in full (their connections) and, for every other user of
the service, only where they are: a row of an in-memory SQLite table (the key, a small
number for their node, the display name where it is not the key), about 25 bytes, where
a Python dict entry with its key string took 110 and a full entry 460. That is what
routing, presence notices and a dead node's departures need without a round trip.
``/list``, display names and look-alikes of users not known here yet are read from
Redis, which holds them anyway (redis_scripts.py), so a node's memory grows with its
own users, not with the whole service's (BENCHMARKS.md, scenario 7)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from chat.server.cluster_wire import as_text
from chat.server.conversations import BROADCASTS, Message
from chat.server.groups import GroupRegistry
from chat.server.hub import Outbox
from chat.server.names import key
from chat.server.redis_scripts import ONLINE

#: Seconds a user found in Redis before their node's join frame arrived here is routed
#: from that finding; the frame normally follows within milliseconds.
EXPECTED_FOR = 5.0
#: Such users remembered at most (the oldest are forgotten first).
EXPECTED_MAX = 1024


@dataclass(slots=True)
class Entry:
    """One of this node's users."""

    name: str
    #: Login order, cluster-wide (kept for reasserting the claim after a Redis restart).
    order: int
    outbox: Outbox


class Directory:
    def __init__(self) -> None:
        #: key(name) -> this node's user.
        self.mine: dict[str, Entry] = {}
        #: Other nodes' users: key(name) -> index of their node (in ``_nodes``) and
        #: display name (NULL where it is the key). Only this thread uses it.
        self._remote = sqlite3.connect(":memory:", isolation_level=None)
        self._remote.execute("PRAGMA journal_mode=OFF")
        self._remote.execute("CREATE TABLE remote (k TEXT PRIMARY KEY, node INTEGER NOT NULL, name TEXT)"
                             " WITHOUT ROWID")
        #: Node ids by index, their indexes, and how many users each holds here.
        self._nodes: list[str] = []
        self._index: dict[str, int] = {}
        self._counts: list[int] = []
        #: key -> (name, node, when): found in Redis, their join frame not here yet.
        self._expected: dict[str, tuple[str, str, float]] = {}

    # --- this node's users --------------------------------------------------------------

    def local(self, k: str) -> Outbox | None:
        entry = self.mine.get(k)
        return entry.outbox if entry is not None else None

    def add_local(self, k: str, entry: Entry) -> None:
        self._drop_remote(k)
        self.mine[k] = entry

    def outboxes(self) -> list[Outbox]:
        return [e.outbox for e in self.mine.values()]

    def local_outboxes(self) -> list[tuple[str, Outbox]]:
        return [(k, e.outbox) for k, e in self.mine.items()]

    # --- other nodes' users -------------------------------------------------------------

    def node_of(self, k: str) -> str | None:
        """The other node holding ``k``, as its frames said."""
        index = self._index_of(k)
        return self._nodes[index] if index is not None else None

    def _index_of(self, k: str) -> int | None:
        row = self._remote.execute("SELECT node FROM remote WHERE k = ?", (k,)).fetchone()
        return row[0] if row is not None else None

    def route(self, k: str) -> str | None:
        """Where to send events for ``k``, another node's user: as its frames said, or
        as Redis said a moment ago (``expect``)."""
        node = self.node_of(k)
        if node is not None:
            return node
        expected = self._expected.get(k)
        if expected is not None and time.monotonic() - expected[2] < EXPECTED_FOR:
            return expected[1]
        return None

    def name_of(self, k: str) -> str:
        """The display name of another node's user."""
        return self.remote_name(k) or k

    def remote_name(self, k: str) -> str | None:
        """The display name of ``k`` if another node holds it, as its frames said."""
        row = self._remote.execute("SELECT coalesce(name, k) FROM remote WHERE k = ?", (k,)).fetchone()
        return str(row[0]) if row is not None else None

    def remote_names(self) -> dict[str, str]:
        """Every other node's user known here: key -> display name."""
        rows = self._remote.execute("SELECT k, coalesce(name, k) FROM remote")
        return {str(k): str(name) for k, name in rows}

    def is_remote(self, k: str) -> bool:
        return self._index_of(k) is not None

    def add_remote(self, k: str, name: str, node: str) -> None:
        """``k`` is held by ``node`` (a join, a takeover, a roster)."""
        self.mine.pop(k, None)
        self._expected.pop(k, None)
        self._drop_remote(k)
        index = self._index.get(node)
        if index is None:
            index = self._new_index(node)
        self._counts[index] += 1
        self._remote.execute("INSERT INTO remote VALUES (?, ?, ?)", (k, index, None if name == k else name))

    def expect(self, k: str, name: str, node: str) -> None:
        """``k`` was found in Redis on ``node``: route to it until its join frame comes."""
        if len(self._expected) >= EXPECTED_MAX:
            del self._expected[next(iter(self._expected))]
        self._expected[k] = (name, node, time.monotonic())

    def remove(self, k: str) -> None:
        self.mine.pop(k, None)
        self._expected.pop(k, None)
        self._drop_remote(k)

    def of_node(self, node: str) -> list[tuple[str, str]]:
        """``node``'s users known here: (key, display name)."""
        index = self._index.get(node)
        if index is None:
            return []
        rows = self._remote.execute("SELECT k, coalesce(name, k) FROM remote WHERE node = ?", (index,))
        return [(str(k), str(name)) for k, name in rows]

    def remote_nodes(self) -> set[str]:
        """The other nodes holding users known here."""
        return {node for node, index in self._index.items() if self._counts[index] > 0}

    def _drop_remote(self, k: str) -> None:
        index = self._index_of(k)
        if index is None:
            return
        self._remote.execute("DELETE FROM remote WHERE k = ?", (k,))
        self._counts[index] -= 1
        if self._counts[index] == 0:  # the node's number is free again
            del self._index[self._nodes[index]]
            self._nodes[index] = ""

    def _new_index(self, node: str) -> int:
        for index, held in enumerate(self._nodes):
            if not held:
                self._nodes[index] = node
                break
        else:
            index = len(self._nodes)
            self._nodes.append(node)
            self._counts.append(0)
        self._index[node] = index
        return index

    def readers(self, message: Message, groups: GroupRegistry) -> list[Outbox]:
        """This node's users who may read ``message`` (its sender aside): everyone a
        broadcast; the two users of a private conversation since they may read it; a
        group's members since they joined (history's rules, history.py)."""
        sender = key(message.sender)
        if message.conversation == BROADCASTS:
            return [o for k, o in self.local_outboxes() if k != sender]
        if message.conversation.startswith("@"):
            pair = message.conversation[1:].split(" ")
            return [o for k in pair if k != sender and (o := self.local(k)) is not None
                    and o.reads_from < message.id]  # fmt: skip
        group = groups.current(message.conversation[1:])
        if group is None:
            return []
        return [o for k in group.members if k != sender and (o := self.local(k)) is not None
                and group.joined.get(k, 0) < message.id]  # fmt: skip


async def online(redis: Redis, directory: Directory) -> list[str]:
    """Everyone online, in login order, as Redis holds it (a user welcomed elsewhere a
    moment ago included). While Redis is unreachable: the users known here, this node's
    in login order first."""
    try:
        keys = [as_text(k) for k in cast("list[bytes]", await redis.zrange(ONLINE, 0, -1))]
        known = directory.remote_names()
        unknown = [k for k in keys if k not in directory.mine and k not in known]
        names = await held(redis, unknown)
    except (RedisError, OSError):
        mine = sorted(directory.mine.values(), key=lambda e: e.order)
        return [e.name for e in mine] + list(directory.remote_names().values())
    found = []
    for k in keys:
        entry = directory.mine.get(k)
        if entry is not None:
            found.append(entry.name)
        elif k in known:
            found.append(known[k])
        elif k in names:
            found.append(names[k][0])
    return found


async def lookup(redis: Redis, directory: Directory, k: str, me: str) -> str | None:
    """The display name of ``k`` if online anywhere: as known here, or as Redis says for a
    user welcomed elsewhere a moment ago (routed to from then on: ``expect``)."""
    entry = directory.mine.get(k)
    if entry is not None:
        return entry.name
    name = directory.remote_name(k)
    if name is not None:
        return name
    try:
        found = (await held(redis, [k])).get(k)
    except (RedisError, OSError):
        return None
    if found is None or found[1] == me:
        return None
    directory.expect(k, *found)
    return found[0]


async def held(redis: Redis, keys: list[str]) -> dict[str, tuple[str, str]]:
    """Who holds each of ``keys`` in Redis: key -> (name, node)."""
    if not keys:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.hmget(f"chat:name:{k}", "name", "node")
        rows = await pipe.execute()
    return {k: (as_text(n), as_text(node)) for k, (n, node) in zip(keys, rows, strict=True) if n and node}


async def rosters(redis: Redis, me: str) -> dict[str, list[list[Any]]]:
    """Every other live node's users as Redis holds them (node -> [key, name, order])."""
    nodes = [as_text(n) for n in await redis.smembers("chat:nodes")]
    await redis.sadd("chat:nodes", me)
    found: dict[str, list[list[Any]]] = {}
    for node in nodes:
        if node == me or not await redis.exists("chat:node:" + node):
            continue
        rows = found[node] = []
        for k in [as_text(k) for k in await redis.smembers(f"chat:names:{node}")]:
            held = await redis.hgetall(f"chat:name:{k}")
            if as_text(held.get(b"node", b"")) == node:
                rows.append([k, as_text(held[b"name"]), int(held[b"order"])])
    return found
