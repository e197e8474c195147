"""The key schedule (PROTOCOL.md section 3): HKDF-SHA256 over the X25519 secret and the
RSA-wrapped secret (or, resumed, a ticket's resumption secret), salted with the
transcript hash, split into the session's directional keys and confirm keys, plus the
resumption secret a session ticket seals."""

from __future__ import annotations

import hmac
from dataclasses import dataclass


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869) with SHA-256: small enough to write out, and cheaper than
    building a KDF object for each of the few blocks a handshake needs."""
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
        counter += 1
    return out[:length]


KEY_EXPANSION_INFO = b"chat/1 key expansion"
#: The label of a resumed handshake's key expansion: never the keys of a full one.
RESUMED_KEY_EXPANSION_INFO = b"chat/1 resumed key expansion"
#: The label of the resumption secret both sides derive and never send (tickets.py).
RESUMPTION_INFO = b"chat/1 resumption"
KEY_EXPANSION_LEN = 32 + 32 + 12 + 12 + 32 + 32


@dataclass(frozen=True)
class SessionKeys:
    """Directional keys for one side. ``send_*`` protect what this side sends."""

    send_key: bytes
    send_iv: bytes
    recv_key: bytes
    recv_iv: bytes
    transcript_hash: bytes
    #: For a session ticket (tickets.py); never sent.
    resumption_secret: bytes = b""


@dataclass(frozen=True)
class KeySchedule:
    """Everything HKDF yields for one session (PROTOCOL.md, "Key derivation")."""

    c2s_key: bytes
    s2c_key: bytes
    c2s_iv: bytes
    s2c_iv: bytes
    server_confirm_key: bytes
    client_confirm_key: bytes
    #: ``HKDF-Expand(PRK, "chat/1 resumption", 32)``: what a ticket of this session seals.
    resumption_secret: bytes

    @classmethod
    def derive(
        cls, x25519_shared: bytes, secret: bytes, transcript_hash: bytes, info: bytes = KEY_EXPANSION_INFO
    ) -> KeySchedule:
        """HKDF-SHA256 with salt ``transcript_hash`` and IKM ``x25519_shared || secret``
        (the RSA-wrapped secret, or a resumed session's resumption secret, whose
        expansion has its own ``info``)."""
        prk = hmac.digest(transcript_hash, x25519_shared + secret, "sha256")
        okm = hkdf_expand(prk, info, KEY_EXPANSION_LEN)
        resumption = hkdf_expand(prk, RESUMPTION_INFO, 32)
        return cls(okm[0:32], okm[32:64], okm[64:76], okm[76:88], okm[88:120], okm[120:152], resumption)

    def client_keys(self, transcript_hash: bytes) -> SessionKeys:
        return SessionKeys(
            self.c2s_key, self.c2s_iv, self.s2c_key, self.s2c_iv, transcript_hash, self.resumption_secret
        )

    def server_keys(self, transcript_hash: bytes) -> SessionKeys:
        return SessionKeys(
            self.s2c_key, self.s2c_iv, self.c2s_key, self.c2s_iv, transcript_hash, self.resumption_secret
        )
