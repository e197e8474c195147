"""A handler that fails unexpectedly (a server bug, simulated by replacing one handler)
answers ``internal_error``: the request fails, the session and the server go on. A real
ChatServer in this event loop on 127.0.0.1 with real handshakes."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_harness import HOST
from robust_helpers import Peer, RawSession

from chat.keys import load_private_key, load_public_key
from chat.protocol.envelope import Envelope
from chat.server import dispatch
from chat.server.app import ChatServer
from chat.server.config import ServerConfig
from chat.server.context import Context


async def test_a_failing_handler_answers_internal_error(
    key_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ctx: Context, env: Envelope) -> None:
        raise KeyError("a bug")

    monkeypatch.setitem(dispatch.HANDLERS, "group_list", broken)
    server = ChatServer(load_private_key(key_pair[0]), ServerConfig(host=HOST, port=0, db_path=":memory:"))
    port = await server.start()
    public_key = load_public_key(key_pair[1])
    alice = Peer(await RawSession.established(port, public_key), "alice")
    bob = Peer(await RawSession.established(port, public_key), "bob")
    try:
        assert (await alice.request("login", name="alice")).type == "welcome"
        assert (await bob.request("login", name="bob")).type == "welcome"
        failed = await alice.request("group_list")
        assert (failed.type, failed["code"]) == ("error", "internal_error"), failed
        # The same session goes on, and so does everyone else's.
        listing = await alice.request("list")
        assert listing["users"] == ["alice", "bob"]
        assert (await bob.request("broadcast", text="still up")).type == "ok"
        assert (await alice.wait_type("broadcast", sender="bob"))["text"] == "still up"
        assert not alice.ended and not bob.ended
    finally:
        await alice.close()
        await bob.close()
        await server.stop()
