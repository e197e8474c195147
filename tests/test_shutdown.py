"""Graceful shutdown on SIGTERM and SIGINT: clients see the notice and a 1001 close, a
running transfer is aborted for its recipient, state is saved, exit 0 within 5 s."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from e2e_harness import ServerProcess
from session_helpers import login, reply

from chat.client.transport import ClientSession, Disconnected
from chat.protocol.envelope import Envelope


async def events_until_closed(session: ClientSession) -> tuple[list[Envelope], Disconnected]:
    seen: list[Envelope] = []
    while True:
        try:
            seen.append(await asyncio.wait_for(session.recv(), 6))
        except Disconnected as closed:
            return seen, closed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_graceful_shutdown(key_pair: tuple[Path, Path], tmp_path: Path, signum: signal.Signals) -> None:
    server = await ServerProcess.start(key_pair[0], tmp_path)
    sender = await login(server.port, key_pair[1], "sender")
    receiver = await login(server.port, key_pair[1], "receiver")
    for session in (sender, receiver):  # only registered users' groups are kept
        assert (await reply(session, "register", password="a good password")).type == "registered"
    assert (await reply(sender, "group_create", group="kept", members=["receiver"])).type == "group_created"
    # A transfer in flight: offered, accepted, one chunk relayed, not finished.
    offered = await reply(sender, "file_offer", name="big.bin", size=10_000_000, to="receiver")
    incoming = await asyncio.wait_for(receiver.recv(), 5)
    while incoming.type != "file_incoming":
        incoming = await asyncio.wait_for(receiver.recv(), 5)
    assert incoming["id"] == offered["id"]
    await reply(receiver, "file_accept", id=offered["id"])
    await sender.send_unanswered("file_chunk", body=b"x" * 1000, id=offered["id"], offset=0)

    started = time.monotonic()
    server.proc.send_signal(signum)
    (sender_events, sender_closed), (receiver_events, receiver_closed) = await asyncio.gather(
        events_until_closed(sender), events_until_closed(receiver)
    )
    code = await server.wait_exit(5)
    elapsed = time.monotonic() - started

    assert code == 0, server.report()
    assert elapsed < 5, f"the server took {elapsed:.1f}s to exit"
    for events, closed in ((sender_events, sender_closed), (receiver_events, receiver_closed)):
        notices = [e.fields for e in events if e.type == "notice"]
        assert notices == [{"code": "shutdown"}], events
        assert closed.code == 1001, closed
    # The transfer ends with the connections; the chunk sent before the signal was relayed.
    assert [e["offset"] for e in receiver_events if e.type == "file_chunk"] in ([], [0])
    assert "Traceback" not in "\n".join(server.err.lines)

    restarted = await ServerProcess.start(key_pair[0], tmp_path)
    try:
        again = await login(restarted.port, key_pair[1], "receiver", "a good password")
        members = await reply(again, "group_members", group="kept")
        kept = {"group": "kept", "members": ["receiver", "sender"], "registered": ["receiver", "sender"]}
        assert members["groups"] == [kept]
    finally:
        assert not await restarted.stop()
