"""What a peer may make the server spend before it has proven anything (review findings
H5, M1, M2, M3): counted from the moment a TCP connection is accepted, before the HTTP
upgrade, the handshake's RSA decryption or a login.

* :class:`Admission` counts connections per address and in total, and connections of an
  address still in their HTTP upgrade; over a bound the socket is closed at once.
* Each connection's :class:`wire.Wire` applies it at accept time, meters control frames
  (pings), which websockets answers by itself, unseen by the chat code, and keeps the
  connection alive with one timer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass

log = logging.getLogger("chat.server")

#: Close code for a peer that broke a limit (RFC 6455: policy violation).


def peer_ip(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else "?"


@dataclass
class AdmissionLimits:
    #: Connections in all and from one address (0: unlimited).
    max_total: int = 20000
    max_per_ip: int = 128
    #: Connections from one address that have not finished the HTTP upgrade yet.
    max_upgrading_per_ip: int = 64
    #: Refused connections from one address, and in all, that are still told why (an
    #: upgrade, then close 1013 with the reason); past these they are simply closed.
    max_told_per_ip: int = 4
    max_told: int = 64
    #: Control frames (pings) a connection may send: a burst, then this many per second.
    pings_per_second: float = 2.0
    ping_burst: int = 20


class Admission:
    """Connections counted from accept until the socket closes."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.total = 0
        self.per_ip: Counter[str] = Counter()
        self.upgrading: Counter[str] = Counter()
        self.refused = 0
        self.told: Counter[str] = Counter()
        self._last_refusal_log = 0.0

    def tell(self, ip: str) -> bool:
        """Whether a refused connection from ``ip`` may stay open to be told why (bounded,
        so refusals cost little); ``untell`` when it closes."""
        if self.told[ip] >= self.limits.max_told_per_ip or self.told.total() >= self.limits.max_told:
            return False
        self.told[ip] += 1
        return True

    def untell(self, ip: str) -> None:
        _decrement(self.told, ip)

    def admit(self, ip: str) -> str | None:
        """Count a new connection from ``ip``; the reason it is refused (not counted)."""
        limits = self.limits
        if 0 < limits.max_total <= self.total:
            return self._refuse(ip, "server is full")
        if 0 < limits.max_per_ip <= self.per_ip[ip]:
            return self._refuse(ip, "too many connections from your address")
        if 0 < limits.max_upgrading_per_ip <= self.upgrading[ip]:
            return self._refuse(ip, "too many connections opening from your address")
        self.total += 1
        self.per_ip[ip] += 1
        self.upgrading[ip] += 1
        return None

    def upgraded(self, ip: str) -> None:
        """The connection finished its HTTP upgrade (the chat handler runs)."""
        _decrement(self.upgrading, ip)

    def release(self, ip: str, *, upgrading: bool) -> None:
        self.total -= 1
        _decrement(self.per_ip, ip)
        if upgrading:
            _decrement(self.upgrading, ip)

    def _refuse(self, ip: str, reason: str) -> str:
        """Refusals are logged at most once every 10 s, with a count: a flood must not
        turn into a flood of log lines."""
        self.refused += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= 10.0:
            log.warning("refusing connections: %s (last from %s; %d so far)", reason, ip, self.refused)
            self._last_refusal_log = now
        return reason


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
