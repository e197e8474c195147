"""The chat protocol on top of :mod:`bench.wsclient`, trimmed for load generation.

The handshake and record layer are the project's own sans-I/O classes (so the client
side is exactly the protocol); requests are encoded with the project's codec. Incoming
events are decoded with a lean parser (length prefix + ``json.loads``) instead of the full
validating decoder: the server is what is measured, not the client's validation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from bench import wsclient
from chat.protocol.envelope import encode_request
from chat.protocol.handshake import ClientHandshake
from chat.protocol.records import SecureChannel

EventHandler = Callable[[dict[str, Any], bytes], None]


def parse_event(plaintext: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, body) of one decrypted envelope."""
    n = int.from_bytes(plaintext[:4], "big")
    return json.loads(plaintext[4 : 4 + n]), plaintext[4 + n :]


class ChatConnection:
    """One established, optionally logged-in, chat session."""

    def __init__(self, ws: wsclient.RawWebSocket, channel: SecureChannel) -> None:
        self.ws = ws
        self.channel = channel
        self._rid = 0

    def send(self, kind: str, body: bytes = b"", *, rid: bool = True, **fields: Any) -> None:
        """Encode, seal and send one request (numbered unless ``rid`` is False)."""
        if rid:
            self._rid += 1
            fields["rid"] = self._rid
        self.ws.send(self.channel.seal(encode_request(kind, body, **fields)))

    async def recv_event(self) -> tuple[dict[str, Any], bytes]:
        """Next event, while the connection still uses its internal queue."""
        return parse_event(self.channel.open(await self.ws.recv()))

    async def expect(self, kind: str) -> dict[str, Any]:
        """Read events until one of type ``kind`` (errors raise)."""
        while True:
            header, _ = await self.recv_event()
            if header["type"] == kind:
                return header
            if header["type"] == "error":
                raise RuntimeError(f"server error while waiting for {kind}: {header}")

    def on_event(self, handler: EventHandler) -> None:
        """Decrypt every further record and pass (header, body) to ``handler``,
        starting with the records still queued (in order: the record layer's sequence
        numbers must advance over every record)."""
        open_record = self.channel.open
        for record in self.ws.take_queued():
            handler(*parse_event(open_record(record)))

        def on_message(record: bytes) -> None:
            header, body = parse_event(open_record(record))
            handler(header, body)

        self.ws.on_message = on_message

    def count_only(self, counter: Callable[[bytes], None]) -> None:
        """Do not decrypt further records; just pass each raw record to ``counter``
        (for idle clients, which must keep reading but need not look)."""
        self.ws.on_message = counter

    def close(self) -> None:
        self.ws.close()


async def connect(
    host: str, port: int, public_key: rsa.RSAPublicKey, name: str | None = None, timeout: float = 60.0
) -> ChatConnection:
    """Connect, run the handshake, and log in as ``name`` if given."""
    ws = await wsclient.connect(host, port, timeout=timeout)
    try:
        handshake = ClientHandshake(public_key)
        ws.send(handshake.client_hello())
        ws.send(handshake.receive_server_hello(await ws.recv()))
        assert handshake.keys is not None
        conn = ChatConnection(ws, SecureChannel(handshake.keys))
        if name is not None:
            conn.send("login", name=name)
            await conn.expect("welcome")
    except BaseException:
        ws.abort()
        raise
    return conn
