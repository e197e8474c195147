"""The hub of a node in a cluster (README "Running a cluster"): who is online anywhere,
and delivery to users wherever they are, through Redis.

- Names are claimed in Redis by a script that refuses a name (or a look-alike of one)
  held by a live node; a node's names are free once its heartbeat key expires
  (redis_link.NODE_TTL), so within 15 s of its death.
- Every node knows where every user is (cluster_directory.py), from the
  ``j``/``x``/``t``/``r`` frames, so routing costs no round trip; ``/list``, look-alikes
  and users whose join frame is still on its way are read from Redis. Each node announces
  the joins and exits of other nodes' users to its own users only: every user is told once.
- Events for other nodes go as one frame per node (or one broadcast frame), in order;
  stored messages reach this node's users once each, in their conversation's order
  (cluster_order.py: gaps are filled from the database, the truth).
- While the link to Redis is down nothing is published; once it is back this node
  delivers every stored message its users may have missed, then says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from chat.protocol.codes import ErrorCode, NoticeCode
from chat.protocol.envelope import Envelope, encode_event
from chat.server.cluster_directory import Directory, Entry, lookup, online, rosters
from chat.server.cluster_order import DeliveryLedger
from chat.server.cluster_wire import Frame, as_text, decode_frame, encode_frame, stored_numbers
from chat.server.conversations import Message
from chat.server.errors import RequestError
from chat.server.groups import GroupChange
from chat.server.hub import Claim, Outbox, _variant
from chat.server.names import key, skeleton
from chat.server.redis_groups import ClusterGroups
from chat.server.redis_link import ALL, NODE_KEY, SWEEP, RedisLink, node_channel
from chat.server.redis_scripts import CLAIM, LOOK_ALIKE, REAP, REASSERT, RELEASE
from chat.server.stored_events import live_events

if TYPE_CHECKING:
    from chat.server.groups import GroupRegistry
    from chat.server.presence import PresenceFeed
    from chat.server.store_api import Store

log = logging.getLogger("chat.server")

#: How far before the newest id seen the catch-up after a lost link looks (ids of
#: concurrent appends on other nodes are not published in id order).
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
        #: The newest id seen when the link went down (None while it is up).
        self._lost_at: int | None = None
        #: Set by the server: handles a request another node forwarded, and a user of
        #: another node who left (their transfers here end).
        self.forwarded: Callable[[Frame], Awaitable[None]] | None = None
        self.user_gone: Callable[[str], Awaitable[None]] | None = None
        self._ledger = DeliveryLedger(lambda *span: self.storage.messages.in_range(*span), self._fill)
        self._scripts = {name: self.link.redis.register_script(s) for name, s in
                         (("claim", CLAIM), ("release", RELEASE), ("reassert", REASSERT), ("reap", REAP),
                          ("look_alike", LOOK_ALIKE))}

    async def start(self, presence: PresenceFeed, groups: GroupRegistry, storage: Store) -> None:
        """Join the cluster: this node's presence feed, groups and database."""
        self.presence, self.groups, self.storage = presence, groups, storage
        self._groups = ClusterGroups(self.link, groups, storage)
        self._ledger.seen = storage.messages.last_id
        self._ledger.observe = storage.messages.observe
        await self.link.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        self._ledger.close()
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
        status, prev, order, written = int(result[0]), as_text(result[1]), int(result[2]), as_text(result[3])
        if status == 0:
            return Claim.REFUSED
        old = self._dir.local(k)
        self._dir.add_local(k, Entry(written, order, outbox))
        if status == 2:
            if old is not None and old is not outbox:
                old.supersede()
            self.link.publish(ALL, encode_frame("t", self.node, k=k, prev=prev))
            return Claim.TAKEN_OVER
        self.link.publish(ALL, encode_frame("j", self.node, k=k, n=written, o=order))
        return Claim.NEW

    async def release(self, name: str, outbox: Outbox) -> None:
        k = key(name)
        if self._dir.local(k) is not outbox:
            return
        self._dir.remove(k)
        # If Redis cannot answer, the claim lapses with this node's heartbeat, or is not
        # reasserted when the link is back.
        with contextlib.suppress(RedisError, OSError):
            await self._scripts["release"](keys=[f"chat:name:{k}", f"chat:look:{skeleton(name)}"],
                                           args=[self.node, k])
        self.link.publish(ALL, encode_frame("x", self.node, k=k))

    async def online(self) -> list[str]:
        return await online(self.link.redis, self._dir)

    async def lookup(self, name: str) -> str | None:
        return await lookup(self.link.redis, self._dir, key(name), self.node)

    async def lookup_similar(self, name: str) -> str | None:
        try:
            found = await self._scripts["look_alike"](keys=[f"chat:look:{skeleton(name)}"], args=[key(name)])
        except (RedisError, OSError):
            return None
        return as_text(found) or None

    async def send(
        self, names: Iterable[str], payload: bytes, *, bulk: bool = False, numbered: bytes | None = None,
        message: Message | None = None,
    ) -> None:
        local: list[Outbox] = []
        remote: dict[str, list[str]] = {}
        directory = self._dir
        for name in names:
            k = key(name)
            outbox = directory.local(k)
            if outbox is not None:
                local.append(outbox)
            elif (node := directory.route(k)) is not None:
                remote.setdefault(node, []).append(k)

        def deliver() -> None:
            for outbox in local:
                outbox.deliver(_variant(outbox, payload, numbered), bulk=bulk)

        self._in_turn(message, deliver)
        stored = stored_numbers(message)
        for node, keys in remote.items():
            frame = encode_frame("d", self.node, u=keys, b=bulk, **stored, payload=payload, numbered=numbered)
            self.link.publish(node_channel(node), frame)

    async def send_all(
        self, payload: bytes, *, exclude: str | None = None, numbered: bytes | None = None,
        message: Message | None = None,
    ) -> None:
        skip = key(exclude) if exclude is not None else None
        self._in_turn(message, lambda: self._deliver_all(payload, numbered, skip))
        numbers = stored_numbers(message)
        frame = encode_frame("a", self.node, ex=skip, **numbers, payload=payload, numbered=numbered)
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
        k = key(name)
        outbox = self._dir.local(k)
        if outbox is not None:
            outbox.deliver(payload, bulk=bulk)
        elif (node := self._dir.route(k)) is not None:
            frame = encode_frame("d", self.node, u=[k], b=bulk, payload=payload)
            self.link.publish(node_channel(node), frame)

    def outboxes(self) -> list[Outbox]:
        return self._dir.outboxes()

    def _deliver_all(self, payload: bytes, numbered: bytes | None, skip: str | None) -> None:
        for k, outbox in self._dir.local_outboxes():
            if k != skip:
                outbox.deliver(_variant(outbox, payload, numbered), droppable=True)

    def _in_turn(self, message: Message | None, deliver: Callable[[], None]) -> None:
        """Deliver now (an event of no stored message) or in its conversation's order."""
        if message is None:
            deliver()
        else:
            self._ledger.submit(message.conversation, message.seq, message.id, deliver)

    async def groups_caught_up(self) -> bool:
        return self._groups is not None and await self._groups.catch_up()

    def in_turn(self, message: Message, deliver: Callable[[], None]) -> None:
        self._ledger.in_turn(message.conversation, message.seq, message.id, deliver)

    def _fill(self, message: Message) -> None:
        """A stored message that pub/sub did not bring: to this node's readers."""
        plain, numbered = live_events(message)
        for outbox in self._dir.readers(message, self.groups):
            outbox.deliver(_variant(outbox, plain, numbered))

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
            skip = h.get("ex")
            self._in_order(h, lambda: self._deliver_all(frame.payload, frame.numbered, skip))
        elif frame.kind == "d":

            def deliver() -> None:
                for k in h["u"]:
                    outbox = self._dir.local(k)
                    if outbox is not None:
                        outbox.deliver(_variant(outbox, frame.payload, frame.numbered), bulk=h["b"])

            self._in_order(h, deliver)
        elif frame.kind == "j":
            self._joined(h["k"], h["n"], frame.node)
        elif frame.kind == "x":
            k = h["k"]
            if self._dir.node_of(k) == frame.node:
                name = self._dir.name_of(k)
                self._dir.remove(k)
                presence.exited(name)
                await self._gone(name)
        elif frame.kind == "t":
            k = h["k"]
            mine = self._dir.mine.get(k)
            if mine is not None:
                mine.outbox.supersede()  # its user resumed on another node
                self._dir.add_remote(k, mine.name, frame.node)
            elif self._dir.is_remote(k):
                self._dir.add_remote(k, self._dir.name_of(k), frame.node)
        elif frame.kind == "r":
            for name in self._roster(frame.node, h["u"]):
                await self._gone(name)
        elif frame.kind == "g" and self._groups is not None:
            await self._groups.received(frame)
        elif frame.kind == "f" and self.forwarded is not None:
            await self.forwarded(frame)

    def _in_order(self, h: dict[str, Any], deliver: Callable[[], None]) -> None:
        if h.get("m") is not None:
            self._ledger.submit(str(h["c"]), int(h["s"]), int(h["m"]), deliver)
        else:
            deliver()

    async def _gone(self, name: str) -> None:
        if self.user_gone is not None:
            await self.user_gone(name)

    def _joined(self, k: str, name: str, node: str) -> None:
        """``node`` holds ``k``: announced here if it is news (not learnt from a roster)."""
        if self._dir.is_remote(k):
            self._dir.add_remote(k, name, node)
        elif k not in self._dir.mine:
            self._dir.add_remote(k, name, node)
            self.presence.joined(name)

    def _roster(self, node: str, users: list[list[Any]]) -> list[str]:
        """``node``'s whole roster: its users not known here joined, the others left."""
        listed = {str(k): str(n) for k, n, _order in users}
        gone = []
        for k, name in self._dir.of_node(node):
            if k not in listed:
                self._dir.remove(k)
                self.presence.exited(name)
                gone.append(name)
        for k, name in listed.items():
            self._joined(k, name, node)
        return gone

    # --- the link going down and coming back ------------------------------------------

    def _link_down(self) -> None:
        self._lost_at = self._ledger.seen
        self._tell_users(NoticeCode.CLUSTER_LOST)

    async def _link_up(self) -> None:
        """Reassert this node's names, learn everyone's, send this node's roster, then
        deliver what was stored while the link was down."""
        redis = self.link.redis
        mine = list(self._dir.mine.items())
        for k, entry in mine:
            ok = await self._scripts["reassert"](
                keys=[f"chat:name:{k}", f"chat:look:{skeleton(entry.name)}"],
                args=[self.node, entry.name, k, entry.order],
            )
            if not int(ok):
                log.warning("cluster: a name of this node was claimed elsewhere meanwhile")
        for node, rows in (await rosters(redis, self.node)).items():
            self._roster(node, rows)
        users = [[k, e.name, e.order] for k, e in mine]
        self.link.publish(ALL, encode_frame("r", self.node, u=users))
        if self._lost_at is not None:
            lost_at, self._lost_at = self._lost_at, None
            await self._fill_gap(lost_at)
            self._tell_users(NoticeCode.CLUSTER_BACK)

    async def _fill_gap(self, lost_at: int) -> None:
        """Deliver to this node's users the stored messages they may have missed while
        pub/sub was down, each in its conversation's order."""
        messages, after, count = self.storage.messages, max(0, lost_at - GAP_MARGIN), 0
        while True:
            page = await messages.after(after, FILL_PAGE)
            for message in page:
                if not self._ledger.delivered(message.id):
                    count += 1
                    deliver = partial(self._fill, message)
                    self._ledger.submit(message.conversation, message.seq, message.id, deliver)
            if len(page) < FILL_PAGE:
                break
            after = page[-1].id
        log.info("cluster: %d stored messages since the link was lost were checked for delivery here", count)

    def _tell_users(self, code: NoticeCode) -> None:
        notice = encode_event("notice", code=code)
        for outbox in self.outboxes():
            outbox.deliver(notice)

    # --- dead nodes -------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        """Every SWEEP seconds: the users of a node whose heartbeat lapsed have left."""
        while True:
            await asyncio.sleep(SWEEP)
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

