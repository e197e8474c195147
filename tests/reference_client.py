"""An independent client for the chat protocol, written from PROTOCOL.md alone.

All cryptography comes from pycryptodome; nothing is imported from the ``chat``
package. It has a sans-I/O part (``ClientHandshake``, ``RecordLayer``,
``encode_envelope``/``decode_envelope``, ``Session``) and an asyncio part
(``Connection``) that talks to a real server over a WebSocket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Callable
from typing import Any

from Crypto.Cipher import AES, PKCS1_OAEP
from Crypto.Hash import HMAC, SHA256
from Crypto.Protocol.DH import import_x25519_private_key, import_x25519_public_key, key_agreement
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import RSA
from Crypto.Random import get_random_bytes
from Crypto.Signature.pss import MGF1

# --- constants (PROTOCOL.md sections 2, 4 and 5) --------------------------------------

VERSION = 1
SUITE = 1
CLIENT_HELLO, SERVER_HELLO, CLIENT_FINISHED, RESUME_HELLO, HANDSHAKE_ERROR = 0x01, 0x02, 0x03, 0x04, 0x0F
RECORD_HEADER = b"\x17"
TAG_LEN = 16
SERVER_HELLO_LEN = 101
SERVER_HELLO_HEAD_LEN = 69
MAX_HANDSHAKE = 2048
MAX_FRAME = (1 << 20) + 64
MAX_ENVELOPE = 1 << 20
MAX_HEADER = 64 * 1024
MIN_RECORD = 1 + TAG_LEN
MAX_RECORD = 1 + MAX_ENVELOPE + TAG_LEN
INFO = b"chat/1 key expansion"
RESUMED_INFO = b"chat/1 resumed key expansion"
RESUMPTION_INFO = b"chat/1 resumption"
BINDER_INFO = b"chat/1 resume binder"
MAX_TICKET = 256
ERROR_NAMES = {
    1: "MALFORMED",
    2: "VERSION_MISMATCH",
    3: "UNSUPPORTED_SUITE",
    4: "UNKNOWN_SERVER_KEY",
    5: "DECRYPT_FAILED",
    6: "CONFIRMATION_FAILED",
    7: "TIMEOUT",
    8: "SERVER_BUSY",
    9: "RESUME_REJECTED",
}

RandomSource = Callable[[int], bytes]


class ProtocolFailure(Exception):
    """The session cannot continue. ``code`` is a HandshakeError name where one applies."""

    def __init__(self, code: str, message: str, *, remote: bool = False, peer_version: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.remote = remote
        self.peer_version = peer_version


class RecordFailure(ProtocolFailure):
    """A record did not open; the session is over."""

    def __init__(self, message: str) -> None:
        super().__init__("RECORD", message)


# --- keys and fingerprints ------------------------------------------------------------


def load_public_key(pem: bytes | str) -> RSA.RsaKey:
    return RSA.import_key(pem)


def fingerprint_bytes(key: RSA.RsaKey) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo (PROTOCOL.md 2.1)."""
    return SHA256.new(key.public_key().export_key(format="DER")).digest()


def fingerprint_text(key: RSA.RsaKey) -> str:
    return "SHA256:" + base64.b64encode(fingerprint_bytes(key)).decode("ascii").rstrip("=")


def oaep(key: RSA.RsaKey) -> Any:
    """RSA-OAEP with SHA-256, MGF1-SHA-256 and an empty label."""
    return PKCS1_OAEP.new(key, hashAlgo=SHA256, mgfunc=lambda x, y: MGF1(x, y, SHA256))


def sha256(data: bytes) -> bytes:
    return SHA256.new(data).digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return HMAC.new(key, data, digestmod=SHA256).digest()


def x25519_public(private: bytes) -> bytes:
    return import_x25519_private_key(private).public_key().export_key(format="raw")


def x25519(private: bytes, peer_public: bytes) -> bytes:
    """X25519 shared secret; refuses low-order peer points (an all-zero result)."""
    try:
        shared = key_agreement(
            eph_priv=import_x25519_private_key(private),
            eph_pub=import_x25519_public_key(peer_public),
            kdf=lambda z: bytes(z),
        )
    except ValueError:
        raise ProtocolFailure("MALFORMED", "invalid X25519 public key") from None
    if shared == bytes(32):
        raise ProtocolFailure("MALFORMED", "X25519 gave an all-zero shared secret")
    return shared


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869's Expand: T(i) = HMAC(PRK, T(i-1) || info || i)."""
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes([counter]))
        out += block
        counter += 1
    return out[:length]


