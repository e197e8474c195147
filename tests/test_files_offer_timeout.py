"""A recipient who never answers a file offer counts as failed after --offer-timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path

from e2e_harness import ServerProcess
from session_helpers import login

from chat.client.transport import ClientSession


async def next_of(session: ClientSession, kind: str) -> dict[str, object]:
    while True:
        event = await asyncio.wait_for(session.recv(), 5)
        if event.type == kind:
            return event.fields


async def test_unanswered_offer_expires(key_pair: tuple[Path, Path], tmp_path: Path) -> None:
    server = await ServerProcess.start(key_pair[0], tmp_path, "--db", ":memory:", "--offer-timeout", "0.5")
    try:
        sender = await login(server.port, key_pair[1], "sender")
        silent = await login(server.port, key_pair[1], "silent")
        await sender.send("file_offer", name="a.txt", size=3, to="silent")
        offered = await next_of(sender, "file_offered")
        incoming = await next_of(silent, "file_incoming")
        assert incoming["id"] == offered["id"]
        aborted = await next_of(silent, "file_aborted")
        assert aborted == {"id": offered["id"], "detail": "the offer expired"}
        result = await next_of(sender, "file_result")
        assert result == {
            "id": offered["id"], "delivered": [],
            "failed": [{"name": "silent", "detail": "no answer to the offer"}],
        }
        # A late answer to a transfer that just ended is harmless: acknowledged, nothing moves.
        rid = await silent.send("file_accept", id=offered["id"])
        late = await asyncio.wait_for(silent.recv(), 5)
        assert (late.type, late.fields) == ("ok", {"re": rid})
    finally:
        assert not await server.stop()
