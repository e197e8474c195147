"""Every request type and its handler, and the one way a request is handled: the handler
replies or raises RequestError, which becomes the ``error`` reply; anything else is a
bug, answered ``internal_error`` while the session goes on (PROTOCOL.md section 6)."""

from __future__ import annotations

import logging

from chat.protocol.codes import ErrorCode
from chat.protocol.envelope import Envelope
from chat.server import handlers, history, resumption
from chat.server.context import Context, Handler
from chat.server.errors import RequestError
from chat.server.login import login

log = logging.getLogger("chat.server")


def _transfer_step(step: str) -> Handler:
    """File requests are handled by the relay's method of the same name."""

    async def handle(ctx: Context, env: Envelope) -> None:
        if step != "offer" and ctx.hub.forward(ctx.user, ctx.rid, ctx.registered, ctx.address, env):
            return  # another node relays this transfer (redis_hub.py)
        await getattr(ctx.transfers, step)(ctx, env)

    return handle


#: Refusals that a group change made on another node a moment ago may have caused.
GROUP_REFUSALS = frozenset({
    ErrorCode.NO_SUCH_GROUP, ErrorCode.NOT_MEMBER, ErrorCode.NOT_OWNER, ErrorCode.ALREADY_MEMBER,
    ErrorCode.KICKED, ErrorCode.INVITE_ONLY, ErrorCode.NO_RECIPIENTS,
})  # fmt: skip

HANDLERS: dict[str, Handler] = {
    "login": login,
    "broadcast": handlers.broadcast,
    "private": handlers.private,
    "list": handlers.list_users,
    "group_create": handlers.group_create,
    "group_join": handlers.group_join,
    "group_list": handlers.group_list,
    "group_members": handlers.group_members,
    "group_message": handlers.group_message,
    "group_leave": handlers.group_leave,
    "group_delete": handlers.group_delete,
    "group_add": handlers.group_add,
    "group_kick": handlers.group_kick,
    "group_history": history.group_history,
    "history": history.history,
    "search": history.search,
    "replay": resumption.replay_more,
    "group_invite_only": handlers.group_invite_only,
    "offline_ack": handlers.offline_ack,
    "register": handlers.register,
    "change_password": handlers.change_password,
    "quit": handlers.quit_chat,
    **{
        f"file_{step}": _transfer_step(step)
        for step in ("offer", "accept", "decline", "chunk", "ack", "end", "done", "failed", "cancel")
    },
}


async def dispatch(ctx: Context, env: Envelope) -> None:
    """Handle one request; every outcome is a reply (or none for an ``ok`` without rid)."""
    try:
        try:
            await HANDLERS[env.type](ctx, env)
        except RequestError as exc:
            # Another node may have changed the group a moment ago: look, then try again.
            if exc.code not in GROUP_REFUSALS or not await ctx.hub.groups_caught_up():
                raise
            await HANDLERS[env.type](ctx, env)
    except RequestError as exc:
        if env.type == "login":
            log.info("login refused peer=%s: %s", ctx.address, exc.code)
        ctx.reply("error", code=exc.code, **exc.fields)
    except Exception:
        # A bug, not bad input: this request fails, the session and the server go on.
        log.exception("request failed user=%s type=%s", ctx.user or "-", env.type)
        ctx.reply("error", code=ErrorCode.INTERNAL_ERROR)
