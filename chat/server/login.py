"""``login`` and logging out (PROTOCOL.md sections 6.1 and 6.6): the handlers that start
and end a user's time online, under the same convention as every other request."""

from __future__ import annotations

from chat.protocol.codes import ErrorCode, Feature
from chat.protocol.envelope import Envelope
from chat.server.context import Context
from chat.server.errors import RequestError
from chat.server.handlers import drop_guest
from chat.server.names import display_form, key, reserved, username_problem

#: The features this server has (PROTOCOL.md section 6.6).
SERVER_FEATURES = frozenset(Feature)


async def login(ctx: Context, env: Envelope) -> None:
    """Check the name (rules, look-alikes, password, reserved, registered-only), claim
    it, announce it, welcome it and send what was stored for it."""
    services, outbox = ctx.services, ctx.outbox
    name: str = env["name"]
    problem = username_problem(name)
    if problem is not None:
        raise RequestError(ErrorCode.USERNAME_INVALID, name=name, detail=problem)
    name = display_form(name)
    if (
        await services.hub.lookup(name) is not None
        or await services.hub.lookup_similar(name) is not None
        or await services.storage.account_like(name) is not None
    ):
        # A look-alike of a name online or registered is as taken as the name itself.
        raise RequestError(ErrorCode.USERNAME_TAKEN, name=name)
    name = await services.accounts.authenticate(name, env.get("password"), ctx.address)
    registered = await services.accounts.is_registered(name) is not None
    if not registered and reserved(name, services.config.reserved_names):
        # Only an account the operator made (--add-account) may bear such a name.
        raise RequestError(ErrorCode.USERNAME_RESERVED, name=name)
    if not registered and services.config.registered_only:
        raise RequestError(ErrorCode.REGISTRATION_REQUIRED, name=name)
    if outbox.closing or not await services.hub.claim(name, outbox):
        raise RequestError(ErrorCode.USERNAME_TAKEN, name=name)
    asked = env.get("features")
    features = {Feature(f) for f in asked or () if f in SERVER_FEATURES}
    outbox.logged_in(name, registered, features)
    storage = services.storage
    outbox.reads_from = await storage.reads_from(key(name)) if registered else storage.messages.last_id
    # Announced to everyone online; subscribed after its own join, so not told of it.
    services.presence.joined(name)
    services.presence.subscribe(outbox)
    paged = Feature.OFFLINE_PAGES in features
    waiting = await services.mailbox.waiting(name) if paged else 0
    fields: dict[str, object] = {"offline": waiting} if waiting else {}
    if asked is not None:
        fields["features"] = sorted(features)
    ctx.reply("welcome", name=name, **fields)
    await services.mailbox.send_page(name, outbox, paged=paged)


async def logout(ctx: Context) -> None:
    """``ctx.user`` is gone (quit, closed, cut off): end its transfers, a guest's
    memberships, its claim on the name, and announce the exit."""
    services = ctx.services
    await services.transfers.disconnected(ctx)
    if not ctx.registered:
        await drop_guest(ctx)
    await services.hub.release(ctx.user, ctx.outbox)
    services.mailbox.forget(ctx.user)
    services.presence.unsubscribe(ctx.outbox)
    services.presence.exited(ctx.user)
