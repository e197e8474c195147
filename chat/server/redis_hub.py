"""The hub of a node in a cluster (README "Running a cluster"): who is online anywhere,
and delivery to users wherever they are, through Redis.

- Names are claimed in Redis by a script that refuses a name (or a look-alike of one)
  held by a live node; a node's names are free once its heartbeat key expires
  (redis_link.NODE_TTL), so within 15 s of its death.
- Every node keeps a copy of the directory (key -> name, node, login order), updated by
  the ``j``/``x``/``t``/``r`` frames, so ``/list`` and lookups cost no round trip.
  Each node announces the joins and exits of other nodes' users to its own users only:
  every user is told once.
- Events for users of this node are delivered at once; for other nodes, one frame per
  node (or one broadcast frame for all), in the order they were sent.
- The database is the truth, pub/sub may lose frames: while the link is down nothing is
  published, and when it is back this node delivers to its users every stored message
  it may have missed (by message id, deduplicated), then says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from chat.protocol.codes import ErrorCode, NoticeCode
from chat.protocol.envelope import Envelope, encode_event
from chat.server.cluster_directory import Directory, Entry
from chat.server.cluster_wire import Frame, decode_frame, encode_frame
from chat.server.errors import RequestError
from chat.server.groups import GroupChange
from chat.server.hub import Claim, Outbox, _variant
from chat.server.names import key, skeleton
from chat.server.redis_groups import ClusterGroups
from chat.server.redis_link import ALL, HEARTBEAT, NODE_KEY, RedisLink, node_channel
from chat.server.redis_scripts import CLAIM, REAP, REASSERT, RELEASE
from chat.server.stored_events import replayed_event

if TYPE_CHECKING:
    from chat.server.groups import GroupRegistry
    from chat.server.presence import PresenceFeed
    from chat.server.store_api import Store

log = logging.getLogger("chat.server")

#: Stored messages remembered as delivered here, so a gap fill does not repeat them; and
#: how far before the newest id seen a gap fill looks (ids of concurrent appends on
#: other nodes are not published in id order).
DELIVERED_MEMORY = 50_000
GAP_MARGIN = 2_000
#: Hex digits of a node's id.
NODE_ID_HEX = 12
#: Stored messages one gap fill delivers at most per query.
FILL_PAGE = 1_000


class RedisHub:
    """A Hub (hub.py) shared by the nodes using one Redis."""

    #: This node's presence feed, groups and database (given to ``start``).
    presence: PresenceFeed
    groups: GroupRegistry
    storage: Store

    def __init__(self, url: str, node: str | None = None) -> None:
        self.node = node or secrets.token_hex(NODE_ID_HEX // 2)
        self.link = RedisLink(url, self.node, self._received, self._link_up, self._link_down)
        self._dir = Directory()
        self._groups: ClusterGroups | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: Newest stored message id seen here, and ids recently delivered here.
        self._seen = 0
        self._delivered: set[int] = set()
        self._delivered_order: deque[int] = deque()
        #: The newest id seen when the link went down (None while it is up).
        self._lost_at: int | None = None
        #: Set by the server: handles a request another node forwarded, and a user of
        #: another node who left (their transfers here end).
        self.forwarded: Callable[[Frame], Awaitable[None]] | None = None
        self.user_gone: Callable[[str], Awaitable[None]] | None = None
        self._scripts = {name: self.link.redis.register_script(s) for name, s in
                         (("claim", CLAIM), ("release", RELEASE), ("reassert", REASSERT), ("reap", REAP))}

    # --- life -------------------------------------------------------------------------

    async def start(self, presence: PresenceFeed, groups: GroupRegistry, storage: Store) -> None:
        """Join the cluster: this node's presence feed, groups and database."""
        self.presence, self.groups, self.storage = presence, groups, storage
        self._groups = ClusterGroups(self.link, groups, storage)
        self._seen = storage.messages.last_id
        await self.link.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.link.close()

    # --- the Hub interface ------------------------------------------------------------

    async def claim(self, name: str, outbox: Outbox, *, takeover: bool = False) -> Claim:
        k = key(name)
        try:
            result = await self._scripts["claim"](
                keys=[f"chat:name:{k}", f"chat:look:{skeleton(name)}"],
                args=[self.node, name, k, int(takeover)],
            )
        except (RedisError, OSError):
            raise RequestError(ErrorCode.SERVER_BUSY) from None
        status, prev, order, written = int(result[0]), _text(result[1]), int(result[2]), _text(result[3])
        if status == 0:
            return Claim.REFUSED
        old = self._dir.get(k)
        self._dir.add(k, Entry(written, self.node, order, outbox))
        if status == 2:
            if old is not None and old.outbox is not None and old.outbox is not outbox:
                old.outbox.supersede()
            self.link.publish(ALL, encode_frame("t", self.node, k=k, prev=prev))
            return Claim.TAKEN_OVER
        self.link.publish(ALL, encode_frame("j", self.node, k=k, n=written, o=order))
        return Claim.NEW

    async def release(self, name: str, outbox: Outbox) -> None:
        k = key(name)
        entry = self._dir.get(k)
        if entry is None or entry.outbox is not outbox:
            return
        self._dir.remove(k)
        # If Redis cannot answer, the claim lapses with this node's heartbeat, or is not
        # reasserted when the link is back.
        with contextlib.suppress(RedisError, OSError):
            await self._scripts["release"](keys=[f"chat:name:{k}", f"chat:look:{skeleton(name)}"],
                                           args=[self.node, k])
        self.link.publish(ALL, encode_frame("x", self.node, k=k))

    async def online(self) -> list[str]:
        return self._dir.in_order()

    async def lookup(self, name: str) -> str | None:
        entry = self._dir.get(key(name))
        return entry.name if entry else None

    async def lookup_similar(self, name: str) -> str | None:
        entry = self._dir.look_alike(key(name), name)
        return entry.name if entry else None

    async def send(
        self, names: Iterable[str], payload: bytes, *, bulk: bool = False, numbered: bytes | None = None,
        mid: int | None = None,
    ) -> None:
        remote: dict[str, list[str]] = {}
        for name in names:
            k = key(name)
            entry = self._dir.get(k)
            if entry is None:
                continue
            if entry.outbox is not None:
                entry.outbox.deliver(_variant(entry.outbox, payload, numbered), bulk=bulk)
            else:
                remote.setdefault(entry.node, []).append(k)
        self._note(mid)
        for node, keys in remote.items():
            frame = encode_frame("d", self.node, u=keys, b=bulk, m=mid, payload=payload, numbered=numbered)
            self.link.publish(node_channel(node), frame)

    async def send_all(
        self, payload: bytes, *, exclude: str | None = None, numbered: bytes | None = None,
        mid: int | None = None,
    ) -> None:
        skip = key(exclude) if exclude is not None else None
        self._deliver_all(payload, numbered, skip)
        self._note(mid)
        frame = encode_frame("a", self.node, ex=skip, m=mid, payload=payload, numbered=numbered)
        self.link.publish(ALL, frame)

    async def group_changed(self, change: GroupChange) -> None:
        if self._groups is not None:
            await self._groups.publish(change)

    def forward(self, user: str, rid: int | None, registered: bool, address: str, env: Envelope) -> bool:
        transfer = env.get("id")
        # A transfer id is 32 hex digits at most (PROTOCOL.md 7): a node's are its own
        # id (NODE_ID_HEX digits) then 16 random ones.
        if not isinstance(transfer, str) or len(transfer) != NODE_ID_HEX + 16:
            return False
        node = transfer[:NODE_ID_HEX]
        if node == self.node or node not in self._dir.remote_nodes():
            return False
        frame = encode_frame("f", self.node, u=user, r=rid, reg=registered, ip=address, k=env.type,
                             f=env.fields, payload=env.body)
        self.link.publish(node_channel(node), frame)
        return True

    def deliver_to(self, name: str, payload: bytes, *, bulk: bool = False) -> None:
        """Deliver to ``name`` wherever they are (the answers to a forwarded request)."""
        entry = self._dir.get(key(name))
        if entry is not None and entry.outbox is not None:
            entry.outbox.deliver(payload, bulk=bulk)
        elif entry is not None:
            frame = encode_frame("d", self.node, u=[key(name)], b=bulk, m=None, payload=payload)
            self.link.publish(node_channel(entry.node), frame)

    def outboxes(self) -> list[Outbox]:
        return self._dir.outboxes()

    # --- delivery -------------------------------------------------------------------

    def _deliver_all(self, payload: bytes, numbered: bytes | None, skip: str | None) -> None:
        for k, outbox in self._dir.local_outboxes():
            if k != skip:
                outbox.deliver(_variant(outbox, payload, numbered), droppable=True)

    def _note(self, mid: int | None) -> None:
        """Stored message ``mid`` was delivered here (or is being: sent from here)."""
        if mid is None:
            return
        self._seen = max(self._seen, mid)
        self.storage.messages.observe(mid)
        if mid not in self._delivered:
            self._delivered.add(mid)
            self._delivered_order.append(mid)
            if len(self._delivered_order) > DELIVERED_MEMORY:
                self._delivered.discard(self._delivered_order.popleft())

    # --- frames from the other nodes --------------------------------------------------

    async def _received(self, data: bytes) -> None:
        """A frame from Redis: one not from this node is applied (a bad one is logged)."""
        try:
            frame = decode_frame(data)
        except (ValueError, KeyError):
            log.warning("cluster: ignored a frame that is not ours")
            return
        if frame.node == self.node:
            return
        try:
            await self._apply(frame)
        except Exception:
            log.exception("cluster: could not apply a %r frame", frame.kind)

    async def _apply(self, frame: Frame) -> None:
        h, presence = frame.header, self.presence
        if frame.kind == "a":
            mid = h.get("m")
            if mid is None or mid not in self._delivered:
                self._deliver_all(frame.payload, frame.numbered, h.get("ex"))
            self._note(mid)
        elif frame.kind == "d":
            mid = h.get("m")
            if mid is None or mid not in self._delivered:
                for k in h["u"]:
                    outbox = self._dir.local(k)
                    if outbox is not None:
                        outbox.deliver(_variant(outbox, frame.payload, frame.numbered), bulk=h["b"])
            self._note(mid)
        elif frame.kind == "j":
            known = self._dir.get(h["k"])
            if known is None:
                self._dir.add(h["k"], Entry(h["n"], frame.node, int(h["o"])))
                presence.joined(h["n"])
            elif known.outbox is None:  # already learnt from a roster
                known.node, known.order = frame.node, int(h["o"])
        elif frame.kind == "x":
            entry = self._dir.get(h["k"])
            if entry is not None and entry.node == frame.node:
                self._dir.remove(h["k"])
                presence.exited(entry.name)
                await self._gone(entry.name)
        elif frame.kind == "t":
            entry = self._dir.get(h["k"])
            if entry is not None:
                if entry.outbox is not None:
                    entry.outbox.supersede()  # its user resumed on another node
                entry.node, entry.outbox = frame.node, None
        elif frame.kind == "r":
            for name in self._roster(frame.node, h["u"]):
                await self._gone(name)
        elif frame.kind == "g" and self._groups is not None:
            await self._groups.received(frame)
        elif frame.kind == "f" and self.forwarded is not None:
            await self.forwarded(frame)

    async def _gone(self, name: str) -> None:
        if self.user_gone is not None:
            await self.user_gone(name)

    def _roster(self, node: str, users: list[list[Any]]) -> list[str]:
        """``node``'s whole roster: its users not known here joined, the others left."""
        presence = self.presence
        listed = {str(k): (str(n), int(o)) for k, n, o in users}
        gone = []
        for k, entry in self._dir.of_node(node):
            if k not in listed:
                self._dir.remove(k)
                presence.exited(entry.name)
                gone.append(entry.name)
        for k, (name, order) in listed.items():
            known = self._dir.get(k)
            if known is None:
                self._dir.add(k, Entry(name, node, order))
                presence.joined(name)
            elif known.outbox is None:
                known.node = node
        return gone

    # --- the link going down and coming back ------------------------------------------

    def _link_down(self) -> None:
        self._lost_at = self._seen
        self._tell_users(NoticeCode.CLUSTER_LOST)

    async def _link_up(self) -> None:
        """Reassert this node's names, learn everyone's, send this node's roster, then
        deliver what was stored while the link was down."""
        redis = self.link.redis
        mine = self._dir.mine()
        for k, entry in mine:
            ok = await self._scripts["reassert"](
                keys=[f"chat:name:{k}", f"chat:look:{skeleton(entry.name)}"],
                args=[self.node, entry.name, k, entry.order],
            )
            if not int(ok):
                log.warning("cluster: a name of this node was claimed elsewhere meanwhile")
        await self._load_directory(redis)
        users = [[k, e.name, e.order] for k, e in mine]
        self.link.publish(ALL, encode_frame("r", self.node, u=users))
        if self._lost_at is not None:
            lost_at, self._lost_at = self._lost_at, None
            await self._fill_gap(lost_at)
            self._tell_users(NoticeCode.CLUSTER_BACK)

    async def _load_directory(self, redis: Any) -> None:
        nodes = [_text(n) for n in await redis.smembers("chat:nodes")]
        await redis.sadd("chat:nodes", self.node)
        for node in nodes:
            if node == self.node:
                continue
            if not await redis.exists(NODE_KEY + node):
                continue
            keys = [_text(k) for k in await redis.smembers(f"chat:names:{node}")]
            rows = []
            for k in keys:
                held = await redis.hgetall(f"chat:name:{k}")
                if _text(held.get(b"node", b"")) == node:
                    rows.append([k, _text(held[b"name"]), int(held[b"order"])])
            self._roster(node, rows)

    async def _fill_gap(self, lost_at: int) -> None:
        """Deliver to this node's users the stored messages they may have missed."""
        messages, after, count = self.storage.messages, max(0, lost_at - GAP_MARGIN), 0
        while True:
            page = await messages.after(after, FILL_PAGE)
            for message in page:
                if message.id not in self._delivered:
                    readers = self._dir.readers(message, self.groups)
                    for outbox in readers:
                        outbox.deliver(replayed_event(message))
                    count += len(readers)
                self._note(message.id)
            if len(page) < FILL_PAGE:
                break
            after = page[-1].id
        log.info("cluster: delivered %d stored events missed while Redis was away", count)

    def _tell_users(self, code: NoticeCode) -> None:
        notice = encode_event("notice", code=code)
        for outbox in self.outboxes():
            outbox.deliver(notice)

    # --- dead nodes -------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        """Every heartbeat: the users of a node whose heartbeat lapsed have left."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            if not self.link.up:
                continue
            for node in self._dir.remote_nodes():
                try:
                    if await self.link.redis.exists(NODE_KEY + node):
                        continue
                    await self._scripts["reap"](keys=[f"chat:names:{node}"], args=[node])
                except (RedisError, OSError):
                    break
                log.info("cluster: node %s is gone; its users left", node)
                for name in self._roster(node, []):
                    await self._gone(name)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
