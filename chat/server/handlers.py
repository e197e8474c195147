"""One small handler per request type (PROTOCOL.md section 6.2).

Each handler gets a :class:`Context` (who is asking, the hub, the groups, and helpers to
reply and notify) and the validated envelope. It answers with exactly one ``ctx.reply``
or raises :class:`RequestError`, which the dispatcher turns into the ``error`` reply.
"""

from __future__ import annotations

from typing import Any

from chat.protocol.codes import ErrorCode
from chat.protocol.envelope import Envelope
from chat.protocol.limits import MAX_HEADER_BYTES, MAX_LIST_ITEMS
from chat.server.context import Context
from chat.server.conversations import BROADCASTS, group_conversation, private_conversation
from chat.server.errors import RequestError
from chat.server.groups import GroupChange
from chat.server.login_throttle import address_prefix
from chat.server.mailbox import sender_key
from chat.server.names import key


async def broadcast(ctx: Context, env: Envelope) -> None:
    message = await ctx.store(BROADCASTS, env["text"], env)
    if message.fresh:
        await ctx.deliver_stored(None, message, "broadcast", sender=ctx.user, text=env["text"])
    ctx.reply_stored("ok", message, env)


async def private(ctx: Context, env: Envelope) -> None:
    target = await ctx.hub.lookup(env["to"])
    if target is None:
        registered = await ctx.accounts.is_registered(env["to"])
        if registered is None:
            raise RequestError(ErrorCode.USER_NOT_ONLINE, users=[env["to"]])
        conversation = private_conversation(key(ctx.user), key(registered))
        message = await ctx.store(conversation, env["text"], env, registered)
        if message.fresh:
            registered_sender = await ctx.accounts.is_registered(ctx.user) is not None
            owner = sender_key(ctx.user, registered_sender, ctx.address)
            try:
                await ctx.services.mailbox.leave(
                    registered, ctx.user, owner, env["text"], message_id=message.id, seq=message.seq
                )
            except RequestError:
                await ctx.storage.messages.withdraw(message)  # the sender is told it was not kept
                raise
        ctx.reply_stored("private_queued", message, env, to=registered, text=env["text"])
        return
    message = await ctx.store(private_conversation(key(ctx.user), key(target)), env["text"], env, target)
    if message.fresh:
        await ctx.deliver_stored([target], message, "private", sender=ctx.user, text=env["text"])
    ctx.reply_stored("private_sent", message, env, to=target, text=env["text"])


#: Bytes of names one ``user_list`` reply carries at most: with the field names and the
#: rest of the header, the reply stays well inside MAX_HEADER_BYTES.
LIST_NAME_BYTES = MAX_HEADER_BYTES // 2


def first_names(names: list[str]) -> list[str]:
    """The leading names that fit one envelope: at most MAX_LIST_ITEMS of them and
    LIST_NAME_BYTES of JSON, so /list works with any number of users online."""
    budget = LIST_NAME_BYTES
    for count, name in enumerate(names[:MAX_LIST_ITEMS]):
        budget -= len(name.encode("utf-8")) * 2 + 3  # quotes, comma; escapes at most double
        if budget < 0:
            return names[:count]
    return names[:MAX_LIST_ITEMS]


async def list_users(ctx: Context, env: Envelope) -> None:
    users = await ctx.hub.online()
    shown = first_names(users)
    fields: dict[str, Any] = {"users": shown}
    if len(shown) < len(users):
        fields["more"] = len(users) - len(shown)
    registered = await ctx.storage.registered_among(shown)
    if registered:
        fields["registered"] = registered
    ctx.reply("user_list", **fields)


async def _guests_among(ctx: Context, names: list[str]) -> set[str]:
    """The keys of the users in ``names`` who have no account."""
    registered = {key(name) for name in await ctx.storage.registered_among(names)}
    return {key(name) for name in names} - registered


