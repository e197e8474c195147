"""Private messages kept for registered users who are offline (review finding H4).

What waits for one user is bounded in count and bytes, one sender may fill only a share
of it (a sender is an account, or for a guest, whose name costs nothing, its network:
IPv4 /24, IPv6 /64), the server bounds the total, and messages expire. At login they are
delivered a page at a time: each page ends with ``offline_page {upto, more}``, and rows
are deleted only when the client acknowledges them with ``offline_ack {upto}``, which
also asks for the next page. A client that drops before acknowledging gets the same
messages at its next login; nothing is lost, and a full mailbox can no longer overflow
its owner's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from chat.protocol.codes import ErrorCode, Feature
from chat.protocol.envelope import encode_event
from chat.server.errors import RequestError
from chat.server.hub import Outbox
from chat.server.login_throttle import address_prefix
from chat.server.names import key
from chat.server.schema import MailboxQuota
from chat.server.store_api import Store

log = logging.getLogger("chat.server")

#: Messages and bytes of text in one page of delivery (well under --max-backlog).
PAGE_MESSAGES = 100
PAGE_BYTES = 256 * 1024
#: How often expired messages are deleted.
EXPIRY_INTERVAL = 3600.0


@dataclass(frozen=True)
class MailboxLimits:
    max_messages: int = 1000
    max_bytes: int = 4 << 20
    #: The share of one mailbox one sender may fill (a fraction of both bounds).
    sender_share: float = 0.25
    server_bytes: int = 1 << 30
    days: float = 30.0

    def quota(self) -> MailboxQuota:
        return MailboxQuota(
            self.max_messages, self.max_bytes,
            max(1, int(self.max_messages * self.sender_share)),
            max(1, int(self.max_bytes * self.sender_share)),
            self.server_bytes,
        )  # fmt: skip


def sender_key(name: str, registered: bool, address: str) -> str:
    """Whose share of a mailbox a message counts against."""
    return f"account:{key(name)}" if registered else f"network:{address_prefix(address)}"


class Mailbox:
    def __init__(self, storage: Store, limits: MailboxLimits) -> None:
        self._storage = storage
        self.limits = limits
        self._quota = limits.quota()
        #: key(user) -> id of the last message sent in a page not yet acknowledged.
        self._unacknowledged: dict[str, int] = {}
        self._expiry: asyncio.Task[None] | None = None

    async def leave(
        self, recipient: str, sender: str, sender_key: str, text: str, *, message_id: int = 0, seq: int = 0
    ) -> None:
        refusal = await self._storage.queue_offline(
            key(recipient), sender, sender_key, text, self._quota, message_id=message_id, seq=seq
        )
        if refusal == "sender":
            raise RequestError(ErrorCode.MAILBOX_SHARE_FULL, user=recipient)
        if refusal is not None:
            raise RequestError(ErrorCode.MAILBOX_FULL, user=recipient)

    async def waiting(self, user: str) -> int:
        """How many messages wait for ``user`` (told in ``welcome``, so the client knows
        to acknowledge pages before it quits)."""
        return await self._storage.offline_count(key(user))

    async def send_page(self, user: str, outbox: Outbox, after_id: int = 0, *, paged: bool = True) -> None:
        """Deliver the next page of ``user``'s stored messages, if any. A client without
        Feature.OFFLINE_PAGES (``paged`` false) gets them as version 1 did: all of them,
        each page deleted once written, with no ``id`` and no ``offline_page``."""
        while True:
            page, more = await self._storage.offline_page(key(user), after_id, PAGE_MESSAGES, PAGE_BYTES)
            if not page:
                self._unacknowledged.pop(key(user), None)
                return
            cutoff = time.time() - self.limits.days * 86400
            for message in page:
                if message.sent_at >= cutoff:  # expired ones are skipped, and deleted with the page
                    numbered: dict[str, Any] = {"id": message.id} if paged else {}
                    if message.message_id and Feature.RESUME in outbox.features:
                        numbered.update(mid=message.message_id, seq=message.seq)
                    outbox.deliver(encode_event(
                        "private", sender=message.sender, text=message.text,
                        sent_at=int(message.sent_at), **numbered,
                    ))  # fmt: skip
            if paged:
                self._unacknowledged[key(user)] = page[-1].id
                outbox.deliver(encode_event("offline_page", upto=page[-1].id, more=more))
                return
            await self._storage.ack_offline(key(user), page[-1].id)
            after_id = page[-1].id

    async def acknowledge(self, user: str, upto: int, outbox: Outbox) -> None:
        """Delete what was delivered up to ``upto`` (no further than was sent), then send
        the next page."""
        sent = self._unacknowledged.get(key(user))
        if sent is None:
            return
        upto = min(upto, sent)
        await self._storage.ack_offline(key(user), upto)
        if upto == sent:
            await self.send_page(user, outbox, upto)

    def forget(self, user: str) -> None:
        """``user`` logged out: pages not acknowledged are sent again at the next login."""
        self._unacknowledged.pop(key(user), None)

    def start(self) -> None:
        self._expiry = asyncio.get_running_loop().create_task(self._expire_forever())

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry

    async def _expire_forever(self) -> None:
        while True:
            removed = await self._storage.expire_offline(time.time() - self.limits.days * 86400)
            if removed:
                log.info("expired offline messages: %d", removed)
            await asyncio.sleep(EXPIRY_INTERVAL)
