"""Session tickets (PROTOCOL.md section 2.7): what lets a reconnecting client skip the
server's RSA decryption.

After a full handshake both sides hold a 32-byte *resumption secret* (section 3) that is
never sent. A server seals it, with the ticket's issue and expiry times and its own key's
fingerprint, under a *ticket key* only it can derive: the ticket is opaque to the client,
which keeps it with the secret and offers it in a ResumeHello on its next connection.

The ticket key comes from the server's RSA private key (HKDF over the private exponent,
salted with the key's fingerprint), so every process and node holding that key opens
every ticket any of them issued, and a new server key makes every old ticket worthless.
Tickets live in the client's memory only and are good until they expire; the server keeps
no state for them.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chat.keys import fingerprint_bytes
from chat.protocol.key_schedule import hkdf_expand

#: The first byte of every ticket this version issues (also its AAD).
TICKET_FORMAT = 0x01
TICKET_NONCE_LEN = 12
#: issued (u64 seconds since the epoch), expires (u64), fingerprint, resumption secret.
_CONTENTS = struct.Struct(">QQ32s32s")
TICKET_TAG_LEN = 16
#: Bytes of a ticket as this version seals it (109).
TICKET_LEN = 1 + TICKET_NONCE_LEN + _CONTENTS.size + TICKET_TAG_LEN
#: The largest ticket a ResumeHello may carry (room for other servers' formats).
MAX_TICKET_BYTES = 256
#: The longest lifetime a server may give its tickets: 7 days, as TLS 1.3 allows.
MAX_TICKET_LIFETIME = 7 * 86400
#: The server's default (``--ticket-lifetime``).
DEFAULT_TICKET_LIFETIME = 3600

TICKET_KEY_INFO = b"chat/1 ticket key"


class TicketRejected(Exception):
    """A ticket this server will not resume from; the message says why (for the log,
    and for the HandshakeError's reason)."""


@dataclass(frozen=True)
class TicketContents:
    """What a ticket holds once opened."""

    issued: int
    expires: int
    fingerprint: bytes
    secret: bytes


def ticket_key(private_key: rsa.RSAPrivateKey, fingerprint: bytes) -> bytes:
    """``HKDF-SHA256(salt = fingerprint, IKM = d, info = "chat/1 ticket key", L = 32)``
    where ``d`` is the private exponent as a big-endian integer of the modulus's length:
    the same for every encoding of the same key (PKCS#1 or PKCS#8 PEM)."""
    numbers = private_key.private_numbers()
    size = (numbers.public_numbers.n.bit_length() + 7) // 8
    prk = hmac.digest(fingerprint, numbers.d.to_bytes(size, "big"), "sha256")
    return hkdf_expand(prk, TICKET_KEY_INFO, 32)


class TicketSealer:
    """Seals and opens one server key's tickets (PROTOCOL.md 2.7)."""

    def __init__(self, key: bytes, fingerprint: bytes) -> None:
        self._aead = AESGCM(key)
        self.fingerprint = fingerprint

    def seal(self, secret: bytes, issued: int, expires: int, nonce: bytes) -> bytes:
        """``0x01 || nonce || AES-256-GCM(key, nonce, contents, aad = 0x01)``."""
        head = bytes([TICKET_FORMAT]) + nonce
        contents = _CONTENTS.pack(issued, expires, self.fingerprint, secret)
        return head + self._aead.encrypt(nonce, contents, head[:1])

    def open(self, ticket: bytes, now: float, lifetime: float) -> TicketContents:
        """The ticket's contents if this server issued it for its current key and it is
        still good at ``now`` (and younger than ``lifetime``, which may have been lowered
        since); otherwise TicketRejected."""
        if len(ticket) != TICKET_LEN or ticket[0] != TICKET_FORMAT:
            raise TicketRejected("not a ticket of this server")
        nonce = ticket[1 : 1 + TICKET_NONCE_LEN]
        try:
            plain = self._aead.decrypt(nonce, ticket[1 + TICKET_NONCE_LEN :], ticket[:1])
        except InvalidTag:
            raise TicketRejected("the ticket does not open with this server's key") from None
        contents = TicketContents(*_CONTENTS.unpack(plain))
        if not hmac.compare_digest(contents.fingerprint, self.fingerprint):
            raise TicketRejected("the ticket is for another server key")
        if now >= contents.expires or now >= contents.issued + lifetime:
            raise TicketRejected("the ticket has expired")
        return contents


_sealers: dict[int, tuple[rsa.RSAPrivateKey, TicketSealer]] = {}


def sealer_for(private_key: rsa.RSAPrivateKey) -> TicketSealer:
    """The key's sealer (with its fingerprint), derived once per key object rather than
    per connection (the key is held, so its id is not reused while cached; a process has
    one key, tests a few)."""
    entry = _sealers.get(id(private_key))
    if entry is not None and entry[0] is private_key:
        return entry[1]
    if len(_sealers) >= 16:
        _sealers.clear()
    fingerprint = fingerprint_bytes(private_key.public_key())
    sealer = TicketSealer(ticket_key(private_key, fingerprint), fingerprint)
    _sealers[id(private_key)] = (private_key, sealer)
    return sealer


@dataclass(frozen=True)
class ClientTicket:
    """What a client keeps to resume (in memory only): the server's opaque ticket, the
    resumption secret of the session it came from, the fingerprint of the key it is for,
    and when it stops being worth offering (the client's own monotonic clock)."""

    ticket: bytes
    secret: bytes
    fingerprint: bytes
    good_until: float


class TicketWallet:
    """A client's tickets, one per server key, each offered once: a ticket taken for a
    connection is gone whether the resumption works or not (a resumed session brings a
    new one). Never written to disk."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tickets: dict[bytes, ClientTicket] = {}

    def keep(self, ticket: bytes, secret: bytes, fingerprint: bytes, lifetime: float) -> None:
        """Remember the newest ticket for ``fingerprint``, good a little less long than
        the server said (a tenth of its lifetime, at most a minute, so it is not offered
        just as it expires)."""
        if not secret or not ticket:
            return
        until = self._clock() + lifetime - min(60.0, lifetime / 10)
        self._tickets[fingerprint] = ClientTicket(ticket, secret, fingerprint, until)

    def take(self, fingerprint: bytes) -> ClientTicket | None:
        """The ticket to offer for this key, if one is still good; it is no longer kept."""
        ticket = self._tickets.pop(fingerprint, None)
        if ticket is None or self._clock() >= ticket.good_until:
            return None
        return ticket

    def __len__(self) -> int:
        return len(self._tickets)


def binder_key(secret: bytes) -> bytes:
    """``HKDF-Expand(resumption_secret, "chat/1 resume binder", 32)`` (section 2.7)."""
    return hkdf_expand(secret, b"chat/1 resume binder", 32)


def binder(secret: bytes, hello_without_binder: bytes) -> bytes:
    return hmac.digest(binder_key(secret), hello_without_binder, hashlib.sha256)
