"""The server process: the listener (a :class:`wire.Wire` per connection), shared state,
and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from chat.keys import public_pem
from chat.protocol.codes import CloseCode, NoticeCode
from chat.protocol.envelope import encode_event
from chat.server import names
from chat.server.admission import Admission, AdmissionLimits
from chat.server.config import ServerConfig
from chat.server.connection import ClientConnection
from chat.server.frames import WriteBatch
from chat.server.groups import GroupChange
from chat.server.host import Lingering
from chat.server.observability import HEALTH_PATH, METRICS_PATH, Metrics, health
from chat.server.ratelimit import KeyedBuckets
from chat.server.redis_hub import RedisHub
from chat.server.remote_requests import RemoteRequests
from chat.server.services import build_services
from chat.server.shared_limits import SharedLimits
from chat.server.web import WebFiles
from chat.server.wire import Wire

log = logging.getLogger("chat.server")

#: Seconds between sweeps for abandoned groups.
GROUP_EXPIRY_INTERVAL = 3600.0

#: Plain HTTP GET of this path returns the server's public key (PEM), so that a client
#: without it can show the fingerprint and ask its user (trust on first use).
SERVER_KEY_PATH = "/server-key.pem"


class ChatServer:
    """Holds the key and the shared services; one ClientConnection per WebSocket."""

    def __init__(self, private_key: rsa.RSAPrivateKey, config: ServerConfig | None = None) -> None:
        self.private_key = private_key
        self.config = config = config or ServerConfig()
        self.services = build_services(config)
        #: Threads for the handshake's RSA unwrap (cryptography releases the GIL), one per
        #: core: a small dedicated pool hands work over with less overhead than
        #: asyncio.to_thread and keeps password hashing from queueing behind handshakes.
        self.crypto_pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="handshake")
        self.write_batch = WriteBatch()
        self.web = WebFiles(tls=config.tls is not None)
        self.connections: set[ClientConnection] = set()
        #: Every TCP connection, from accept to close (upgrading, handshaking, chatting).
        self.wires: set[Wire] = set()
        #: Lost sessions waiting for their clients to resume them.
        self.lingering: set[Lingering] = set()
        self.admission = Admission(
            AdmissionLimits(
                max_total=config.max_connections, max_per_ip=config.max_connections_per_ip,
                max_upgrading_per_ip=config.max_upgrading_per_ip,
                pings_per_second=config.pings_per_second, ping_burst=config.ping_burst,
            )
        )
        # A burst as large as the connections one address may hold: a class behind one
        # NAT logging in at once.
        self._handshakes_per_ip = KeyedBuckets(
            config.handshakes_per_ip, max(config.handshakes_per_ip, config.max_connections_per_ip)
        )
        self._handshakes_total = KeyedBuckets(config.handshakes_per_second, config.handshakes_per_second)
        self._network_requests = KeyedBuckets(config.network_rate_limit, config.network_rate_limit * 3)
        self._network_bytes = KeyedBuckets(config.network_byte_rate, config.network_byte_rate * 4)
        self._network_fanout = KeyedBuckets(config.network_fanout_rate, config.network_fanout_rate * 4)
        #: ClientHellos whose RSA decryption is queued or running.
        self.pending_handshakes = 0
        self._server: asyncio.Server | None = None
        #: Successful logins since start, and the metrics that report it (observability.py).
        self.logins = 0
        self.metrics = Metrics(self._state)
        self._group_expiry: asyncio.Task[None] | None = None
        self._message_expiry: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def upgraded(self, wire: Wire) -> None:
        """A WebSocket is open (connections over the limits were refused by their wire):
        its chat connection starts with the handshake."""
        connection = ClientConnection(wire, self)
        self.connections.add(connection)
        asyncio.get_running_loop().create_task(connection.serve())

    async def _expire_groups_forever(self) -> None:
        """Delete stored groups unused for ``group_expiry_days`` (at start, then hourly);
        their online members are told as if the owner had deleted them."""
        groups, storage = self.services.groups, self.services.storage
        while True:
            async with groups.changing:
                keys = await storage.expire_groups(time.time() - self.config.group_expiry_days * 86400)
                for group in groups.expired(keys):
                    await self.services.hub.group_changed(GroupChange(group, None))
                    deleted = encode_event("group_deleted", group=group.name)
                    await self.services.hub.send(group.members.values(), deleted)
            if keys:
                log.info("expired unused groups: %d", len(keys))
            await asyncio.sleep(GROUP_EXPIRY_INTERVAL)

    async def _expire_messages_forever(self) -> None:
        """Delete messages older than ``retention_days`` (at start, then hourly)."""
        while True:
            expired = await self.services.storage.messages.expire()
            if expired:
                log.info("expired old messages: %d", expired)
            await asyncio.sleep(GROUP_EXPIRY_INTERVAL)

    def network_allows(self, network: str, size: int, *, broadcast: bool = False) -> bool:
        """Charge one request of ``size`` bytes to ``network``'s shared budgets; a
        broadcast also to its fan-out budget, as ``size`` times the connections here."""
        now = time.monotonic()
        if not self._network_requests.take(network, now) or not self._network_bytes.take(network, now, size):
            return False
        return not broadcast or self._network_fanout.take(network, now, size * len(self.connections))

    def handshake_allowed(self, ip: str) -> bool:
        """Whether a ClientHello from ``ip`` may queue an RSA decryption now: within the
        per-address and server-wide handshake rates, and the queue of decryptions not
        full (review M1). Otherwise the peer gets SERVER_BUSY at once."""
        now = time.monotonic()
        if self.pending_handshakes >= self.config.handshake_queue:
            return False
        return self._handshakes_per_ip.take(ip, now) and self._handshakes_total.take("", now)

    def _state(self) -> dict[str, Any]:
        """Counts for /healthz and /metrics (observability.py)."""
        return {
            "connections": len(self.connections),
            "users_online": sum(1 for c in self.connections if c.name is not None) + len(self.lingering),
            "sessions_lingering": len(self.lingering),
            "handshakes_pending": self.pending_handshakes,
            "messages": dict(self.services.storage.messages.sent),
            "logins": self.logins,
        }

    def process_request(self, request: Request) -> Response | Awaitable[Response | None] | None:
        """A WebSocket upgrade goes on to the handshake unless a page of another site asks
        for it (403). Plain requests: the public key on GET SERVER_KEY_PATH, /healthz,
        /metrics and the web client's files (web.py); anything else 404."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if self.web.foreign_origin(request) is not None:
                return _plain(403, "Forbidden", "WebSocket connections from other sites are refused.\n")
            return None
        if request.path == HEALTH_PATH:
            hub = self.services.hub
            redis_up = hub.link.up if isinstance(hub, RedisHub) else None
            return health(self._state(), self.services.storage.ping, redis_up)
        if request.path == METRICS_PATH:
            return self.metrics.response()
        if request.path != SERVER_KEY_PATH:
            return self.web.response(request) or _plain(404, "Not Found", "Not found.\n")
        body = public_pem(self.private_key.public_key())
        headers = Headers({"Content-Type": "application/x-pem-file", "Content-Length": str(len(body))})
        return Response(200, "OK", headers, body)

    async def start(self) -> int:
        """Open the database, then start listening; returns the bound port (for port 0)."""
        names.warm_up()
        storage = self.services.storage
        await storage.open()
        self.services.mailbox.start()
        self.services.groups.load(await storage.load_groups())
        if isinstance(self.services.hub, RedisHub):
            RemoteRequests(self.services.hub, self.services)
            self.services.transfers.id_prefix = self.services.hub.node
            self.services.accounts.shared = SharedLimits(self.services.hub.link.redis)
            await self.services.hub.start(self.services.presence, self.services.groups, storage)
        if self.config.group_expiry_days > 0:
            self._group_expiry = asyncio.get_running_loop().create_task(self._expire_groups_forever())
        if self.config.retention_days > 0:
            self._message_expiry = asyncio.get_running_loop().create_task(self._expire_messages_forever())
        config = self.config
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Wire(self),
            config.host,
            config.port,
            # A class logging in at once must not wait on SYN retries (asyncio's default is 100).
            backlog=config.listen_backlog,
            # Each process of --workers binds the same address; the kernel spreads connections.
            reuse_port=config.reuse_port or None,
            ssl=config.tls,
            # A TLS handshake counts toward the upgrade's time.
            ssl_handshake_timeout=config.upgrade_timeout if config.tls is not None else None,
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        """Tell everyone, close every connection with 1001, wait for them (bounded)."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.notice(NoticeCode.SHUTDOWN)
            connection.close_soon(CloseCode.GOING_AWAY, "server shutting down")
        for wire in list(self.wires):
            if wire.upgrading:
                wire.abort()  # not a chat connection yet
        await self._emptied(self.wires)
        for wire in list(self.wires):
            wire.abort()
        # Each connection logs its user out (or lingers) once its wire is gone.
        await self._emptied(self.connections)
        # Lost sessions still waiting log out now, before the database closes.
        logouts = [task for lingering in list(self.lingering) if (task := lingering.stop_lingering())]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.close_timeout):
                await asyncio.gather(*logouts, return_exceptions=True)
        await self._within("offline message expiry", self.services.mailbox.stop())
        for expiry in (self._group_expiry, self._message_expiry):
            if expiry is not None:
                expiry.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._within("expiry", expiry)
        if isinstance(self.services.hub, RedisHub):
            await self._within("the cluster link", self.services.hub.close())
        await self._within("the database", self.services.storage.close())
        self.services.presence.close()
        self.crypto_pool.shutdown(wait=False, cancel_futures=True)
        log.info("server stopped")

    async def _emptied(self, items: set[Any]) -> None:
        """Wait (at most the close timeout) until ``items`` is empty: connections take
        themselves out of these sets as they end."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.close_timeout):
                while items:
                    await asyncio.sleep(0.01)

    async def _within(self, what: str, step: Awaitable[object]) -> None:
        """One step of the shutdown, given the close timeout: a stop never hangs."""
        try:
            async with asyncio.timeout(2 * self.config.close_timeout):
                await step
        except TimeoutError:
            log.warning("shutdown: %s did not close in time; going on", what)

    async def run_until_stopped(self) -> None:
        """Serve until SIGINT or SIGTERM (Ctrl-C / Ctrl-Break on Windows)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Windows has no add_signal_handler: Ctrl-C arrives as KeyboardInterrupt instead.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await self.stop()


def _plain(status: int, reason: str, text: str) -> Response:
    """A short plain-text answer to a request that is not served."""
    body = text.encode()
    headers = Headers({"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body))})
    return Response(status, reason, headers, body)
