"""Conversations and their messages, as both stores (message_store.py for SQLite,
pg_messages.py for PostgreSQL) and the handlers name them: everyone (``*``), a pair of
users (``@a b``), a group (``#g``)."""

from __future__ import annotations

from dataclasses import dataclass

from chat.server.names import key, username_problem

#: The conversation of broadcasts.
BROADCASTS = "*"


def group_conversation(group_key: str) -> str:
    return "#" + group_key


def private_conversation(a_key: str, b_key: str) -> str:
    """Both users' conversation (names never contain spaces)."""
    first, second = sorted((a_key, b_key))
    return f"@{first} {second}"


def conversation_of(me: str, target: str) -> str | None:
    """The conversation a client names ``target`` (``*``, ``@<user>`` or a group) for the
    user whose key is ``me``; None for ``@`` and something that is no username."""
    if target == BROADCASTS:
        return BROADCASTS
    if target.startswith("@"):
        other = target[1:]
        return private_conversation(me, key(other)) if username_problem(other) is None else None
    return group_conversation(key(target))


@dataclass(frozen=True)
class Message:
    id: int
    conversation: str
    seq: int
    sender: str
    #: The group, or the private message's recipient, as written ('' for broadcasts).
    recipient: str
    text: str
    sent_at: float
    #: False when a message with the same client message id was stored before (this is it).
    fresh: bool = True


@dataclass(frozen=True)
class Readable:
    """What one user may read: broadcasts, their private conversations from message id
    ``private_after`` on, and each of their groups' conversations from its id on."""

    user_key: str
    private_after: int
    groups: tuple[tuple[str, int], ...] = ()


def kind_of(conversation: str) -> str:
    if conversation == BROADCASTS:
        return "broadcast"
    return "private" if conversation.startswith("@") else "group"
