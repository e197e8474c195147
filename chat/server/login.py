"""``login`` and logging out (PROTOCOL.md sections 6.1 and 6.6): the handlers that start
and end a user's time online, under the same convention as every other request."""

from __future__ import annotations

from chat.protocol.codes import ErrorCode, Feature
from chat.protocol.envelope import Envelope
from chat.server.context import Context
from chat.server.errors import RequestError
from chat.server.handlers import drop_guest
from chat.server.history import remember_read, tell_unread
from chat.server.hub import Claim
from chat.server.names import display_form, key, reserved, username_problem
from chat.server.resumption import replay

#: The features this server has (PROTOCOL.md section 6.6).
SERVER_FEATURES = frozenset(Feature)


async def login(ctx: Context, env: Envelope) -> None:
    """Check the name (rules, look-alikes, password, reserved, registered-only), claim
    it, announce it, welcome it and send what was stored for it (and, for a session that
    resumes, what it missed: resumption.py)."""
    services, outbox = ctx.services, ctx.outbox
    name: str = env["name"]
    problem = username_problem(name)
    if problem is not None:
        raise RequestError(ErrorCode.USERNAME_INVALID, name=name, detail=problem)
    name = display_form(name)
    asked = env.get("features")
    features = {Feature(f) for f in asked or () if f in SERVER_FEATURES}
    resuming = Feature.RESUME in features
    ticket = await services.resume_tokens.valid(env.get("token"), key(name)) if resuming else None
    if (
        (ticket is None and await services.hub.lookup(name) is not None)
        or await services.hub.lookup_similar(name) is not None
        or await services.storage.account_like(name) is not None
    ):
        # A look-alike of a name online or registered is as taken as the name itself.
        raise RequestError(ErrorCode.USERNAME_TAKEN, name=name)
    name, registered = await services.accounts.authenticate(name, env.get("password"), ctx.address)
    if not registered and reserved(name, services.config.reserved_names):
        # Only an account the operator made (--add-account) may bear such a name.
        raise RequestError(ErrorCode.USERNAME_RESERVED, name=name)
    if not registered and services.config.registered_only:
        raise RequestError(ErrorCode.REGISTRATION_REQUIRED, name=name)
    # With its token, the name is taken over from its own old session, if one still
    # holds it now (after the password check): claimed in the same step, never free; the
    # old session leaves without a word and this connection carries on for it.
    takeover = ticket is not None
    # Events may reach the outbox as soon as the name is claimed, before ``logged_in``:
    # a session that resumes must get them numbered already, or its client cannot tell
    # them from the replay's copies and shows them twice.
    outbox.numbered = resuming
    claim = Claim.REFUSED if outbox.closing else await services.hub.claim(name, outbox, takeover=takeover)
    if claim is Claim.REFUSED:
        raise RequestError(ErrorCode.USERNAME_TAKEN, name=name)
    if ticket is not None:
        await services.resume_tokens.use(env["token"])  # used once, and only by a login that worked
    outbox.logged_in(name, registered, features)
    ctx.user, ctx.registered = name, registered  # from here on the request is the user's
    storage = services.storage
    if registered:
        outbox.reads_from = await storage.reads_from(key(name))
    else:
        newest = await storage.messages.newest_id()  # nothing said to an earlier holder
        outbox.reads_from = ticket.reads_from if ticket is not None else newest
    # Announced to everyone online; subscribed after its own join, so not told of it.
    # Taking over from its own old connection is no new arrival: that one left silently.
    if claim is Claim.NEW:
        services.presence.joined(name)
    services.presence.subscribe(outbox)
    paged = Feature.OFFLINE_PAGES in features
    waiting = await services.mailbox.waiting(name) if paged else 0
    fields: dict[str, object] = {"offline": waiting} if waiting else {}
    if asked is not None:
        fields["features"] = sorted(features)
    if resuming:
        outbox.resume_token = await services.resume_tokens.issue(key(name), outbox.reads_from)
        fields.update(token=outbox.resume_token, head=storage.messages.last_id)
    ctx.reply("welcome", name=name, **fields)
    if resuming and ("cursors" in env.fields or "since" in env.fields):
        await replay(ctx, env)
    elif Feature.UNREAD in features:
        await tell_unread(ctx)
    await services.mailbox.send_page(name, outbox, paged=paged)


async def logout(ctx: Context) -> None:
    """``ctx.user`` is gone (quit, closed, cut off): end its transfers, a guest's
    memberships, its claim on the name, and announce the exit."""
    services = ctx.services
    await services.transfers.disconnected(ctx)
    # A connection its own user's new one took over (resumption.py) hands everything on:
    # a guest's groups stay theirs and nobody is told of an exit.
    superseded = ctx.outbox.superseded
    if not superseded and not ctx.outbox.read_marked:
        await remember_read(ctx)
    if not ctx.registered and not superseded:
        await drop_guest(ctx)
    await services.hub.release(ctx.user, ctx.outbox)
    services.mailbox.forget(ctx.user)
    services.presence.unsubscribe(ctx.outbox)
    if not superseded:
        services.presence.exited(ctx.user)
    await services.resume_tokens.ended(ctx.outbox.resume_token)
