"""Review findings M3 (file_ack flood) and M10 (server side: idle transfers, incoming
offers counted against the recipient's own sends), against a real server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from robust_helpers import Peer, assert_fresh_pair_chats, running_server

from chat.keys import load_public_key


@pytest.fixture
def public_key(key_pair: tuple[Path, Path]) -> rsa.RSAPublicKey:
    return load_public_key(key_pair[1])


async def _accepted_transfer(sender: Peer, recipient: Peer) -> str:
    """A transfer from ``sender`` to ``recipient``, accepted, with no data sent yet."""
    await sender.send("file_offer", to=recipient.name, name="x.bin", size=1 << 20)
    offered = await sender.wait_type("file_offered")
    await recipient.wait_type("file_incoming", id=offered["id"])
    await recipient.send("file_accept", id=offered["id"])
    await sender.wait_type("file_go", id=offered["id"])
    return str(offered["id"])


async def _flood_acks(peer: Peer, transfer_id: str, count: int) -> None:
    for _ in range(count):
        if peer.ended:
            return
        await peer.send("file_ack", id=transfer_id, received=0)


async def test_acks_that_acknowledge_nothing_are_metered(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """The review's M3: with a self-made transfer, 167,900 file_ack in 6 s were never cut
    off. Acks of no new bytes, from the recipient or from a third user, are metered like
    any request: past the burst and the warning, the sender is disconnected (1008)."""
    async with running_server(key_pair[0], tmp_path / "server") as server:
        mallory = await Peer.join(server.port, public_key, "mallory")
        accomplice = await Peer.join(server.port, public_key, "accomplice")
        third = await Peer.join(server.port, public_key, "third")
        transfer = await _accepted_transfer(mallory, accomplice)
        await asyncio.gather(_flood_acks(accomplice, transfer, 2000), _flood_acks(third, transfer, 2000))
        for peer in (accomplice, third):
            await peer.wait_type("notice", code="too_fast")
            for _ in range(100):
                if peer.ended:
                    break
                await asyncio.sleep(0.05)
            assert (peer.close_code, peer.close_reason) == (1008, "sending too fast"), peer.name
        await assert_fresh_pair_chats(server, public_key)


async def test_a_stalled_transfer_is_aborted_for_both_sides(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    async with running_server(key_pair[0], tmp_path / "server", "--transfer-idle-timeout", "0.5") as server:
        sender = await Peer.join(server.port, public_key, "sender")
        recipient = await Peer.join(server.port, public_key, "recipient")
        transfer = await _accepted_transfer(sender, recipient)
        aborted = await recipient.wait_type("file_aborted", id=transfer)
        assert aborted["detail"] == "the transfer stalled"
        result = await sender.wait_type("file_result", id=transfer)
        assert result["failed"] == [{"name": "recipient", "detail": "the transfer stalled"}]
        await assert_fresh_pair_chats(server, public_key)


async def test_offers_to_a_user_do_not_block_their_own_sends(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    """The review: 8 idle offers from mallory made the victim's own /file fail with
    'too many file transfers at once'. Incoming offers have their own bound."""
    options = ("--max-transfers-per-user", "9", "--max-incoming-transfers", "8", "--rate-limit", "0")
    async with running_server(key_pair[0], tmp_path / "server", *options) as server:
        mallory = await Peer.join(server.port, public_key, "mallory")
        victim = await Peer.join(server.port, public_key, "victim")
        friend = await Peer.join(server.port, public_key, "friend")
        for _ in range(8):
            await mallory.send("file_offer", to="victim", name="spam.bin", size=1)
            await mallory.wait_type("file_offered")
        await mallory.send("file_offer", to="victim", name="spam.bin", size=1)
        refused = await mallory.wait_type("error")
        assert (refused["code"], refused["user"], refused["limit"]) == ("too_many_transfers", "victim", 8)
        await victim.send("file_offer", to="friend", name="mine.txt", size=3)
        offered = await victim.wait_type("file_offered")
        assert offered["recipients"] == ["friend"]
        await friend.wait_type("file_incoming", id=offered["id"])
        await assert_fresh_pair_chats(server, public_key)
