"""Announcing who joined and who exited, in batches.

Announcing each login with its own event to everyone online costs one sealed record per
(login, recipient) pair: a class of N users logging in at once (a reconnect storm after a
restart) makes N(N-1)/2 records, 50 million for 10,000 users, about 17 minutes of server
CPU, during which handshakes time out and clients reconnect again. So logins and exits go
into a :class:`PresenceFeed` instead, which announces them at most once per interval: the
entries gathered since the last flush become one ``user_joined`` / ``user_exited`` event
per run of the same kind (up to ``MAX_PRESENCE_NAMES`` names each), encoded once and
sealed per recipient. A storm then costs about N records per flush, not N per login.

Ordering: a recipient must see that a user joined before anything else that user causes
to be delivered to it (a broadcast, a ``/list`` reply naming them). Each connection
therefore remembers how far into the feed it has been sent (``presence_seen``) and, before
delivering any other event, calls :meth:`PresenceFeed.catch_up` when it is behind: the
pending announcements go out first, whether or not the flush timer has fired.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from typing import Protocol

from chat.protocol.envelope import encode_event
from chat.protocol.limits import MAX_PRESENCE_NAMES

JOINED = "user_joined"
EXITED = "user_exited"

#: ``presence_seen`` of a connection that is not subscribed (not logged in).
UNSUBSCRIBED = -1
#: Shortest time between two flushes, seconds.
MIN_INTERVAL = 0.05
#: Flush interval per subscriber, seconds: a flush seals one record per subscriber, so this
#: keeps presence work a bounded share of the server's time however many are online: at
#: most 5,000 records a second, about 5 % of a core (10,000 users: one flush per 2 s).
#: At 50 us (20,000 records a second) announcements took half the CPU of 10,000 logins.
INTERVAL_PER_SUBSCRIBER = 200e-6


class Subscriber(Protocol):
    """A logged-in connection, as the feed sees it."""

    #: Sequence number up to which presence entries have been delivered to it;
    #: ``UNSUBSCRIBED`` when it is not subscribed.
    presence_seen: int

    def deliver(self, payload: bytes, *, bulk: bool = False, droppable: bool = False) -> None: ...


def encode_presence(entries: Sequence[tuple[str, str]]) -> list[bytes]:
    """The events announcing ``entries`` ((kind, name) pairs, in order): each run of
    consecutive entries of the same kind is one event listing its names, split so that no
    event names more than ``MAX_PRESENCE_NAMES``."""
    payloads: list[bytes] = []
    for kind, run in itertools.groupby(entries, key=lambda entry: entry[0]):
        names = [name for _, name in run]
        for start in range(0, len(names), MAX_PRESENCE_NAMES):
            payloads.append(encode_event(kind, names=names[start : start + MAX_PRESENCE_NAMES]))
    return payloads


class PresenceFeed:
    """The log of joins and exits not yet sent to every subscriber, and the subscribers.

    Entries have absolute sequence numbers: the first kept entry is number ``_base`` and
    ``end`` is the number after the last. Once every subscriber has been sent everything,
    the entries are dropped (``_base`` moves up to ``end``), so the log only holds what
    arrived since the last flush.
    """

    def __init__(
        self, min_interval: float = MIN_INTERVAL, per_subscriber: float = INTERVAL_PER_SUBSCRIBER
    ) -> None:
        self._min_interval = min_interval
        self._per_subscriber = per_subscriber
        self._base = 0
        self._entries: list[tuple[str, str]] = []
        #: The sequence number after the last entry. A plain attribute, not a property:
        #: every delivery to every connection compares its ``presence_seen`` with it.
        self.end = 0
        #: Subscribed connections (a dict: flushes go out in subscription order).
        self._subscribers: dict[Subscriber, None] = {}
        #: Encoded events from a starting sequence number to ``end``; most subscribers
        #: are behind by the same entries, so each batch is encoded once.
        self._payloads: dict[int, list[bytes]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._last_flush = -math.inf

    @property
    def interval(self) -> float:
        """Seconds between two flushes, given how many are subscribed."""
        return max(self._min_interval, self._per_subscriber * len(self._subscribers))

    # --- entries --------------------------------------------------------------------

    def joined(self, name: str) -> None:
        self._append(JOINED, name)

    def exited(self, name: str) -> None:
        self._append(EXITED, name)

    def _append(self, kind: str, name: str) -> None:
        self._entries.append((kind, name))
        self.end += 1
        self._payloads.clear()
        self._schedule()

    # --- subscribers ----------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> None:
        """From now on ``subscriber`` is sent every new entry (not the earlier ones: a
        user who logs in is not told who joined before, nor of its own join)."""
        subscriber.presence_seen = self.end
        self._subscribers[subscriber] = None

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """``subscriber`` gets nothing more. What it has not been sent yet goes first, so a
        user who quits has seen every announcement made before it left (a connection that
        is closing already simply drops it)."""
        self.catch_up(subscriber)
        self._subscribers.pop(subscriber, None)
        subscriber.presence_seen = UNSUBSCRIBED

    def catch_up(self, subscriber: Subscriber) -> None:
        """Deliver to ``subscriber`` every entry it has not been sent; nothing if it is not
        subscribed. Connections call this before delivering anything else."""
        start = subscriber.presence_seen
        end = self.end
        if start < 0 or start >= end:
            return
        # Entries are only dropped once every subscriber has been sent them.
        assert start >= self._base, (start, self._base)
        # Marked first: delivering calls back here, which must then find nothing to do.
        subscriber.presence_seen = end
        payloads = self._payloads.get(start)
        if payloads is None:
            payloads = self._payloads[start] = encode_presence(self._entries[start - self._base :])
        for payload in payloads:
            subscriber.deliver(payload)

    # --- flushing -------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_flush + self.interval - loop.time()
        if wait <= 0:
            # Nothing flushed lately: announce on the next loop iteration, so a lone login
            # is not delayed, and logins handled in this iteration share the event.
            self._flush_handle = loop.call_soon(self.flush)
        else:
            self._flush_handle = loop.call_later(wait, self.flush)

    def close(self) -> None:
        """Stop flushing (the server is shutting down)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def flush(self) -> None:
        """Send every subscriber what it has not been sent, then drop those entries."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._last_flush = asyncio.get_running_loop().time()
        end = self.end
        # A copy: a delivery may fail and have its connection unsubscribe meanwhile.
        for subscriber in list(self._subscribers):
            if subscriber.presence_seen != end:
                self.catch_up(subscriber)
        # Every subscriber is at ``end`` now (new ones start there): entries before it are
        # no longer needed. Sequence numbers stay absolute.
        del self._entries[: end - self._base]
        self._base = end
        self._payloads.clear()
