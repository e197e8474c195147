"""The server's own frame header for direct writes (``binary_frame``) must produce exactly
the bytes websockets' frame serializer produces, at every length-encoding boundary."""

from __future__ import annotations

import os

import pytest
from websockets.frames import Frame, Opcode

from chat.server.frames import binary_frame

SIZES = [0, 1, 125, 126, 127, 200, 65535, 65536, 65537, 300_000]


@pytest.mark.parametrize("size", SIZES)
def test_binary_frame_matches_websockets(size: int) -> None:
    payload = os.urandom(size)
    assert binary_frame(payload) == Frame(Opcode.BINARY, payload).serialize(mask=False)


@pytest.mark.parametrize("size", SIZES)
def test_binary_frame_header_length(size: int) -> None:
    header_len = 2 if size < 126 else 4 if size < 65536 else 10
    frame = binary_frame(b"\x00" * size)
    assert len(frame) == header_len + size
    assert frame[0] == 0x82  # FIN + binary, no RSV bits
    assert frame[1] & 0x80 == 0  # server frames are not masked