async def group_create(ctx: Context, env: Envelope) -> None:
    ctx.groups.check_available(env["group"])
    found: list[str] = []
    missing: list[str] = []
    for name in env.get("members", []):
        online = await ctx.hub.lookup(name)
        if online is None:
            missing.append(name)
        elif key(online) != key(ctx.user):
            found.append(online)
    if missing:
        raise RequestError(ErrorCode.USER_NOT_ONLINE, users=list(dict.fromkeys(missing)))
    guests = await _guests_among(ctx, found)
    if not ctx.registered:
        guests.add(key(ctx.user))
    async with ctx.groups.changing:
        newest = await ctx.storage.messages.newest_id()
        change = ctx.groups.create(env["group"], ctx.user, found, guests, newest, address_prefix(ctx.address))
        await ctx.commit(change)
        ctx.reply("group_created", group=change.name)
        await ctx.notify(others_in(change, ctx.user), "group_added", group=change.name)


async def group_join(ctx: Context, env: Envelope) -> None:
    async with ctx.groups.changing:
        invited = key(ctx.user) in ctx.groups.get(env["group"]).pending
        at = await ctx.storage.messages.newest_id()
        change = ctx.groups.join(env["group"], ctx.user, guest=not ctx.registered, at=at)
        await ctx.commit(change)
        ctx.reply("group_joined", group=change.name)
        if not invited:  # accepting an invitation: the others were told of the add
            await ctx.notify(others_in(change, ctx.user), "member_joined", group=change.name, name=ctx.user)


def _fitting(names: list[str], budget: int) -> list[str]:
    """The leading names whose JSON takes at most ``budget`` bytes."""
    for count, name in enumerate(names):
        budget -= len(name.encode("utf-8")) * 2 + 3
        if budget < 0:
            return names[:count]
    return names


async def group_list(ctx: Context, env: Envelope) -> None:
    await ctx.hub.groups_caught_up()  # groups created on other nodes a moment ago too
    names = ctx.groups.names()
    shown = first_names(names)
    fields: dict[str, Any] = {"groups": shown}
    if len(shown) < len(names):
        fields["more"] = len(names) - len(shown)
    ctx.reply("group_list", **fields)


async def group_members(ctx: Context, env: Envelope) -> None:
    await ctx.hub.groups_caught_up()  # members who joined on other nodes a moment ago too
    name = env.get("group")
    if name is not None:
        group = ctx.groups.get(name)
        if group.invite_only and not group.has(ctx.user):
            # an invite-only group's members are private
            raise RequestError(ErrorCode.NOT_MEMBER, group=group.name)
        groups = [group]
    else:
        groups = ctx.groups.of_user(ctx.user)[:MAX_LIST_ITEMS]
    # Each group gets an equal share of one reply; names past it are counted in ``more``.
    budget = LIST_NAME_BYTES // max(1, len(groups)) // 2
    entries, more = [], 0
    for group in groups:
        members = group.sorted_members()
        shown = _fitting(members[:MAX_LIST_ITEMS], budget)
        more += len(members) - len(shown)
        registered = set(group.registered_members())
        entries.append({"group": group.name, "members": shown,
                        "registered": _fitting([m for m in shown if m in registered], budget)})  # fmt: skip
    ctx.reply("group_members", groups=entries, **({"more": more} if more else {}))


async def group_message(ctx: Context, env: Envelope) -> None:
    group = ctx.groups.member_group(env["group"], ctx.user)
    if key(ctx.user) in group.pending:  # posting accepts the owner's add
        async with ctx.groups.changing:
            change = ctx.groups.accept(ctx.groups.member_group(env["group"], ctx.user), ctx.user)
            if change is not None:
                await ctx.commit(change)
        group = ctx.groups.member_group(env["group"], ctx.user)
    message = await ctx.store(group_conversation(key(group.name)), env["text"], env, group.name)
    # Delivered to the members as they are once it is stored (a join or leave may have
    # been announced meanwhile): every member sees announcements and messages in one order.
    if message.fresh and ctx.groups.exists(group.name):
        group = ctx.groups.get(group.name)
        members = group.other_members(ctx.user)
        fields = {"group": group.name, "sender": ctx.user, "text": env["text"]}
        await ctx.deliver_stored(members, message, "group_message", **fields)
    ctx.reply_stored("ok", message, env)


