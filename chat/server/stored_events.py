"""A stored message as the event its readers get (a replay after a resume, and a node
catching up after its link to the others was down)."""

from __future__ import annotations

from typing import Any

from chat.protocol.envelope import encode_event
from chat.server.conversations import BROADCASTS, Message


def replayed_event(message: Message) -> bytes:
    """A stored message as its live event, numbered and with the time it was sent."""
    common: dict[str, Any] = {
        "sender": message.sender, "text": message.text, "mid": message.id, "seq": message.seq,
        "sent_at": int(message.sent_at),
    }  # fmt: skip
    if message.conversation == BROADCASTS:
        return encode_event("broadcast", **common)
    if message.conversation.startswith("@"):
        return encode_event("private", **common)
    return encode_event("group_message", group=message.recipient, **common)


def live_events(message: Message) -> tuple[bytes, bytes]:
    """A stored message as its live event: plain, and numbered (Feature.RESUME)."""
    fields: dict[str, Any] = {"sender": message.sender, "text": message.text}
    if message.conversation == BROADCASTS:
        kind = "broadcast"
    elif message.conversation.startswith("@"):
        kind = "private"
    else:
        kind, fields = "group_message", {"group": message.recipient, **fields}
    return encode_event(kind, **fields), encode_event(kind, **fields, mid=message.id, seq=message.seq)
