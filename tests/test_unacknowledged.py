"""Requests without a ``rid`` (PROTOCOL.md section 6): a plain ``ok`` is not sent for them;
replies with content and errors still are, without ``re``. Against the real server
process, with real handshakes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_harness import ServerProcess
from robust_helpers import Peer

from chat.keys import load_public_key
from chat.protocol.envelope import encode_request


@pytest.fixture
def public_key(key_pair: tuple[Path, Path]) -> rsa.RSAPublicKey:
    return load_public_key(key_pair[1])


async def test_requests_without_rid(server: ServerProcess, public_key: rsa.RSAPublicKey) -> None:
    bot = await Peer.join(server.port, public_key, "bot")
    reader = await Peer.join(server.port, public_key, "reader")
    try:
        await bot.wait_presence("user_joined", "reader")
        start = len(bot.events)
        # Succeeds with a plain ok: nothing comes back, the broadcast goes out.
        await bot.session.send_plaintext(encode_request("broadcast", text="no ack please"))
        got = await reader.wait_type("broadcast", sender="bot")
        assert got["text"] == "no ack please"
        # A reply with content still comes, without re.
        await bot.session.send_plaintext(encode_request("list"))
        listing = await bot.wait_type("user_list")
        assert "re" not in listing.fields and listing["users"] == ["bot", "reader"]
        # An error still comes, without re.
        await bot.session.send_plaintext(encode_request("private", to="nobody", text="hi"))
        error = await bot.wait_type("error")
        assert error["code"] == "user_not_online" and "re" not in error.fields
        # With a rid the same broadcast is acknowledged: the only difference is the ok.
        ack = await bot.request("broadcast", text="ack please")
        assert ack.type == "ok"
        assert [e.type for e in bot.events[start:]] == ["user_list", "error", "ok"], bot.events[start:]
    finally:
        await bot.close()
        await reader.close()
