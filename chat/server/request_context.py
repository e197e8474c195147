"""What the file relay and the accounts need of a request's context, as a protocol, so
that they depend on this small interface and not on the services that hold them (no
import circle: context.py -> services.py -> transfers.py / accounts.py -> here)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from chat.server.groups import GroupRegistry
from chat.server.hub import Hub, Outbox


class RequestContext(Protocol):
    """One request: who asks, from where, and how to answer (context.Context)."""

    user: str
    rid: int | None
    outbox: Outbox
    address: str
    registered: bool

    @property
    def hub(self) -> Hub: ...

    @property
    def groups(self) -> GroupRegistry: ...

    def reply(self, kind: str, **fields: Any) -> None: ...

    async def notify(self, names: Iterable[str], kind: str, **fields: Any) -> None: ...

    async def online_user(self, name: str) -> str: ...
