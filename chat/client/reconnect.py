"""After a lost connection (terminal mode): is it worth reconnecting, and when to try.

A connection cut without a close frame, or closed because the server is going away,
restarting, overloaded or broken, is retried. One the server closed on purpose because
of this client (close code 1008: too fast, login timed out, a record that failed to
authenticate, a backlog it did not read), or that ended because the server broke the
protocol, is not: trying again would only repeat it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from chat.client import own_lines
from chat.client.render import render
from chat.client.transport import (
    EXIT_CANNOT_CONNECT,
    EXIT_DISCONNECTED,
    ClientError,
    ClientSession,
    Disconnected,
)
from chat.protocol.envelope import Envelope

#: Going away (server shutdown), abnormal closure, internal error, service restart, try
#: again later (server full), bad gateway.
RETRY_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
FIRST_DELAY = 1.0
#: At most this long between attempts: well inside the time the server keeps a lost
#: session for its client (--resume-linger, 60 s), so a longer outage still resumes it.
MAX_DELAY = 15.0
#: Each delay is randomly up to this fraction shorter or longer, so that the clients of
#: a restarted server do not all come back in the same instant.
JITTER = 0.2


def worth_retrying(error: ClientError) -> bool:
    """Whether a connection that ended (or could not be made) with ``error`` may work on
    a later attempt. A wrong server key (exit 4) never does."""
    if isinstance(error, Disconnected):
        return error.code is None or error.code in RETRY_CLOSE_CODES
    return error.exit_code == EXIT_CANNOT_CONNECT


def loss_reason(error: ClientError) -> str:
    """Why the connection ended, in a few words."""
    if isinstance(error, Disconnected):
        if error.reason:
            return error.reason
        return "the connection was cut" if error.code is None else f"closed with code {error.code}"
    return error.message


def backoff_delays(
    first: float = FIRST_DELAY,
    cap: float = MAX_DELAY,
    jitter: float = JITTER,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """1, 2, 4, 8, 15, 15, ... seconds, each with jitter, never over ``cap``."""
    delay = first
    while True:
        yield min(cap, delay * (1 + jitter * (2 * rand() - 1)))
        delay = min(cap, delay * 2)


#: Logging back in while the server still holds the old session (it notices a dead
#: connection only after its keepalive timeout): try again this often, for this long
#: (less than the server's default login timeout of 60 s).
RELOGIN_RETRY = 2.0
RELOGIN_PATIENCE = 50.0

#: Sends ``login`` with these fields on a session and returns its reply.
LoginReply = Callable[[ClientSession, dict[str, Any]], Awaitable[Envelope]]


async def relogin(
    session: ClientSession, name: str, password: str | None, login: LoginReply, say: Callable[[str], None]
) -> Envelope:
    """Log in on ``session`` as ``name`` again; the welcome. Retries while the server
    still holds our old session, or is too busy to check the password."""
    fields: dict[str, Any] = {"name": name}
    if password is not None:
        fields["password"] = password
    loop = asyncio.get_running_loop()
    give_up = loop.time() + RELOGIN_PATIENCE
    told = False
    while True:
        reply = await login(session, fields)
        if reply.type == "welcome":
            return reply
        if reply.get("code") == "server_busy" and loop.time() < give_up:
            await asyncio.sleep(RELOGIN_RETRY)  # too many password checks at once
            continue
        if reply.get("code") == "username_taken" and loop.time() < give_up:
            if not told:
                say(own_lines.old_session_remains(name, RELOGIN_RETRY))
                told = True
            await asyncio.sleep(RELOGIN_RETRY)
            continue
        raise ClientError(own_lines.cannot_log_back_in(name, _relogin_refusal(reply)), EXIT_DISCONNECTED)


def _relogin_refusal(reply: Envelope) -> str:
    code = reply.get("code")
    if code == "username_taken":
        return "the name is still in use"
    if code == "password_required":
        return "the name now needs a password"
    if code == "wrong_password":
        return "the password was refused"
    return " ".join(render(reply)) or f"the server answered {reply.type} {code or ''}".rstrip()
