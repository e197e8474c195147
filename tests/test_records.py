"""The record layer (PROTOCOL.md section 4): AES-256-GCM, per-direction keys and counters.

Every way a network attacker can disturb the record stream (alter, replay, reorder,
drop, truncate, reflect, inject) must fail authentication and leave the channel broken.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.protocol.errors import RecordError
from chat.protocol.handshake import SessionKeys
from chat.protocol.limits import MAX_ENVELOPE_BYTES, MAX_FRAME_BYTES
from chat.protocol.records import (
    MAX_RECORD_LEN,
    MAX_SEQUENCE,
    MIN_RECORD_LEN,
    RecordOpener,
    RecordSealer,
    SecureChannel,
)

C2S_KEY, S2C_KEY = bytes(range(32)), bytes(range(32, 64))
C2S_IV, S2C_IV = bytes(range(64, 76)), bytes(range(76, 88))


def pair() -> tuple[SecureChannel, SecureChannel]:
    """(client, server) channels sharing one session's keys."""
    client = SessionKeys(C2S_KEY, C2S_IV, S2C_KEY, S2C_IV, b"")
    server = SessionKeys(S2C_KEY, S2C_IV, C2S_KEY, C2S_IV, b"")
    return SecureChannel(client), SecureChannel(server)


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    changed = bytearray(data)
    changed[index] ^= mask
    return bytes(changed)


def test_round_trip_both_directions_with_independent_counters() -> None:
    client, server = pair()
    for i in range(5):
        assert server.open(client.seal(f"c{i}".encode())) == f"c{i}".encode()
    for i in range(3):
        assert client.open(server.seal(f"s{i}".encode())) == f"s{i}".encode()
    assert server.open(client.seal(b"")) == b""


def test_layout_nonce_and_aad_are_as_documented() -> None:
    """Record n = 0x17 || AES-GCM(key, iv XOR n, plaintext, aad=0x17), checked independently."""
    sealer = RecordSealer(C2S_KEY, C2S_IV)
    aead = AESGCM(C2S_KEY)
    for sequence in range(4):
        plaintext = os.urandom(20)
        record = sealer.seal(plaintext)
        assert len(record) == len(plaintext) + 17
        assert record[0] == 0x17
        nonce = (int.from_bytes(C2S_IV, "big") ^ sequence).to_bytes(12, "big")
        assert aead.decrypt(nonce, record[1:], b"\x17") == plaintext


@pytest.mark.parametrize(
    ("where", "index"),
    [("header", 0), ("first ciphertext byte", 1), ("last ciphertext byte", 12), ("first tag byte", 13),
     ("last tag byte", 28)],
)
def test_altered_record_fails_and_breaks_the_channel(where: str, index: int) -> None:
    client, server = pair()
    record = client.seal(b"hello, world")
    assert len(record) == 29
    with pytest.raises(RecordError):
        server.open(flip(record, index))
    with pytest.raises(RecordError):
        server.open(record)  # the untouched record no longer opens: the session is over


def test_every_single_bit_flip_is_detected() -> None:
    record = RecordSealer(C2S_KEY, C2S_IV).seal(b"pay 10 coins")
    for index in range(len(record)):
        for bit in range(8):
            with pytest.raises(RecordError):
                RecordOpener(C2S_KEY, C2S_IV).open(flip(record, index, 1 << bit))


def test_replayed_record_fails() -> None:
    client, server = pair()
    record = client.seal(b"transfer")
    assert server.open(record) == b"transfer"
    with pytest.raises(RecordError):
        server.open(record)


def test_reordered_records_fail() -> None:
    client, server = pair()
    first, second = client.seal(b"one"), client.seal(b"two")
    with pytest.raises(RecordError):
        server.open(second)
    with pytest.raises(RecordError):
        server.open(first)


def test_dropped_record_fails() -> None:
    client, server = pair()
    client.seal(b"lost on the way")
    with pytest.raises(RecordError):
        server.open(client.seal(b"arrives"))


@pytest.mark.parametrize("cut", [1, 15, 16, 17])
def test_truncated_record_fails(cut: int) -> None:
    client, server = pair()
    record = client.seal(b"sixteen bytes!!!")
    with pytest.raises(RecordError):
        server.open(record[:-cut])


def test_extended_record_fails() -> None:
    client, server = pair()
    with pytest.raises(RecordError):
        server.open(client.seal(b"data") + b"\x00")