async def group_invite_only(ctx: Context, env: Envelope) -> None:
    async with ctx.groups.changing:
        change = ctx.groups.set_invite_only(env["group"], ctx.user, env["on"])
        await ctx.commit(change)
        ctx.reply("group_invite_only", group=change.name, on=env["on"])


async def group_leave(ctx: Context, env: Envelope) -> None:
    async with ctx.groups.changing:
        change = ctx.groups.leave(env["group"], ctx.user)
        await ctx.commit(change)
        ctx.reply("group_left", group=change.name)
        await ctx.notify(others_in(change, ctx.user), "member_left", group=change.name, name=ctx.user)


async def drop_guest(ctx: Context) -> None:
    """A guest's connection ended: their memberships end too (announced like a leave),
    and nothing of theirs stays for the next guest of that name."""
    async with ctx.groups.changing:
        for group in ctx.groups.of_user(ctx.user):
            change = ctx.groups.leave(group.name, ctx.user)
            await ctx.commit(change)
            await ctx.notify(others_in(change, ctx.user), "member_left", group=change.name, name=ctx.user)
        ctx.groups.guest_gone(ctx.user)


async def became_registered(ctx: Context) -> None:
    """A guest registered: their memberships (and groups they own) are kept from now on."""
    async with ctx.groups.changing:
        for change in ctx.groups.registered(ctx.user):
            await ctx.commit(change)


async def group_delete(ctx: Context, env: Envelope) -> None:
    async with ctx.groups.changing:
        change = ctx.groups.delete(env["group"], ctx.user)
        await ctx.commit(change)
        ctx.reply("group_delete_done", group=change.name)
        assert change.before is not None
        await ctx.notify(change.before.other_members(ctx.user), "group_deleted", group=change.name)


async def group_add(ctx: Context, env: Envelope) -> None:
    ctx.groups.owned_group(env["group"], ctx.user)  # owner check before the online check
    user = await ctx.known_user(env["user"])
    guest = bool(await _guests_among(ctx, [user]))
    async with ctx.groups.changing:
        at = await ctx.storage.messages.newest_id()
        change = ctx.groups.add(env["group"], ctx.user, user, guest=guest, at=at)
        await ctx.commit(change)
        ctx.reply("member_added", group=change.name, name=user)
        await ctx.notify([user], "group_added", group=change.name)
        others = [m for m in others_in(change, ctx.user) if m != user]
        await ctx.notify(others, "member_added", group=change.name, name=user)


async def group_kick(ctx: Context, env: Envelope) -> None:
    async with ctx.groups.changing:
        change, user = ctx.groups.kick(env["group"], ctx.user, env["user"])
        await ctx.commit(change)
        ctx.reply("member_removed", group=change.name, name=user)
        await ctx.notify([user], "group_removed", group=change.name)
        await ctx.notify(others_in(change, ctx.user), "member_removed", group=change.name, name=user)


def others_in(change: GroupChange, user: str) -> list[str]:
    """Members of the group after the change, other than ``user``."""
    return change.after.other_members(user) if change.after is not None else []


async def offline_ack(ctx: Context, env: Envelope) -> None:
    """Stored messages up to ``upto`` were shown: delete them, send the next page."""
    await ctx.services.mailbox.acknowledge(ctx.user, env["upto"], ctx.outbox)
    ctx.reply("ok")


async def quit_chat(ctx: Context, env: Envelope) -> None:
    """The connection logs the user out, then replies ``ok`` and closes."""
    ctx.quitting = True


async def register(ctx: Context, env: Envelope) -> None:
    await ctx.accounts.register(ctx, env)
    ctx.registered = True
    ctx.outbox.registered = True
    await became_registered(ctx)


async def change_password(ctx: Context, env: Envelope) -> None:
    await ctx.accounts.change_password(ctx, env)
