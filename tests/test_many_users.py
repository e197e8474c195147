"""More users online than one envelope can name: ``/list`` still answers (the first
names, plus how many more), and the session goes on. A real ChatServer in this event loop
on 127.0.0.1, with real handshakes; only the per-address connection cap is lifted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from e2e_harness import HOST
from robust_helpers import RawSession

from chat.keys import load_private_key, load_public_key
from chat.protocol.limits import MAX_LIST_ITEMS
from chat.server.app import ChatServer
from chat.server.config import ServerConfig
from chat.server.handlers import first_names

USERS = MAX_LIST_ITEMS + 26


@pytest.mark.slow
async def test_list_with_more_users_online_than_one_reply_names(key_pair: tuple[Path, Path]) -> None:
    config = ServerConfig(host=HOST, port=0, db_path=":memory:", rate_limit=0, max_connections_per_ip=0,
                          max_upgrading_per_ip=0, handshakes_per_ip=0)
    server = ChatServer(load_private_key(key_pair[0]), config)
    port = await server.start()
    public_key = load_public_key(key_pair[1])
    sessions: list[RawSession] = []
    try:
        gate = asyncio.Semaphore(32)

        async def join(i: int) -> RawSession:
            async with gate:
                session = await RawSession.established(port, public_key)
                await session.login(f"user{i:04d}")
                return session

        started = time.monotonic()
        sessions = list(await asyncio.gather(*(join(i) for i in range(USERS))))
        print(f"{USERS} users logged in in {time.monotonic() - started:.1f} s")
        last = sessions[-1]
        reply = await last.request("list")
        assert reply.type == "user_list", reply
        # The first MAX_LIST_ITEMS in login order (concurrent logins: order not known here).
        shown = reply["users"]
        assert len(shown) == len(set(shown)) == MAX_LIST_ITEMS
        assert set(shown) <= {f"user{i:04d}" for i in range(USERS)}
        assert reply["more"] == USERS - MAX_LIST_ITEMS
        # The session is still usable afterwards.
        again = await last.request("private", to="user0000", text="still here")
        assert again.type == "private_sent", again
    finally:
        for session in sessions:
            session.abort()
        await server.stop()


def test_first_names_counts_bytes_not_only_names() -> None:
    short = [f"u{i}" for i in range(2000)]
    assert first_names(short) == short[:MAX_LIST_ITEMS]
    assert first_names(short[:5]) == short[:5]
    wide = ["\U0001f600" * 32 for _ in range(MAX_LIST_ITEMS)]  # 128 UTF-8 bytes each
    shown = first_names(wide)
    assert 0 < len(shown) < MAX_LIST_ITEMS
    assert sum(len(n.encode()) * 2 + 3 for n in shown) <= 32 * 1024