def test_reflected_record_fails() -> None:
    """A record sent back to its own sender does not open: directions have separate keys."""
    client, _ = pair()
    record = client.seal(b"echo")
    with pytest.raises(RecordError):
        client.open(record)


def test_record_from_another_session_fails() -> None:
    client, _ = pair()
    other = SecureChannel(SessionKeys(os.urandom(32), os.urandom(12), os.urandom(32), os.urandom(12), b""))
    with pytest.raises(RecordError):
        other.open(client.seal(b"hi"))


def test_failure_is_permanent() -> None:
    """After one bad record even valid records, in order, are refused."""
    client, server = pair()
    good = [client.seal(f"{i}".encode()) for i in range(3)]
    assert server.open(good[0]) == b"0"
    with pytest.raises(RecordError):
        server.open(b"\x17" + bytes(40))
    for record in good[1:]:
        with pytest.raises(RecordError, match="already failed"):
            server.open(record)


@pytest.mark.parametrize("record", [b"", b"\x17", b"\x17" + bytes(15)])
def test_too_short_records_fail(record: bytes) -> None:
    assert len(record) < MIN_RECORD_LEN
    with pytest.raises(RecordError):
        RecordOpener(C2S_KEY, C2S_IV).open(record)


def test_wrong_record_type_fails() -> None:
    record = RecordSealer(C2S_KEY, C2S_IV).seal(b"x")
    with pytest.raises(RecordError, match="record type"):
        RecordOpener(C2S_KEY, C2S_IV).open(b"\x18" + record[1:])


def test_size_limits() -> None:
    """The largest envelope fits in a record and in a frame; one byte more is refused."""
    assert MAX_RECORD_LEN == 1 + MAX_ENVELOPE_BYTES + 16 <= MAX_FRAME_BYTES
    client, server = pair()
    biggest = bytes(MAX_ENVELOPE_BYTES)
    record = client.seal(biggest)
    assert len(record) == MAX_RECORD_LEN
    assert server.open(record) == biggest
    with pytest.raises(RecordError):
        client.seal(biggest + b"\x00")
    with pytest.raises(RecordError, match="outside the allowed size"):
        server.open(record + b"\x00")


def test_sequence_numbers_never_wrap() -> None:
    """At 2^64 records a direction is exhausted instead of reusing nonce 0."""
    sealer = RecordSealer(C2S_KEY, C2S_IV)
    sealer._sequence = MAX_SEQUENCE  # white box: 2^64 records are not practical
    last = sealer.seal(b"last")
    with pytest.raises(RecordError, match="exhausted"):
        sealer.seal(b"one too many")
    opener = RecordOpener(C2S_KEY, C2S_IV)
    opener._sequence = MAX_SEQUENCE
    assert opener.open(last) == b"last"
    with pytest.raises(RecordError, match="exhausted"):
        opener.open(last)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_record_error(data: bytes) -> None:
    opener = RecordOpener(C2S_KEY, C2S_IV)
    with pytest.raises(RecordError):
        opener.open(data)
    with pytest.raises(RecordError):
        opener.open(RecordSealer(C2S_KEY, C2S_IV).seal(b"valid, but too late"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_any_sequence_of_plaintexts_round_trips(plaintexts: list[bytes]) -> None:
    client, server = pair()
    for plaintext in plaintexts:
        assert server.open(client.seal(plaintext)) == plaintext


def test_a_key_protects_a_bounded_number_of_bytes() -> None:
    """Review I2: past its byte limit a sealer refuses (the session must end and a new
    handshake make new keys), and an opener refuses a peer that goes on regardless."""
    sealer = RecordSealer(C2S_KEY, C2S_IV, max_bytes=100)
    opener = RecordOpener(C2S_KEY, C2S_IV, max_bytes=100)
    records = [sealer.seal(b"x" * 40), sealer.seal(b"y" * 60)]
    assert [opener.open(r) for r in records] == [b"x" * 40, b"y" * 60]
    with pytest.raises(RecordError, match="start a new session"):
        sealer.seal(b"z")
    with pytest.raises(RecordError, match="start a new session"):
        sealer.seal(b"")  # stays refused
    unlimited = RecordSealer(C2S_KEY, C2S_IV)
    strict = RecordOpener(C2S_KEY, C2S_IV, max_bytes=100)
    assert strict.open(unlimited.seal(b"a" * 60)) == b"a" * 60
    with pytest.raises(RecordError, match="key limit"):
        strict.open(unlimited.seal(b"b" * 60))
    with pytest.raises(RecordError, match="already failed"):
        strict.open(unlimited.seal(b"c"))
