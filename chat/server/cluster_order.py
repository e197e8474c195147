"""Each conversation's messages delivered to this node's users in sequence order, across
nodes (redis_hub.py).

Two nodes store messages of one conversation at once; their events reach a third node
through different publishers, in either order. A client shows each conversation's
messages by sequence number and resumes from the last it showed (PROTOCOL.md 6.8), so
an event must not overtake an earlier one. So a message that arrives ahead of its turn
waits; if the missing ones do not arrive within GAP_WAIT, they are read from the
database, which is the truth (pub/sub may lose them), and delivered first. A sequence
number nobody will ever deliver (a message withdrawn) is skipped the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from chat.server.conversations import Message

log = logging.getLogger("chat.server")

#: Seconds a message waits for those before it before they are read from the database.
GAP_WAIT = 0.05
#: Messages one conversation may hold waiting (more: the gap is filled at once).
MAX_HELD = 1000
#: How far back, and how recent, the messages are that the first message of a
#: conversation seen here looks for in the database (sent by other nodes just before).
LOOK_BACK = 256
RECENT = 5.0
#: Seconds after which an idle conversation's position is forgotten (memory stays
#: bounded; the next message starts it again).
IDLE = 60.0

Deliver = Callable[[], None]
#: (conversation, first seq, seq after the last) -> the stored messages in that range.
Fetch = Callable[[str, int, int], Awaitable[list[Message]]]


class ConversationOrder:
    def __init__(self, fetch: Fetch, fill: Callable[[Message], None], wait: float = GAP_WAIT) -> None:
        self._fetch, self._fill, self._wait = fetch, fill, wait
        #: conversation -> the next sequence number to deliver, and when it last moved.
        self._next: dict[str, int] = {}
        self._moved: dict[str, float] = {}
        self._held: dict[str, dict[int, list[Deliver]]] = {}
        #: Conversations whose first message here waits for a look at the database.
        self._first: set[str] = set()
        self._filling: dict[str, asyncio.TimerHandle | asyncio.Task[None]] = {}

    def submit(self, conversation: str, seq: int, deliver: Deliver) -> None:
        """Deliver now if it is ``conversation``'s turn, else once those before it have
        been. The first message of a conversation seen here waits for a look at the
        database: one stored just before it may still be on its way."""
        expected = self._next.get(conversation)
        idle = expected is not None and time.monotonic() - self._moved[conversation] > IDLE
        if expected is None or (idle and conversation not in self._held):
            self._next[conversation] = max(1, seq - LOOK_BACK)
            self._moved[conversation] = time.monotonic()
            self._first.add(conversation)
            self._hold(conversation, seq, deliver)
            self._start_fill(conversation)
        elif seq == expected and conversation not in self._held:
            deliver()
            self._advance(conversation, seq + 1)
        elif seq < expected:
            deliver()  # a turn already taken (the reply to its sender), or a repeat
        else:
            self._hold(conversation, seq, deliver)
            held = self._held[conversation]
            if expected in held:
                self._advance(conversation, expected)
            elif len(held) > MAX_HELD:
                self._start_fill(conversation)
            elif conversation not in self._filling:
                self._filling[conversation] = asyncio.get_running_loop().call_later(
                    self._wait, self._start_fill, conversation
                )

    def _hold(self, conversation: str, seq: int, deliver: Deliver) -> None:
        self._held.setdefault(conversation, {}).setdefault(seq, []).append(deliver)

    def _advance(self, conversation: str, upto: int) -> None:
        self._next[conversation] = upto
        self._moved[conversation] = time.monotonic()
        held = self._held.get(conversation)
        while held and self._next[conversation] in held:
            seq = self._next[conversation]
            for deliver in held.pop(seq):
                deliver()
            self._next[conversation] = seq + 1
        if not held:
            self._held.pop(conversation, None)
            pending = self._filling.pop(conversation, None)
            if isinstance(pending, asyncio.TimerHandle):
                pending.cancel()
        if len(self._next) > 4 * MAX_HELD:
            self._forget_idle()

    def _start_fill(self, conversation: str) -> None:
        pending = self._filling.get(conversation)
        if isinstance(pending, asyncio.Task):
            return
        if pending is not None:
            pending.cancel()
        self._filling[conversation] = asyncio.get_running_loop().create_task(self._fill_gap(conversation))

    async def _fill_gap(self, conversation: str) -> None:
        """Read what is missing before the first message waiting and deliver it, merged in
        sequence order with what arrived meanwhile; then go on from there.

        Every number below the first one waiting is stored (numbers are taken in commit
        order), so the read covers the whole gap. It covers that gap only: what arrives
        above it while the read is on its way waits for its own turn, never overtakes."""
        task = asyncio.current_task()
        try:
            held = self._held.get(conversation)
            if not held:
                return
            end = min(held)
            start = self._next[conversation]
            try:
                missing = await self._fetch(conversation, start, end)
            except Exception:
                log.exception("cluster: could not read a gap of a conversation; skipping it")
                missing = []
            if conversation in self._first:  # only what may still have been on its way
                missing = [m for m in missing if m.sent_at > time.time() - RECENT]
            stored = {m.seq: m for m in missing}
            held = self._held.get(conversation, {})
            position = self._next.get(conversation, end)
            for seq in range(position, end):  # those delivered meanwhile are behind ``position``
                for deliver in held.pop(seq, ()):
                    deliver()
                if seq in stored:
                    self._fill(stored[seq])
            self._advance(conversation, max(position, end))
        finally:
            if self._filling.get(conversation) is task:
                del self._filling[conversation]
            self._first.discard(conversation)
        if self._held.get(conversation) and conversation not in self._filling:
            self._filling[conversation] = asyncio.get_running_loop().call_later(
                self._wait, self._start_fill, conversation
            )

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for conversation, moved in list(self._moved.items()):
            if now - moved > IDLE and conversation not in self._held:
                del self._moved[conversation], self._next[conversation]

    def close(self) -> None:
        for pending in self._filling.values():
            pending.cancel()
        self._filling.clear()


#: Stored messages remembered as delivered here, so that nothing is delivered twice.
DELIVERED_MEMORY = 50_000


class DeliveryLedger:
    """Stored messages delivered here once each, in their conversations' order."""

    def __init__(self, fetch: Fetch, fill: Callable[[Message], None]) -> None:
        self._order = ConversationOrder(fetch, self._fill_once)
        self._fill = fill
        #: The newest stored message id seen here.
        self.seen = 0
        #: Told of every id seen (the store's ``observe``).
        self.observe: Callable[[int], None] = lambda _: None
        self._delivered: set[int] = set()
        self._delivered_order: deque[int] = deque()

    def delivered(self, mid: int) -> bool:
        return mid in self._delivered

    def submit(self, conversation: str, seq: int, mid: int, deliver: Deliver) -> None:
        """``deliver`` message ``mid`` in its turn, unless it was delivered already."""

        def once() -> None:
            if mid not in self._delivered:
                deliver()
                self._note(mid)

        self.in_turn(conversation, seq, mid, once)

    def in_turn(self, conversation: str, seq: int, mid: int, deliver: Deliver) -> None:
        """``deliver`` (the reply to the message's sender) in the message's turn."""
        if mid > self.seen:
            self.seen = mid
            self.observe(mid)
        self._order.submit(conversation, seq, deliver)

    def _fill_once(self, message: Message) -> None:
        if message.id not in self._delivered:
            self._fill(message)
            self._note(message.id)

    def _note(self, mid: int) -> None:
        if mid in self._delivered:
            return
        self._delivered.add(mid)
        self._delivered_order.append(mid)
        if len(self._delivered_order) > DELIVERED_MEMORY:
            self._delivered.discard(self._delivered_order.popleft())

    def close(self) -> None:
        self._order.close()
