"""In-process sessions against a real server process: log in, send and await replies."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path

from chat.client.transport import ClientSession, open_session
from chat.keys import load_public_key
from chat.protocol.envelope import Envelope


async def login(port: int, public_pem: Path, name: str, password: str | None = None) -> ClientSession:
    """A session logged in as ``name`` (asserting the welcome)."""
    session = await open_session("127.0.0.1", port, load_public_key(public_pem))
    await session.send("login", name=name, **({"password": password} if password else {}))
    welcome = await asyncio.wait_for(session.recv(), 5)
    assert welcome.type == "welcome", welcome
    return session


async def reply(
    session: ClientSession, kind: str, *, skip: Collection[str] | None = None, **fields: object
) -> Envelope:
    """Send a request and return its reply. Events before it must be of a type in
    ``skip`` (any type if ``skip`` is None)."""
    rid = await session.send(kind, **fields)
    while True:
        event = await asyncio.wait_for(session.recv(), 5)
        if event.get("re") == rid:
            return event
        assert skip is None or event.type in skip, f"unexpected {event} while waiting for the reply to {kind}"
