"""Resume tokens (PROTOCOL.md section 6.8): random (``secrets``), usable once (each login
gets a new one), bound to one name, valid while their session is online and
TOKEN_LIFETIME after it ended; at most MAX_TOKENS are kept (the oldest go first)."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds a token stays valid after its session ended, and tokens kept at most.
TOKEN_LIFETIME = 900.0
MAX_TOKENS = 100_000


@dataclass
class Ticket:
    name_key: str
    reads_from: int
    #: None while its session is online.
    expires: float | None = None


class ResumeTokens:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._tickets: OrderedDict[str, Ticket] = OrderedDict()
        self._clock = clock

    async def issue(self, name_key: str, reads_from: int) -> str:
        token = secrets.token_urlsafe(32)
        self._tickets[token] = Ticket(name_key, reads_from)
        while len(self._tickets) > MAX_TOKENS:
            self._tickets.popitem(last=False)
        return token

    async def valid(self, token: str | None, name_key: str) -> Ticket | None:
        """The ticket of ``token`` if it is this name's and still valid."""
        if token is None:
            return None
        ticket = self._tickets.get(token)
        if ticket is None or ticket.name_key != name_key:
            return None
        if ticket.expires is not None and ticket.expires < self._clock():
            del self._tickets[token]
            return None
        return ticket

    async def use(self, token: str) -> None:
        """The token did its work (a login resumed with it): it is no longer valid."""
        self._tickets.pop(token, None)

    async def ended(self, token: str | None) -> None:
        """The session of ``token`` ended: the token is valid for TOKEN_LIFETIME more."""
        ticket = self._tickets.get(token) if token is not None else None
        if ticket is not None:
            ticket.expires = self._clock() + TOKEN_LIFETIME
