"""Who is online anywhere in a cluster, as one node knows it (redis_hub.py keeps it
current from the other nodes' frames): lookups and ``/list`` without a round trip."""

from __future__ import annotations

from dataclasses import dataclass

from chat.server.conversations import BROADCASTS, Message
from chat.server.groups import GroupRegistry
from chat.server.hub import Outbox
from chat.server.names import key, skeleton


@dataclass
class Entry:
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

    def get(self, k: str) -> Entry | None:
        return self.entries.get(k)

    def add(self, k: str, entry: Entry) -> None:
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
        """This node's users who read ``message`` (its sender aside)."""
        if message.conversation == BROADCASTS:
            targets = [k for k, _ in self.mine()]
        elif message.conversation.startswith("@"):
            targets = message.conversation[1:].split(" ")
        else:
            targets = list(groups.members_of(message.conversation[1:]))
        sender = key(message.sender)
        return [o for k in targets if k != sender and (o := self.local(k)) is not None]
