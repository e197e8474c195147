"""An in-memory chat server and clients (as h11's ``ConnectionPair``): the real session
core (handshake, records, envelopes, login state), the real handlers, groups, accounts,
mailbox, presence and file relay, and SQLite in memory, with no sockets and no processes.

What only the asyncio shell does (admission before the upgrade, rate limits, the write
path and backlogs, keepalive) is tested against real server processes instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from chat.protocol.codes import CloseCode, Feature
from chat.protocol.envelope import Envelope, decode_event, encode_request
from chat.protocol.handshake import ClientHandshake
from chat.protocol.records import SecureChannel
from chat.server.config import ServerConfig
from chat.server.context import Context
from chat.server.dispatch import dispatch
from chat.server.hub import SessionState
from chat.server.login import logout
from chat.server.services import Services, build_services
from chat.server.session import End, Established, Refuse, SendHandshake, Serve, ServerSession, Unwrap

#: Time to wait for something that should happen at once.
TIMEOUT = 5.0


class MemoryServer:
    """The server's services with ``config``, started as ``ChatServer.start`` would."""

    def __init__(self, private_key: rsa.RSAPrivateKey, config: ServerConfig) -> None:
        self.private_key = private_key
        self.config = config
        self.services: Services = build_services(config)

    async def start(self) -> None:
        await self.services.storage.open()
        self.services.mailbox.start()
        self.services.groups.load(await self.services.storage.load_groups())

    async def stop(self) -> None:
        await self.services.mailbox.stop()
        await self.services.storage.close()
        self.services.presence.close()

    async def connect(self, address: str = "127.0.0.1") -> MemoryPeer:
        """A peer that has completed the real handshake (not logged in yet)."""
        peer = MemoryPeer(self, address)
        peer.handshake()
        return peer

    async def login(
        self,
        name: str,
        password: str | None = None,
        features: list[str] | None = None,
        address: str = "127.0.0.1",
    ) -> MemoryPeer:
        peer = await self.connect(address)
        fields: dict[str, Any] = {"name": name}
        if password is not None:
            fields["password"] = password
        if features is not None:
            fields["features"] = features
        welcome = await peer.request("login", **fields)
        assert welcome.type == "welcome", welcome
        return peer


@contextlib.asynccontextmanager
async def memory_server(private_key: rsa.RSAPrivateKey, **options: Any) -> AsyncIterator[MemoryServer]:
    """A started in-memory server; ``options`` are ServerConfig fields (db ``:memory:``)."""
    config = replace(ServerConfig(db_path=":memory:", wrong_password_delay=0.0), **options)
    server = MemoryServer(private_key, config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class MemoryPeer(SessionState):
    """One client and its server-side connection, joined in memory. It is the hub's
    Outbox for its user: what the server delivers is sealed by the server's session,
    opened by the client's channel and collected in ``events``."""

    def __init__(self, server: MemoryServer, address: str) -> None:
        super().__init__()
        self.server = server
        self.address = address
        self.session = ServerSession(server.private_key, ticket_lifetime=server.config.ticket_lifetime)
        self.channel: SecureChannel | None = None
        self.events: list[Envelope] = []
        self.ended: End | None = None
        self._changed = asyncio.Event()
        self._rid = 0

    # --- the Outbox the server sees --------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self.ended is not None

    def logged_in(self, name: str, registered: bool, features: set[Feature]) -> None:
        self.name, self.registered, self.features = name, registered, features
        ticket = self.session.logged_in(features)
        if ticket is not None:
            self.deliver(ticket)

    def supersede(self) -> None:
        self.superseded = True
        self.ended = End(CloseCode.POLICY_VIOLATION, "logged in again from a new connection")
        asyncio.get_running_loop().create_task(self._logout())

    def deliver(self, payload: bytes, *, bulk: bool = False, droppable: bool = False) -> None:
        if self.channel is None or self.ended is not None:
            return
        presence = self.server.services.presence
        if self.presence_seen != presence.end:
            presence.catch_up(self)
        self.events.append(decode_event(self.channel.open(self.session.seal(payload))))
        self._changed.set()

    # --- the client --------------------------------------------------------------------

    def handshake(self) -> None:
        client = ClientHandshake(self.server.private_key.public_key())
        (unwrap,) = self.session.receive(client.client_hello())
        assert isinstance(unwrap, Unwrap)
        (hello,) = self.session.unwrapped(self.session.unwrap(unwrap.hello))
        assert isinstance(hello, SendHandshake)
        assert self.session.receive(client.receive_server_hello(hello.data)) == [Established()]
        assert client.keys is not None
        self.channel = SecureChannel(client.keys)

    async def send_plaintext(self, plaintext: bytes) -> None:
        """Seal ``plaintext`` as the next record and let the server handle it."""
        assert self.channel is not None
        await self.send_record(self.channel.seal(plaintext))

    async def send_record(self, message: bytes | str) -> None:
        for action in self.session.receive(message):
            if isinstance(action, End):
                self.ended = action
                await self._logout()
            elif isinstance(action, Refuse):
                fields = {"detail": action.detail} if action.detail is not None else {}
                self._context(action.rid).reply("error", code=action.code, **fields)
            elif isinstance(action, Serve):
                await self._serve(action.envelope)

    async def send(self, kind: str, **fields: Any) -> int:
        """Send a request with the next ``rid``; returns it."""
        self._rid += 1
        await self.send_plaintext(encode_request(kind, rid=self._rid, **fields))
        return self._rid

    async def request(self, kind: str, **fields: Any) -> Envelope:
        """Send a request and return its reply (notifications stay in ``events``)."""
        rid = await self.send(kind, **fields)
        return await self.wait_for(lambda event: event.get("re") == rid, f"the reply to {kind}")

    async def wait_for(
        self, predicate: Callable[[Envelope], bool], what: str, timeout: float = TIMEOUT
    ) -> Envelope:
        """The first event (new or already here) for which ``predicate`` holds."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()
        raise AssertionError(what)  # pragma: no cover (the timeout raises first)

    def notifications(self, kind: str) -> list[Envelope]:
        return [event for event in self.events if event.type == kind and "re" not in event.fields]

    async def close(self) -> None:
        """The connection ends without ``quit`` (as a dropped socket does)."""
        if self.ended is None:
            self.ended = End(CloseCode.GOING_AWAY, "closed")
            await self._logout()

    # --- the server side of the connection ----------------------------------------------

    def _context(self, rid: int | None, user: str | None = None) -> Context:
        name = user if user is not None else self.name or ""
        return Context(
            name, rid, self, self.server.services, address=self.address, registered=self.registered
        )

    async def _serve(self, envelope: Envelope) -> None:
        ctx = self._context(envelope.get("rid"))
        await dispatch(ctx, envelope)
        if ctx.quitting:
            await self._logout()
            ctx.reply("ok")
            self.ended = End(CloseCode.NORMAL, "bye")

    async def _logout(self) -> None:
        if self.name is None:
            return
        name, self.name = self.name, None
        await logout(self._context(None, name))
