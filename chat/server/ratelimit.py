"""Token buckets: one that warns before it cuts off (README "Limits"), and one per key.

A sender may spend ``burst`` messages at once and ``rate`` per second sustained. Past
that the bucket goes into debt: the first request in debt earns a warning, and a sender
who runs up a further ``burst`` of debt is disconnected. Nothing is dropped before that.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum, auto


class Verdict(Enum):
    OK = auto()
    WARN = auto()
    CUT_OFF = auto()


class TokenBucket:
    __slots__ = ("_burst", "_last", "_rate", "_tokens", "_warned")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now
        self._warned = False

    def take(self, now: float) -> Verdict:
        """Spend one token at time ``now`` (seconds, monotonic)."""
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            self._warned = False
            return Verdict.OK
        if self._tokens < -self._burst:
            return Verdict.CUT_OFF
        if self._warned:
            return Verdict.OK
        self._warned = True
        return Verdict.WARN


class KeyedBuckets:
    """A token bucket per key (``rate`` per second, ``burst`` at most), with at most
    ``max_keys`` keys kept (idle ones are full again anyway, so the oldest are dropped)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``key``'s bucket; False (nothing spent) if too few."""
        if self.rate <= 0:
            return True
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= cost
        self._buckets[key] = (tokens - cost if allowed else tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return allowed
