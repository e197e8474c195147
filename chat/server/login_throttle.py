"""The throttle on password guesses (PROTOCOL.md section 6.5).

An attempt is *reserved* before its password is checked: it counts as a failure at once
and is refunded if the password was right. So a crowd of simultaneous guesses cannot all
pass the check before the first failure is recorded. Limits, over a sliding window:

- per (name, address) pair: a small budget, then ``too_many_attempts``;
- per address prefix (IPv4 /24, IPv6 /64) across all names: a larger budget, likewise;
- per name from all addresses: only a growing delay before the check, never a refusal,
  so guessing from elsewhere cannot lock the owner out;
- server-wide: failed logins beyond a budget are logged as a warning (once a minute).

Counters live in bounded tables: idle entries are forgotten and the table has a size cap.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

WINDOW = 600.0
#: Failures per name that are free of delay; each further one doubles it.
FREE_NAME_FAILURES = 2
BASE_NAME_DELAY = 0.5
ALERT_INTERVAL = 60.0


@functools.lru_cache(maxsize=4096)  # every connection asks; a class comes from few networks
def address_prefix(address: str) -> str:
    """The network an address belongs to for limits: /24 for IPv4, /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


class SlidingCounts:
    """Event times per key within ``window`` seconds, at most ``max_events`` kept per key
    and ``max_keys`` keys (the least recently used go first)."""

    def __init__(self, window: float, max_events: int, max_keys: int = 100_000) -> None:
        self.window = window
        self._max_events = max(1, max_events)
        self._max_keys = max_keys
        self._events: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._events)

    def count(self, key: Hashable, now: float) -> int:
        events = self._events.get(key)
        if events is None:
            return 0
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
            return 0
        return len(events)

    def add(self, key: Hashable, now: float) -> None:
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque(maxlen=self._max_events)
        events.append(now)
        self._events.move_to_end(key)
        self._forget_idle(now)

    def remove(self, key: Hashable, when: float) -> None:
        events = self._events.get(key)
        if events is not None and when in events:
            events.remove(when)
            if not events:
                del self._events[key]

    def _forget_idle(self, now: float) -> None:
        # Least recently added first: once the first is live, all later ones are too.
        for _ in range(8):
            if not self._events:
                break
            oldest_key, events = next(iter(self._events.items()))
            if events and events[-1] > now - self.window:
                break
            del self._events[oldest_key]
        while len(self._events) > self._max_keys:
            self._events.popitem(last=False)


@dataclass
class Reservation:
    """One attempt counted as a failure until ``refund``."""

    keys: list[tuple[SlidingCounts, Hashable]]
    at: float
    #: Seconds to wait before checking the password (the per-name delay).
    delay: float
    refunded: bool = field(default=False)


class LoginThrottle:
    def __init__(
        self,
        per_pair: int = 5,
        per_prefix: int = 20,
        alert_budget: int = 1000,
        delay_cap: float = 30.0,
        window: float = WINDOW,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_pair, self.per_prefix, self.delay_cap = per_pair, per_prefix, delay_cap
        self._clock = clock
        self.pairs = SlidingCounts(window, per_pair, max_keys)
        self.prefixes = SlidingCounts(window, per_prefix, max_keys)
        self.names = SlidingCounts(window, 32, max_keys)
        self._all = SlidingCounts(window, alert_budget + 1, 1)
        self._alert_budget = alert_budget
        self._last_alert = float("-inf")

    def name_delay(self, failures: int) -> float:
        """Exponential in the name's recent failures beyond the free ones, capped."""
        if failures < FREE_NAME_FAILURES:
            return 0.0
        return min(self.delay_cap, BASE_NAME_DELAY * 2.0 ** (failures - FREE_NAME_FAILURES))

    def reserve(self, name_key: str, address: str) -> Reservation | None:
        """Count an attempt now; None if the pair or the prefix has no budget left (a
        budget of 0 means no limit of that kind, e.g. behind a proxy that applies it)."""
        now = self._clock()
        pair, prefix = (name_key, address), address_prefix(address)
        if (
            self.per_pair and self.pairs.count(pair, now) >= self.per_pair
        ) or (self.per_prefix and self.prefixes.count(prefix, now) >= self.per_prefix):
            return None
        delay = self.name_delay(self.names.count(name_key, now))
        keys: list[tuple[SlidingCounts, Hashable]] = [
            (self.pairs, pair), (self.prefixes, prefix), (self.names, name_key), (self._all, ""),
        ]  # fmt: skip
        for table, key in keys:
            table.add(key, now)
        self._alert(now)
        return Reservation(keys, now, delay)

    def refund(self, reservation: Reservation) -> None:
        """The password was right (or was never checked): the attempt does not count."""
        if reservation.refunded:
            return
        reservation.refunded = True
        for table, key in reservation.keys:
            table.remove(key, reservation.at)

    def _alert(self, now: float) -> None:
        recent = self._all.count("", now)
        if recent > self._alert_budget and now - self._last_alert >= ALERT_INTERVAL:
            self._last_alert = now
            log.warning(
                "more than %d password attempts failed or are in progress in the last %d s: "
                "someone may be guessing passwords", self._alert_budget, int(self._all.window),
            )
