"""What a peer may make the server spend before it has proven anything (review findings
H5, M1, M2, M3): counted from the moment a TCP connection is accepted, before the HTTP
upgrade, the handshake's RSA decryption or a login.

* :class:`Admission` counts connections per address and in total, and connections of an
  address still in their HTTP upgrade; over a bound the socket is closed at once.
* :func:`guarded_connection_class` makes the websockets ``ServerConnection`` subclass that
  applies :class:`Admission` at accept time and meters control frames (pings), which
  websockets answers by itself, unseen by the chat code. It also keeps the connection
  alive with one timer instead of websockets' keepalive task: 10,000 idle connections
  then hold no task, coroutine and sleeping future each (BENCHMARKS.md, scenario 4).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import cast

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode as WsCloseCode
from websockets.frames import Opcode
from websockets.protocol import State

from chat.protocol.codes import CloseCode

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


class GuardedConnection(ServerConnection):
    """A ``ServerConnection`` counted by :class:`Admission` from accept to close, and
    cut off when it sends pings faster than allowed."""

    admission: Admission

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peer_ip = peer_ip(transport)
        self.upgrading = True
        self._pings = 0.0
        self._ping_clock = self.loop.time()
        #: Why this connection is refused, if it is (the chat handler then closes it
        #: with 1013 and this reason).
        self._keepalive: asyncio.TimerHandle | None = None
        #: The payload of the keepalive ping not answered yet, and when it was sent.
        self._unanswered: bytes | None = None
        self._ping_sent = 0.0
        self.refusal = self.admission.admit(self.peer_ip)
        self.counted = self.refusal is None
        if self.refusal is not None and not self.admission.tell(self.peer_ip):
            self.refusal = None  # not told: just closed
            # uvloop's transports have abort() but are not asyncio.Transport subclasses.
            cast(asyncio.Transport, transport).abort()

    def upgraded(self) -> None:
        if self.counted and self.upgrading:
            self.upgrading = False
            self.admission.upgraded(self.peer_ip)

    def start_keepalive(self) -> None:
        """Ping every ``ping_interval``; fail the connection when a pong takes longer than
        ``ping_timeout`` (as websockets' keepalive task does, with a timer)."""
        if self.ping_interval is not None:
            self._keepalive = self.loop.call_later(self.ping_interval, self._keepalive_due)

    def _keepalive_due(self) -> None:
        self._keepalive = None
        if self.protocol.state is not State.OPEN:
            return
        if self._unanswered is not None:
            # Closed at once: a peer that answers no ping would not finish a closing
            # handshake either.
            self.protocol.fail(WsCloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self.send_data()
            self.transport.abort()
            return
        self._unanswered = os.urandom(4)
        self._ping_sent = self.loop.time()
        self.protocol.send_ping(self._unanswered)
        self.send_data()
        assert self.ping_interval is not None
        wait = self.ping_timeout if self.ping_timeout is not None else self.ping_interval
        if self.ping_timeout is None:
            self._unanswered = None  # no timeout: only ping
        self._keepalive = self.loop.call_later(wait, self._keepalive_due)

    def _pong(self, data: bytes) -> None:
        """The keepalive ping was answered: the next one goes ``ping_interval`` after it."""
        if self._unanswered is None or data != self._unanswered:
            return
        self._unanswered = None
        if self._keepalive is not None and self.ping_interval is not None:
            self._keepalive.cancel()
            self._keepalive = self.loop.call_at(self._ping_sent + self.ping_interval, self._keepalive_due)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self.refusal is not None:
            self.refusal = None
            self.admission.untell(self.peer_ip)
        if self.counted:
            self.counted = False
            self.admission.release(self.peer_ip, upgrading=self.upgrading)
        super().connection_lost(exc)

    def process_event(self, event: object) -> None:
        opcode = getattr(event, "opcode", None)
        if opcode is Opcode.PING and not self._ping_allowed():
            log.info("too many pings: closing peer=%s", self.peer_ip)
            self.protocol.fail(CloseCode.POLICY_VIOLATION, "too many pings")
            self.send_data()
            return
        if opcode is Opcode.PONG:
            self._pong(bytes(getattr(event, "data", b"")))
        super().process_event(event)  # type: ignore[arg-type]

    def _ping_allowed(self) -> bool:
        limits = self.admission.limits
        now = self.loop.time()
        self._pings = max(0.0, self._pings - (now - self._ping_clock) * limits.pings_per_second) + 1
        self._ping_clock = now
        return self._pings <= limits.ping_burst


def guarded_connection_class(admission: Admission) -> type[GuardedConnection]:
    """A ``GuardedConnection`` class bound to ``admission`` (websockets creates the
    connection objects itself, from the class it is given)."""
    return type("ChatServerConnection", (GuardedConnection,), {"admission": admission})