def derive(x25519_shared: bytes, secret: bytes, th1: bytes, info: bytes = INFO) -> dict[str, bytes]:
    """HKDF-SHA256 key expansion split as in PROTOCOL.md section 3, and (step 8) the
    resumption secret from the same PRK. ``secret`` is the RSA-wrapped secret, or for a
    resumed handshake the ticket's resumption secret (with ``RESUMED_INFO``)."""
    okm = HKDF(x25519_shared + secret, 152, th1, SHA256, context=info)
    assert isinstance(okm, bytes)
    prk = hmac_sha256(th1, x25519_shared + secret)
    return {
        "c2s_key": okm[0:32],
        "s2c_key": okm[32:64],
        "c2s_iv": okm[64:76],
        "s2c_iv": okm[76:88],
        "server_confirm_key": okm[88:120],
        "client_confirm_key": okm[120:152],
        "resumption_secret": hkdf_expand(prk, RESUMPTION_INFO, 32),
    }


def parse_handshake_error(message: bytes) -> ProtocolFailure:
    if len(message) < 6:
        return ProtocolFailure("MALFORMED", "short HandshakeError", remote=True)
    code, version, length = struct.unpack_from(">BHH", message, 1)
    reason = message[6 : 6 + length].decode("utf-8", "replace")
    return ProtocolFailure(ERROR_NAMES.get(code, "MALFORMED"), reason, remote=True, peer_version=version)


def handshake_error(code: int, reason: str) -> bytes:
    data = reason.encode("utf-8")[:512]
    return struct.pack(">BBHH", HANDSHAKE_ERROR, code, VERSION, len(data)) + data


# --- records --------------------------------------------------------------------------


class RecordLayer:
    """One direction of AES-256-GCM records: nonce = iv XOR seq, AAD = 0x17."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        self.key = key
        self.iv = iv
        self.sequence = 0
        self.broken = False

    def _nonce(self) -> bytes:
        return (int.from_bytes(self.iv, "big") ^ self.sequence).to_bytes(12, "big")

    def seal(self, plaintext: bytes) -> bytes:
        if len(plaintext) > MAX_ENVELOPE:
            raise ValueError("plaintext too large")
        cipher = AES.new(self.key, AES.MODE_GCM, nonce=self._nonce(), mac_len=TAG_LEN)
        cipher.update(RECORD_HEADER)
        ciphertext, tag = cipher.encrypt_and_digest(plaintext)
        self.sequence += 1
        return RECORD_HEADER + ciphertext + tag

    def open(self, record: bytes) -> bytes:
        if self.broken:
            raise RecordFailure("the channel already failed")
        try:
            if not MIN_RECORD <= len(record) <= MAX_RECORD or record[:1] != RECORD_HEADER:
                raise ValueError("bad record size or header")
            cipher = AES.new(self.key, AES.MODE_GCM, nonce=self._nonce(), mac_len=TAG_LEN)
            cipher.update(RECORD_HEADER)
            plaintext = cipher.decrypt_and_verify(record[1:-TAG_LEN], record[-TAG_LEN:])
        except ValueError as exc:
            self.broken = True
            raise RecordFailure(str(exc)) from None
        self.sequence += 1
        return plaintext


# --- envelopes ------------------------------------------------------------------------


def encode_envelope(envelope: dict[str, Any], body: bytes = b"") -> bytes:
    """``u32 header length || UTF-8 JSON header || body``; ``type`` first."""
    header = {"type": envelope["type"], **{k: v for k, v in envelope.items() if k != "type"}}
    data = json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(data) > MAX_HEADER or 4 + len(data) + len(body) > MAX_ENVELOPE:
        raise ValueError("envelope too large")
    return struct.pack(">I", len(data)) + data + body


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def decode_envelope(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The header as a dict (with ``type``) and the body."""
    if len(data) < 4:
        raise ValueError("short envelope")
    (length,) = struct.unpack_from(">I", data)
    if length > MAX_HEADER or length > len(data) - 4:
        raise ValueError("bad header length")
    header = json.loads(data[4 : 4 + length].decode("utf-8"), object_pairs_hook=_no_duplicates)
    if type(header) is not dict or type(header.get("type")) is not str:
        raise ValueError("header is not an object with a type")
    return header, data[4 + length :]


