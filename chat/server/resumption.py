"""Coming back after a lost connection (PROTOCOL.md section 6.8, Feature.RESUME).

A session that asked for ``resume`` gets a token in its ``welcome``. Its client's next
connection logs in with that token, its ``since`` (the ``head`` of its first welcome) and
a cursor per conversation it has seen; the server then

- lets the token's holder take the name over from its own old connection (which the
  server may not yet know is dead: a connection black-holed by the network is noticed
  only at the keepalive timeout) at once, with no moment in which the name is free,
  then closes the old one (login.py);
- gives a guest back the read floor of its earlier session (its private conversations
  from its first login on, nothing from before it held the name);
- replays what was stored for it while it was away, oldest first, and says with
  ``replayed {count, lost?, more?}`` where a page of the replay ends, how many could not
  be replayed (older than the server keeps), and whether the client should ask for the
  next page (``replay`` with its cursors moved on).

The tokens themselves: resume_tokens.py.
"""

from __future__ import annotations

from typing import Any

from chat.protocol.envelope import Envelope, encode_event
from chat.server.context import Context
from chat.server.conversations import conversation_of
from chat.server.history import readable
from chat.server.names import key
from chat.server.stored_events import replayed_event

#: Messages one page of a replay carries at most; ``replayed {more}`` says more follow
#: when the client asks (``replay`` with its cursors moved on).
REPLAY_PAGE = 500


async def replay(ctx: Context, env: Envelope) -> None:
    """Send what this user missed since ``env``'s cursors (and ``since``), then ``replayed``."""
    me = key(ctx.user)
    cursors: dict[str, int] = {}
    for cursor in env.get("cursors", []):
        conversation = conversation_of(me, cursor["target"])
        if conversation is not None:
            cursors[conversation] = max(cursor["seq"], cursors.get(conversation, 0))
    since = env.get("since", ctx.storage.messages.last_id)
    messages = ctx.storage.messages
    found, lost = await messages.missed(readable(ctx), cursors, since, REPLAY_PAGE, skip_sender=me)
    for message in found:
        ctx.outbox.deliver(replayed_event(message))
    fields: dict[str, Any] = {"lost": lost} if lost else {}
    if len(found) == REPLAY_PAGE:
        fields["more"] = True
    ctx.outbox.deliver(encode_event("replayed", count=len(found), **fields))


async def replay_more(ctx: Context, env: Envelope) -> None:
    """``replay``: the next page of what a resuming session missed (Feature.RESUME)."""
    await replay(ctx, env)
    ctx.reply("ok")
