"""Requests a user of another node makes about a file transfer this node relays
(redis_hub.py forwards them here): handled as if the user were connected here, every
answer going back to them through the hub."""

from __future__ import annotations

from chat.protocol.envelope import Envelope
from chat.server.cluster_wire import Frame
from chat.server.context import Context
from chat.server.dispatch import dispatch
from chat.server.hub import SessionState
from chat.server.redis_hub import RedisHub
from chat.server.services import Services

#: What another node may forward: a recipient's or sender's steps of a transfer.
FORWARDED = frozenset(f"file_{step}" for step in ("accept", "decline", "chunk", "ack", "end", "done",
                                                    "failed", "cancel"))


class RemoteOutbox(SessionState):
    """A user of another node, as a forwarded request's context sees them."""

    closing = False

    def __init__(self, hub: RedisHub, name: str, registered: bool) -> None:
        super().__init__()
        self._hub = hub
        self.name, self.registered = name, registered

    def logged_in(self, name: str, registered: bool, features: object) -> None:
        raise AssertionError("a forwarded request is never a login")

    def supersede(self) -> None:
        pass  # their own node decides

    def deliver(self, payload: bytes, *, bulk: bool = False, droppable: bool = False) -> None:
        self._hub.deliver_to(self.name or "", payload, bulk=bulk)


class RemoteRequests:
    """Wired into the hub by the server (app.py) when it runs in a cluster."""

    def __init__(self, hub: RedisHub, services: Services) -> None:
        self._hub, self._services = hub, services
        hub.forwarded = self.handle
        hub.user_gone = self.gone

    def _context(self, user: str, rid: int | None, registered: bool, address: str) -> Context:
        outbox = RemoteOutbox(self._hub, user, registered)
        return Context(user, rid, outbox, self._services, address=address, registered=registered)

    async def handle(self, frame: Frame) -> None:
        h = frame.header
        if h.get("k") not in FORWARDED or not isinstance(h.get("f"), dict):
            return
        rid = h["r"] if isinstance(h.get("r"), int) else None
        ctx = self._context(str(h["u"]), rid, bool(h.get("reg")), str(h.get("ip", "")))
        await dispatch(ctx, Envelope(h["k"], h["f"], frame.payload))

    async def gone(self, user: str) -> None:
        """A user of another node left: transfers here to or from them end."""
        await self._services.transfers.disconnected(self._context(user, None, False, ""))