# --- the client handshake (sans-I/O) --------------------------------------------------


class ClientHandshake:
    """``client_hello()`` then ``receive_server_hello(msg)`` -> ClientFinished; then
    ``session`` holds the record layers. ``wrap`` replaces RSA-OAEP in test vectors.
    With ``ticket`` (ticket bytes, resumption secret) the first message is a ResumeHello
    (PROTOCOL.md 2.7)."""

    def __init__(
        self,
        server_key: RSA.RsaKey,
        *,
        random_source: RandomSource = get_random_bytes,
        wrap: Callable[[bytes], bytes] | None = None,
        ticket: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.server_key = server_key
        self.random = random_source
        self.wrap = wrap or oaep(server_key).encrypt
        self.ticket = ticket
        self.client_hello_bytes = b""
        self._ephemeral = b""
        self._rsa_secret = b""
        self.keys: dict[str, bytes] = {}
        self.th1 = b""
        self.th2 = b""
        self.session: Session | None = None

    def client_hello(self) -> bytes:
        client_random = self.random(32)
        self._ephemeral = self.random(32)
        if self.ticket is not None:
            ticket, self._rsa_secret = self.ticket
            if not 0 < len(ticket) <= MAX_TICKET:
                raise ValueError("a ticket is 1 to 256 bytes")
            head = (
                struct.pack(">BHH", RESUME_HELLO, VERSION, SUITE)
                + client_random
                + x25519_public(self._ephemeral)
                + fingerprint_bytes(self.server_key)
                + struct.pack(">H", len(ticket))
                + ticket
            )
            binder_key = hkdf_expand(self._rsa_secret, BINDER_INFO, 32)
            self.client_hello_bytes = head + hmac_sha256(binder_key, head)
            return self.client_hello_bytes
        self._rsa_secret = self.random(32)
        wrapped = self.wrap(self._rsa_secret)
        k = (self.server_key.n.bit_length() + 7) // 8
        if len(wrapped) != k:
            raise ValueError("wrapped secret must be as long as the modulus")
        self.client_hello_bytes = (
            struct.pack(">BHH", CLIENT_HELLO, VERSION, SUITE)
            + client_random
            + x25519_public(self._ephemeral)
            + fingerprint_bytes(self.server_key)
            + struct.pack(">H", len(wrapped))
            + wrapped
        )
        return self.client_hello_bytes

    def receive_server_hello(self, message: bytes) -> bytes:
        if not self._ephemeral:
            raise ProtocolFailure("MALFORMED", "no ClientHello was sent")
        if len(message) > MAX_HANDSHAKE:
            raise ProtocolFailure("MALFORMED", "handshake message too large")
        if message[:1] == bytes([HANDSHAKE_ERROR]):
            raise parse_handshake_error(message)
        if len(message) != SERVER_HELLO_LEN or message[0] != SERVER_HELLO:
            raise ProtocolFailure("MALFORMED", "not a ServerHello")
        version, suite = struct.unpack_from(">HH", message, 1)
        if version != VERSION:
            raise ProtocolFailure(
                "VERSION_MISMATCH", f"server speaks version {version}", peer_version=version
            )
        if suite != SUITE:
            raise ProtocolFailure("UNSUPPORTED_SUITE", f"server chose suite {suite}")
        server_public = message[37:69]
        shared = x25519(self._ephemeral, server_public)
        self.th1 = sha256(self.client_hello_bytes + message[:SERVER_HELLO_HEAD_LEN])
        info = INFO if self.ticket is None else RESUMED_INFO
        self.keys = derive(shared, self._rsa_secret, self.th1, info)
        expected = hmac_sha256(self.keys["server_confirm_key"], self.th1)
        if not _equal(expected, message[SERVER_HELLO_HEAD_LEN:]):
            raise ProtocolFailure("CONFIRMATION_FAILED", "the server did not prove it holds the private key")
        self.th2 = sha256(self.client_hello_bytes + message)
        finished = bytes([CLIENT_FINISHED]) + hmac_sha256(self.keys["client_confirm_key"], self.th2)
        self.session = Session(
            RecordLayer(self.keys["c2s_key"], self.keys["c2s_iv"]),
            RecordLayer(self.keys["s2c_key"], self.keys["s2c_iv"]),
        )
        self._ephemeral = b""
        self._rsa_secret = b""
        return finished


def _equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison via HMAC.verify (as pycryptodome recommends)."""
    mac = HMAC.new(b"compare", a, digestmod=SHA256)
    try:
        mac.verify(HMAC.new(b"compare", b, digestmod=SHA256).digest())
    except ValueError:
        return False
    return True


class Session:
    """An established session: seal requests, open events (dicts)."""

    def __init__(self, send: RecordLayer, receive: RecordLayer) -> None:
        self.send = send
        self.receive = receive

    def seal(self, envelope: dict[str, Any]) -> bytes:
        return self.send.seal(encode_envelope(envelope))

    def open(self, record: bytes) -> dict[str, Any]:
        header, body = decode_envelope(self.receive.open(record))
        if body:
            header["_body"] = body
        return header


# --- asyncio over a real WebSocket ----------------------------------------------------


class Connection:
    """A reference client connected to a real server."""

    def __init__(
        self, websocket: Any, session: Session, fingerprint: str, *, resumption_secret: bytes = b"",
        resumed: bool = False,
    ) -> None:  # fmt: skip
        self.websocket = websocket
        self.session = session
        self.fingerprint = fingerprint
        self.resumption_secret = resumption_secret
        #: Whether the handshake resumed with a ticket (PROTOCOL.md 2.7).
        self.resumed = resumed
        self._next_rid = 1
        self.pending: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls, host: str, port: int, server_key: RSA.RsaKey, *, timeout: float = 10.0,
        ticket: tuple[bytes, bytes] | None = None,
    ) -> Connection:  # fmt: skip
        """Connect and complete the handshake; with ``ticket`` (bytes, resumption secret)
        a resumed one, or a full one on the same connection after RESUME_REJECTED."""
        from websockets.asyncio.client import connect

        websocket = await connect(f"ws://{host}:{port}/", max_size=MAX_FRAME, open_timeout=timeout)
        try:
            handshake = ClientHandshake(server_key, ticket=ticket)
            try:
                await cls._hellos(websocket, handshake, timeout)
            except ProtocolFailure as failure:
                if ticket is None or failure.code != "RESUME_REJECTED":
                    raise
                handshake = ClientHandshake(server_key)
                await cls._hellos(websocket, handshake, timeout)
        except BaseException:
            await websocket.close()
            raise
        assert handshake.session is not None
        return cls(
            websocket, handshake.session, fingerprint_text(server_key),
            resumption_secret=handshake.keys["resumption_secret"], resumed=handshake.ticket is not None,
        )  # fmt: skip

    @staticmethod
    async def _hellos(websocket: Any, handshake: ClientHandshake, timeout: float) -> None:
        await websocket.send(handshake.client_hello())
        reply = await asyncio.wait_for(websocket.recv(), timeout)
        if not isinstance(reply, bytes):
            raise ProtocolFailure("MALFORMED", "text message during the handshake")
        await websocket.send(handshake.receive_server_hello(reply))

    def ticket(self) -> tuple[bytes, bytes] | None:
        """The session ticket the server sent (with the feature ``ticket``, before the
        welcome), with this session's resumption secret: what the next connect offers."""
        for event in self.pending:
            if event.get("type") == "ticket":
                text = event["ticket"]
                return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), self.resumption_secret
        return None

    async def send(self, envelope: dict[str, Any]) -> None:
        await self.websocket.send(self.session.seal(envelope))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next event (notifications buffered by ``request`` first)."""
        if self.pending:
            return self.pending.pop(0)
        return await self._recv(timeout)

    async def _recv(self, timeout: float) -> dict[str, Any]:
        message = await asyncio.wait_for(self.websocket.recv(), timeout)
        if not isinstance(message, bytes):
            raise ProtocolFailure("MALFORMED", "text message after the handshake")
        return self.session.open(message)

    async def request(self, envelope: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send with a fresh ``rid``; return the reply, keeping other events for ``recv``."""
        rid = self._next_rid
        self._next_rid += 1
        await self.send({**envelope, "rid": rid})
        while True:
            event = await self._recv(timeout)
            if event.get("re") == rid:
                return event
            self.pending.append(event)

    async def login(
        self, name: str, password: str | None = None, features: list[str] | None = None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"type": "login", "name": name}
        if password is not None:
            request["password"] = password
        if features is not None:
            request["features"] = features
        return await self.request(request)

    async def close(self) -> None:
        await self.websocket.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
