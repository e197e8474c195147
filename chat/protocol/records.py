"""The record layer: AES-256-GCM with per-direction keys and implicit counter nonces.

A record is ``0x17 || ciphertext || tag``. The nonce is the direction's 12-byte IV XOR
the record's sequence number (big-endian, right-aligned); sequence numbers start at 0 and
are never sent. A receiver always uses the next number it expects, so a replayed,
reordered, dropped, truncated or altered record fails authentication, and the channel is
then closed for good.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chat.protocol.errors import RecordError
from chat.protocol.handshake import SessionKeys
from chat.protocol.limits import MAX_ENVELOPE_BYTES

RECORD_TYPE = 0x17
RECORD_HEADER = bytes([RECORD_TYPE])
TAG_LEN = 16
MAX_SEQUENCE = (1 << 64) - 1
#: Plaintext bytes one key may protect in one direction, after which the session must
#: end (the client reconnects with a new handshake). AES-GCM's margin at TLS 1.3's
#: record limits is about 2^38 bytes; this stays well inside it.
MAX_BYTES_PER_KEY = 1 << 36
#: Smallest possible record: header and tag around an empty plaintext.
MIN_RECORD_LEN = 1 + TAG_LEN
MAX_RECORD_LEN = 1 + MAX_ENVELOPE_BYTES + TAG_LEN


def _nonce(iv_int: int, sequence: int) -> bytes:
    return (iv_int ^ sequence).to_bytes(12, "big")


class RecordSealer:
    """Encrypts this side's outgoing records in order."""

    __slots__ = ("_aead", "_iv", "_left", "_sequence")

    def __init__(self, key: bytes, iv: bytes, max_bytes: int = MAX_BYTES_PER_KEY) -> None:
        self._aead = AESGCM(key)
        self._iv = int.from_bytes(iv, "big")
        self._sequence = 0
        self._left = max_bytes

    def seal(self, plaintext: bytes) -> bytes:
        if len(plaintext) > MAX_ENVELOPE_BYTES:
            raise RecordError(f"plaintext of {len(plaintext)} bytes exceeds {MAX_ENVELOPE_BYTES}")
        if self._sequence > MAX_SEQUENCE:
            raise RecordError("sequence number exhausted; start a new session")
        self._left -= len(plaintext)
        if self._left < 0:
            self._left = -1
            raise RecordError("this session's key has protected all it may; start a new session")
        nonce = _nonce(self._iv, self._sequence)
        self._sequence += 1
        return RECORD_HEADER + self._aead.encrypt(nonce, plaintext, RECORD_HEADER)


class RecordOpener:
    """Decrypts the peer's records, accepting only the next one in sequence."""

    __slots__ = ("_aead", "_broken", "_iv", "_left", "_sequence")

    def __init__(self, key: bytes, iv: bytes, max_bytes: int = MAX_BYTES_PER_KEY) -> None:
        self._aead = AESGCM(key)
        self._iv = int.from_bytes(iv, "big")
        self._sequence = 0
        self._broken = False
        self._left = max_bytes

    def open(self, record: bytes) -> bytes:
        if self._broken:
            raise RecordError("channel already failed")
        if not MIN_RECORD_LEN <= len(record) <= MAX_RECORD_LEN:
            self._broken = True
            raise RecordError(f"record of {len(record)} bytes is outside the allowed size")
        if record[0] != RECORD_TYPE:
            self._broken = True
            raise RecordError(f"unexpected record type 0x{record[0]:02x}")
        if self._sequence > MAX_SEQUENCE:
            self._broken = True
            raise RecordError("sequence number exhausted")
        try:
            plaintext = self._aead.decrypt(
                _nonce(self._iv, self._sequence), memoryview(record)[1:], RECORD_HEADER
            )
        except InvalidTag:
            self._broken = True
            raise RecordError(
                "record failed authentication (altered, replayed, reordered or dropped)"
            ) from None
        self._left -= len(plaintext)
        if self._left < 0:
            self._broken = True
            raise RecordError("the peer went on past this session's key limit")
        self._sequence += 1
        return plaintext


class SecureChannel:
    """Both directions of one established session.

    ``seal(plaintext) -> record`` and ``open(record) -> plaintext`` are the two
    directions' own methods (bound once here: one call less per record).
    """

    __slots__ = ("open", "seal")

    def __init__(self, keys: SessionKeys) -> None:
        self.seal: Callable[[bytes], bytes] = RecordSealer(keys.send_key, keys.send_iv).seal
        self.open: Callable[[bytes], bytes] = RecordOpener(keys.recv_key, keys.recv_iv).open
