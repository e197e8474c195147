"""Keeping a WebSocket alive, and metering the pings a peer sends: a mixin of
:class:`wire.Wire` (``_Wire`` names what it uses).

websockets' asyncio server runs a keepalive task per connection; one timer does the same:
a ping every ``ping_interval``, and a pong later than ``ping_timeout`` ends the connection.
Pings from the peer, which websockets answers by itself, are limited to a burst and a
rate per second (review M2)."""

from __future__ import annotations

import asyncio
import os
from typing import Protocol

from websockets.frames import CloseCode as WsCloseCode
from websockets.protocol import State
from websockets.server import ServerProtocol

from chat.server.admission import Admission
from chat.server.config import ServerConfig


class _Host(Protocol):
    config: ServerConfig


class _Wire(Protocol):
    protocol: ServerProtocol

    @property
    def _server(self) -> _Host: ...
    _admission: Admission
    _keepalive: asyncio.TimerHandle | None
    _unanswered: bytes | None
    _ping_sent: float
    _pings: float
    _ping_clock: float

    def _flush(self) -> None: ...

    def abort(self) -> None: ...

    def _keepalive_due(self) -> None: ...


class Keepalive:
    __slots__ = ()
    _keepalive: asyncio.TimerHandle | None
    _unanswered: bytes | None

    def _keepalive_due(self: _Wire) -> None:
        """Ping every ``ping_interval``; a pong later than ``ping_timeout`` ends the
        connection (as websockets' keepalive does, with a timer instead of a task)."""
        self._keepalive = None
        if self.protocol.state is not State.OPEN:
            return
        config = self._server.config
        if self._unanswered is not None:
            # Closed at once: a peer that answers no ping would not finish a closing
            # handshake either.
            self.protocol.fail(WsCloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._flush()
            self.abort()
            return
        loop = asyncio.get_running_loop()
        self._ping_sent = loop.time()
        ping = os.urandom(4)
        self.protocol.send_ping(ping)
        self._flush()
        if config.ping_timeout:
            self._unanswered = ping
            self._keepalive = loop.call_later(config.ping_timeout, self._keepalive_due)
        else:
            self._keepalive = loop.call_later(config.ping_interval, self._keepalive_due)

    def _pong(self: _Wire, data: bytes) -> None:
        """The keepalive ping was answered: the next goes ``ping_interval`` after it."""
        if self._unanswered is None or data != self._unanswered:
            return
        self._unanswered = None
        if self._keepalive is not None:
            self._keepalive.cancel()
            when = self._ping_sent + self._server.config.ping_interval
            self._keepalive = asyncio.get_running_loop().call_at(when, self._keepalive_due)

    def _ping_allowed(self: _Wire) -> bool:
        limits = self._admission.limits
        now = asyncio.get_running_loop().time()
        self._pings = max(0.0, self._pings - (now - self._ping_clock) * limits.pings_per_second) + 1
        self._ping_clock = now
        return self._pings <= limits.ping_burst
