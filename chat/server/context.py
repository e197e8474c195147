"""What a handler gets besides the request: who asks, where replies go, the shared
services, and helpers to reply and notify (handlers.py, login.py, accounts.py and
transfers.py all take it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chat.protocol.codes import ErrorCode
from chat.protocol.envelope import Envelope, encode_event
from chat.server.conversations import Message
from chat.server.errors import RequestError
from chat.server.groups import GroupChange, GroupRegistry
from chat.server.hub import Hub, Outbox
from chat.server.names import key

if TYPE_CHECKING:
    from chat.server.accounts import Accounts
    from chat.server.services import Services
    from chat.server.store_api import Store
    from chat.server.transfers import TransferRelay


def encode_reply(rid: int | None, kind: str, **fields: Any) -> bytes | None:
    """The reply to a request numbered ``rid``. A request without a ``rid`` is not
    acknowledged: its ``ok`` is not sent (PROTOCOL.md section 6), which spares a sender
    that does not wait for answers (a bot posting to everyone) one record per request."""
    if rid is None:
        return None if kind == "ok" else encode_event(kind, **fields)
    return encode_event(kind, re=rid, **fields)


@dataclass
class Context:
    user: str
    rid: int | None
    outbox: Outbox
    services: Services
    #: Set by the quit handler: the connection closes once the reply is sent.
    quitting: bool = False
    #: The peer's IP address.
    address: str = ""
    #: Whether ``user`` has an account (else a guest: nothing of theirs is kept).
    registered: bool = False

    @property
    def hub(self) -> Hub:
        return self.services.hub

    @property
    def groups(self) -> GroupRegistry:
        return self.services.groups

    @property
    def storage(self) -> Store:
        return self.services.storage

    @property
    def accounts(self) -> Accounts:
        return self.services.accounts

    @property
    def transfers(self) -> TransferRelay:
        return self.services.transfers

    async def commit(self, change: GroupChange) -> None:
        """Store a planned group change, then apply it. Callers hold ``groups.changing``
        and reply and notify right after, so the change, its announcement and its use for
        routing happen together, and only once it is on disk."""
        before, after = change.before, change.after
        if after is None:
            await self.storage.delete_group(key(change.name))
        elif after.persistent:
            await self.storage.save_group(key(change.name), after.to_stored())
        elif before is not None and before.persistent:
            await self.storage.forget_group(key(change.name))  # now a guest's: not kept
        self.groups.apply(change)
        await self.hub.group_changed(change)

    def reply(self, kind: str, **fields: Any) -> None:
        reply = encode_reply(self.rid, kind, **fields)
        if reply is not None:
            self.outbox.deliver(reply)

    async def notify(self, names: Iterable[str], kind: str, **fields: Any) -> None:
        await self.hub.send(names, encode_event(kind, **fields))

    async def notify_others(self, kind: str, **fields: Any) -> None:
        await self.hub.send_all(encode_event(kind, **fields), exclude=self.user)

    async def store(
        self, conversation: str, text: str, env: Envelope, recipient: str = ""
    ) -> Message:
        """Store a conversation message from ``user`` before anyone is told of it; a
        ``cmid`` the sender used before returns that message instead (not ``fresh``)."""
        return await self.storage.messages.append(
            conversation, self.user, text, recipient, sender_key=key(self.user), client_id=env.get("cmid")
        )

    async def deliver_stored(
        self, names: Iterable[str] | None, message: Message, kind: str, **fields: Any
    ) -> None:
        """Deliver the event of a stored message to ``names`` (everyone else: None);
        sessions with Feature.RESUME get it numbered."""
        payload = encode_event(kind, **fields)
        numbered = encode_event(kind, **fields, mid=message.id, seq=message.seq)
        if names is None:
            await self.hub.send_all(payload, exclude=self.user, numbered=numbered, message=message)
        else:
            await self.hub.send(names, payload, numbered=numbered, message=message)

    def reply_stored(self, kind: str, message: Message, env: Envelope, **fields: Any) -> None:
        """The sender's reply; a request with a ``cmid`` learns the message's numbers."""
        numbers = {"mid": message.id, "seq": message.seq} if env.get("cmid") is not None else {}
        self.hub.in_turn(message, lambda: self.reply(kind, **fields, **numbers))

    async def online_user(self, name: str) -> str:
        found = await self.hub.lookup(name)
        if found is None:
            raise RequestError(ErrorCode.USER_NOT_ONLINE, users=[name])
        return found

    async def known_user(self, name: str) -> str:
        """An online or registered user's name as they write it."""
        found = await self.hub.lookup(name) or await self.accounts.is_registered(name)
        if found is None:
            raise RequestError(ErrorCode.USER_NOT_ONLINE, users=[name])
        return found


Handler = Callable[[Context, Envelope], Awaitable[None]]
