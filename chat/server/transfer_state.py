"""One file transfer in flight, as the relay (transfers.py) keeps it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from chat.protocol.flow import RelayWindow
from chat.server.request_context import RequestContext


@dataclass
class Transfer:
    id: str
    sender: str
    name: str
    size: int
    group: str | None
    #: key -> display name of recipients who have not answered the offer yet.
    pending: dict[str, str]
    #: key -> display name of recipients receiving the data.
    receiving: dict[str, str] = field(default_factory=dict)
    #: What was sent and what each receiving recipient acknowledged (the one set of
    #: flow-control rules, shared with the client).
    flow: RelayWindow = field(default_factory=lambda: RelayWindow.new(0, 0))
    delivered: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    #: Acknowledged bytes the sender has been told of.
    told: int = 0
    started: bool = False
    ended: bool = False
    #: Chunks relayed so far (with ``sent``, the average chunk size).
    chunks: int = 0
    #: Fires when recipients took too long to answer the offer.
    offer_timer: asyncio.TimerHandle | None = None
    #: When data last moved (a chunk, an ack, an accept): idle transfers are aborted.
    last_progress: float = 0.0
    #: The sender's context, to tell both sides when the transfer is aborted for idling.
    ctx: RequestContext | None = None

    def recipient_names(self) -> list[str]:
        return list(self.receiving.values())
