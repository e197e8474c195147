"""Who is online anywhere in a cluster, as one node knows it (redis_hub.py keeps it
current from the other nodes' frames): lookups and ``/list`` without a round trip."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from chat.server.cluster_wire import as_text
from chat.server.conversations import BROADCASTS, Message
from chat.server.groups import GroupRegistry
from chat.server.hub import Outbox
from chat.server.names import key, skeleton

#: Seconds a lookup waits at most for logins on other nodes to be known here.
CATCH_UP = 1.0


@dataclass(slots=True)
class Entry:
    """Who holds a name. Every node keeps one for every user of the service (``/list``,
    look-alike checks), so it is kept small: no ``__dict__``."""

    name: str
    node: str
    #: Login order, cluster-wide (``/list`` is in login order).
    order: int
    #: The connection, when the user is on this node.
    outbox: Outbox | None = None


class Directory:
    def __init__(self) -> None:
        #: key(name) -> who holds it.
        self.entries: dict[str, Entry] = {}
        #: skeleton(name) -> key(name) of the users online.
        self._looks: dict[str, str] = {}
        #: The latest login (its order) known here.
        self.max_order = 0

    def get(self, k: str) -> Entry | None:
        return self.entries.get(k)

    async def caught_up(self, redis: Redis) -> bool:
        """Wait (a second at most) until every login claimed so far, on any node, is known
        here: a user who was just welcomed elsewhere is in ``/list`` at once. Whether
        there were any to wait for."""
        try:
            wanted = int(await redis.get("chat:order") or 0)
        except (RedisError, OSError):
            return False  # the link is down: what is known here is all there is
        if wanted <= self.max_order:
            return False
        deadline = time.monotonic() + CATCH_UP
        while self.max_order < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        return True

    def add(self, k: str, entry: Entry) -> None:
        entry.node = sys.intern(entry.node)  # one copy of each node's id, not one per user
        self.max_order = max(self.max_order, entry.order)
        self.entries[k] = entry
        self._looks.setdefault(skeleton(entry.name), k)

    def remove(self, k: str) -> Entry | None:
        entry = self.entries.pop(k, None)
        if entry is not None and self._looks.get(skeleton(entry.name)) == k:
            del self._looks[skeleton(entry.name)]
        return entry

    def local(self, k: str) -> Outbox | None:
        entry = self.entries.get(k)
        return entry.outbox if entry is not None else None

    def look_alike(self, k: str, name: str) -> Entry | None:
        """The online user whose name looks like ``name`` without being it."""
        other = self._looks.get(skeleton(name))
        return self.entries.get(other) if other is not None and other != k else None

    def in_order(self) -> list[str]:
        return [e.name for e in sorted(self.entries.values(), key=lambda e: e.order)]

    def outboxes(self) -> list[Outbox]:
        return [e.outbox for e in self.entries.values() if e.outbox is not None]

    def mine(self) -> list[tuple[str, Entry]]:
        """This node's users."""
        return [(k, e) for k, e in self.entries.items() if e.outbox is not None]

    def local_outboxes(self) -> list[tuple[str, Outbox]]:
        return [(k, e.outbox) for k, e in self.entries.items() if e.outbox is not None]

    def of_node(self, node: str) -> list[tuple[str, Entry]]:
        return [(k, e) for k, e in self.entries.items() if e.node == node and e.outbox is None]

    def remote_nodes(self) -> set[str]:
        return {e.node for e in self.entries.values() if e.outbox is None}

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
