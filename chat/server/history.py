"""``history`` and ``search`` (PROTOCOL.md section 6.7): reading stored conversations.

A user reads broadcasts, their own private conversations (an account from its
registration on, a guest from its login on: nothing said to an earlier holder of the
name), and each of their groups from the moment they joined. Both replies fit one
envelope: the newest entries that fit are sent, ``before`` asks for older ones.
"""

from __future__ import annotations

from typing import Any

from chat.protocol.codes import ErrorCode
from chat.protocol.envelope import Envelope, encode_event
from chat.protocol.limits import MAX_HEADER_BYTES
from chat.server.context import Context
from chat.server.conversations import BROADCASTS, Message, Readable, conversation_of, group_conversation
from chat.server.errors import RequestError
from chat.server.names import key

#: Messages ``history`` and ``search`` give when no count is asked for.
DEFAULT_HISTORY = 20
DEFAULT_SEARCH = 20
#: Bytes of message JSON one reply carries at most.
REPLY_BYTES = MAX_HEADER_BYTES - 4096
#: Words one search may have.
MAX_SEARCH_WORDS = 8


def fitting(entries: list[dict[str, Any]]) -> int:
    """How many of the newest ``entries`` (oldest first) fit one reply."""
    budget, kept = REPLY_BYTES, 0
    for entry in reversed(entries):
        budget -= (len(str(entry["text"]).encode()) + len(str(entry["sender"]).encode())) * 2 + 96
        if budget < 0:
            break
        kept += 1
    return kept


def readable(ctx: Context) -> Readable:
    me = key(ctx.user)
    mine = ctx.groups.of_user(ctx.user)
    groups = tuple((group_conversation(key(group.name)), group.joined.get(me, 0)) for group in mine)
    return Readable(me, ctx.outbox.reads_from, groups)


def _conversation(ctx: Context, target: str) -> tuple[str, int, str]:
    """(conversation, the id after which ``ctx.user`` may read it, the target as shown)."""
    if target == BROADCASTS:
        return BROADCASTS, 0, target
    if target.startswith("@"):
        conversation = conversation_of(key(ctx.user), target)
        if conversation is None:
            raise RequestError(ErrorCode.BAD_REQUEST, detail=f"not a user: {target[1:]}")
        return conversation, ctx.outbox.reads_from, target
    return _group(ctx, target)


def _group(ctx: Context, name: str) -> tuple[str, int, str]:
    group = ctx.groups.member_group(name, ctx.user)
    return group_conversation(key(group.name)), group.joined.get(key(ctx.user), 0), group.name


def _page(messages: list[Message], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest of ``entries`` (one per message, oldest first) that fit one reply;
    ``more`` counts those left out and ``before`` asks for them."""
    kept = fitting(entries)
    fields: dict[str, Any] = {"messages": entries[len(entries) - kept :]}
    if kept < len(entries):
        fields["more"] = len(entries) - kept
        fields["before"] = messages[len(entries) - kept].id
    return fields


async def history(ctx: Context, env: Envelope) -> None:
    conversation, after, shown = _conversation(ctx, env.get("target", BROADCASTS))
    limit = env.get("limit", DEFAULT_HISTORY)
    messages = await ctx.storage.messages.history(conversation, limit, after=after, before=env.get("before"))
    entries = [
        {"id": m.id, "seq": m.seq, "sender": m.sender, "text": m.text, "sent_at": int(m.sent_at)}
        for m in messages
    ]
    ctx.reply("history", target=shown, **_page(messages, entries))


async def group_history(ctx: Context, env: Envelope) -> None:
    """The first form of ``history``, for a group (no ids): what a member may read of
    it, since they joined."""
    conversation, after, shown = _group(ctx, env["group"])
    limit = env.get("limit", DEFAULT_HISTORY)
    messages = await ctx.storage.messages.history(conversation, limit, after=after, before=env.get("before"))
    entries = [{"sender": m.sender, "text": m.text, "sent_at": int(m.sent_at)} for m in messages]
    ctx.reply("group_history", group=shown, **_page(messages, entries))


def _where(message: Message, me: str) -> str:
    if message.conversation == BROADCASTS:
        return BROADCASTS
    if message.conversation.startswith("@"):
        return "@" + (message.recipient if key(message.sender) == me else message.sender)
    return message.recipient


async def search(ctx: Context, env: Envelope) -> None:
    words = list(dict.fromkeys(env["words"].split()))
    if not words or len(words) > MAX_SEARCH_WORDS:
        raise RequestError(ErrorCode.BAD_REQUEST, detail=f"search for 1 to {MAX_SEARCH_WORDS} words")
    limit = env.get("limit", DEFAULT_SEARCH)
    found = await ctx.storage.messages.search(words, readable(ctx), limit, before=env.get("before"))
    me = key(ctx.user)
    entries = [
        {"id": m.id, "where": _where(m, me), "sender": m.sender, "text": m.text, "sent_at": int(m.sent_at)}
        for m in reversed(found)
    ]  # oldest first, as fitting() takes them
    kept = entries[len(entries) - fitting(entries) :][::-1]
    fields: dict[str, Any] = {"words": env["words"], "results": kept}
    if kept and (len(kept) < len(entries) or len(found) == limit):
        fields["before"] = kept[-1]["id"]  # there may be older matches
    ctx.reply("search_results", **fields)


async def remember_read(ctx: Context) -> None:
    """A registered user leaves: how far each of their groups had gone, for the count of
    what is new at their next login."""
    if ctx.registered:
        mine = [group_conversation(key(group.name)) for group in ctx.groups.of_user(ctx.user)]
        await ctx.storage.mark_read(key(ctx.user), mine)


async def tell_unread(ctx: Context) -> None:
    """At a registered user's login: messages in their groups since they were last here."""
    if not ctx.registered:
        return
    names = {group_conversation(key(group.name)): group.name for group in ctx.groups.of_user(ctx.user)}
    me = key(ctx.user)
    joined = [(c, ctx.groups.get(names[c]).joined.get(me, 0)) for c in names]
    counts = await ctx.storage.unread(me, joined)
    if counts:
        groups = [{"group": names[c], "count": n} for c, n in counts]
        ctx.outbox.deliver(encode_event("unread", groups=groups))
