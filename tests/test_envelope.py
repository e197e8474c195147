"""The envelope codec (PROTOCOL.md section 6): round trips and every rejection."""

from __future__ import annotations

import struct

import pytest

from chat.protocol.envelope import decode_event, decode_request, encode_event, encode_request
from chat.protocol.errors import EnvelopeError


def frame(header: bytes, body: bytes = b"") -> bytes:
    """An envelope with a raw (possibly invalid) header."""
    return struct.pack(">I", len(header)) + header + body


@pytest.mark.parametrize(
    "header",
    [
        rb'{"type":"broadcast","text":"\ud800"}',
        rb'{"type":"private","to":"bob","text":"a\udfffb"}',
        rb'{"type":"login","name":"\udc80"}',
        rb'{"type":"group_create","group":"g","members":["\ud83d"]}',
    ],
)
def test_lone_surrogate_escapes_are_rejected(header: bytes) -> None:
    """A \\uXXXX escape of a lone surrogate is not text: it must not decode into a value
    that the server later fails to re-encode (UnicodeEncodeError) when relaying it."""
    with pytest.raises(EnvelopeError):
        decode_request(frame(header))


def test_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(EnvelopeError):
        encode_event("broadcast", sender="alice", text="\ud800")
    with pytest.raises(EnvelopeError):
        encode_request("broadcast", text="x\udfff")


def test_escaped_surrogate_pair_is_text() -> None:
    """A correctly paired escape is an ordinary character and round-trips."""
    envelope = decode_request(frame(rb'{"type":"broadcast","text":"\ud83d\udc4b"}'))
    assert envelope["text"] == "\U0001f44b"
    assert decode_event(encode_event("broadcast", sender="a", text=envelope["text"]))["text"] == "\U0001f44b"
