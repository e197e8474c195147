"""What a connection uses of the server it belongs to (app.ChatServer), as a protocol:
so connection.py does not import app.py, which creates connections."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from chat.server.config import ServerConfig
from chat.server.frames import WriteBatch
from chat.server.services import Services


class Lingering(Protocol):
    """A lost session waiting for its client to resume it (connection.py)."""

    def stop_lingering(self) -> asyncio.Task[None] | None: ...


class Host(Protocol):
    """What a connection uses of the server it belongs to (app.ChatServer)."""

    private_key: rsa.RSAPrivateKey
    config: ServerConfig
    services: Services
    write_batch: WriteBatch

    @property
    def crypto_pool(self) -> Executor: ...

    #: ClientHellos whose RSA decryption is queued or running.
    pending_handshakes: int
    #: Lost sessions waiting for their clients to resume them.
    lingering: set[Lingering]
    #: The chat connections (a connection takes itself out when it ends).
    connections: set[Any]
    #: Successful logins since start.
    logins: int

    def handshake_allowed(self, ip: str) -> bool: ...

    def network_allows(self, network: str, size: int, *, broadcast: bool = False) -> bool: ...
