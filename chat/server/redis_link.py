"""A node's link to the cluster's Redis: its heartbeat, one ordered publisher and one
subscriber, and what happens when Redis goes away and comes back.

Order: every frame this node publishes goes out on one connection, so the other nodes
receive them in the order they were sent (a user's join before their first message).
Frames published while Redis is unreachable are dropped: what was stored reaches its
readers from the database once the link is back (redis_hub.py), and the users here are
told (NoticeCode.CLUSTER_LOST) instead of losing messages silently.

Speed: frames are the hot path of a cluster (every message between nodes), so the two
pub/sub connections speak RESP directly through hiredis's parser instead of redis-py's
client, which spent 30 to 40 µs of Python per frame (BENCHMARKS.md, scenario 7). Frames
published in one turn of the event loop leave in one write without waiting for their
replies, which a reader counts; everything else (scripts, keys, the heartbeat) goes
through redis-py.

Liveness: ``chat:node:<id>`` exists while the node is alive (set every HEARTBEAT seconds
to expire after NODE_TTL); a name claimed by a node whose key is gone is free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import hiredis
import redis.asyncio as redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import RedisError

log = logging.getLogger("chat.server")

#: Seconds between heartbeats; after NODE_TTL without one a node's names are free again
#: and, within SWEEP more, the other nodes tell their users its users left: names are
#: free again within 15 s of a node's death.
HEARTBEAT = 3.0
NODE_TTL = 12
SWEEP = 1.0
#: Channels: everyone's, and each node's own.
ALL = b"chat:all"
NODE_KEY = "chat:node:"
#: Seconds between attempts to reach Redis again.
RETRY_MIN, RETRY_MAX = 0.2, 2.0
#: Seconds to connect (and authenticate) at most.
CONNECT_TIMEOUT = 2.0
#: Bytes of frames Redis may leave unread before the link counts as lost (frames are
#: then dropped and filled from the database later, rather than held without bound).
MAX_UNSENT = 64 * 2**20
#: Bytes read from a connection at once.
READ_SIZE = 2**16

#: What ends a link session: Redis or the network failing, or Redis answering an error.
LinkError = (RedisError, OSError, EOFError, hiredis.ProtocolError, hiredis.ReplyError)


def node_channel(node: str) -> bytes:
    return f"chat:to:{node}".encode()


def command(*args: bytes | str) -> bytes:
    """One command in RESP, as Redis reads it."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RedisLink:
    """Connects, publishes in order, and hands received frames and link changes on."""

    def __init__(
        self,
        url: str,
        node: str,
        on_frame: Callable[[bytes], Awaitable[None]],
        on_up: Callable[[], Awaitable[None]],
        on_down: Callable[[], None],
    ) -> None:
        self.node = node
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._url = url
        self._params: dict[str, Any] = dict(parse_url(url))
        self._on_frame, self._on_up, self._on_down = on_frame, on_up, on_down
        #: Whether the subscriber is connected and the last publish and heartbeat worked.
        self.up = False
        #: The publishing connection while the link is up, and what waits for its write.
        self._publisher: asyncio.StreamWriter | None = None
        self._unsent: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        #: Sessions that came up so far.
        self._sessions = 0

    async def start(self, wait: float = 5.0) -> None:
        """Start the link; waits up to ``wait`` seconds for Redis (a node that cannot
        reach it starts anyway, says so, and keeps trying)."""
        self._task = asyncio.get_running_loop().create_task(self._connect_forever())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._ready.wait()
        if not self.up:
            log.warning("cluster: cannot reach Redis at %s; retrying", _safe_url(self._url))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(NODE_KEY + self.node)
        await self.redis.aclose()

    def publish(self, channel: bytes, frame: bytes) -> None:
        """Send ``frame`` to ``channel`` in order (never blocks; dropped while the link
        is down). Frames of one turn of the event loop leave in one write."""
        if not self.up:
            return
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._write)
        head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n" % (len(channel), channel, len(frame))
        self._unsent += (head, frame, b"\r\n")

    async def flush(self) -> None:
        """Wait until what was published so far has been handed to Redis (or dropped)."""
        self._write()
        while self.up and self._publisher is not None and self._publisher.transport.get_write_buffer_size():
            await asyncio.sleep(0.001)

    def _write(self) -> None:
        unsent, self._unsent = self._unsent, []
        publisher = self._publisher
        if not unsent or publisher is None or not self.up:
            return
        publisher.writelines(unsent)
        if publisher.transport.get_write_buffer_size() > MAX_UNSENT:
            self._lost(BufferError("Redis reads the published frames too slowly"))
            publisher.close()

    def _lost(self, exc: BaseException) -> None:
        if self.up:
            self.up = False
            self._unsent.clear()
            log.warning("cluster: lost Redis (%s); users here are told, stored messages follow later",
                        type(exc).__name__)
            self._on_down()

    async def _connect_forever(self) -> None:
        delay = RETRY_MIN
        while True:
            sessions = self._sessions
            writers: list[asyncio.StreamWriter] = []
            try:
                await self._session(writers)
            except LinkError as exc:
                self._lost(exc)
            finally:
                self._publisher = None
                for writer in writers:
                    writer.close()
            if self._sessions > sessions:  # it was up: try again soon
                delay = RETRY_MIN
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _session(self, writers: list[asyncio.StreamWriter]) -> None:
        """One connection to Redis: subscribe, then hand on frames until it fails."""
        sub_reader, subscriber = await self._open()
        writers.append(subscriber)
        pub_reader, publisher = await self._open()
        writers.append(publisher)
        subscriber.write(command("SUBSCRIBE", ALL, node_channel(self.node)))
        parser = hiredis.Reader()
        for _ in range(2):
            await _reply(sub_reader, parser)
        await self.redis.set(NODE_KEY + self.node, b"1", ex=NODE_TTL)
        self._publisher, self.up = publisher, True
        self._sessions += 1
        await self._on_up()
        if self._ready.is_set():
            log.info("cluster: Redis is back")
        self._ready.set()
        parts = [self._receive(sub_reader, parser), self._count_replies(pub_reader), self._beat()]
        tasks = [asyncio.ensure_future(part) for part in parts]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # raises what ended the session
        raise EOFError("Redis closed the connection")

    async def _receive(self, reader: asyncio.StreamReader, parser: hiredis.Reader) -> None:
        """Hand on every frame of the channels, in order."""
        on_frame = self._on_frame
        async for item in _replies(reader, parser):
            if isinstance(item, list) and item[0] == b"message":
                await on_frame(item[2])

    async def _count_replies(self, reader: asyncio.StreamReader) -> None:
        """Read the publisher's replies (numbers of receivers); an error ends the link."""
        async for item in _replies(reader, hiredis.Reader()):
            if isinstance(item, hiredis.ReplyError):
                raise item

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            await self.redis.set(NODE_KEY + self.node, b"1", ex=NODE_TTL)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to Redis as the URL says (TCP, TLS or a Unix socket), logged in."""
        params = self._params
        async with asyncio.timeout(CONNECT_TIMEOUT):
            if "path" in params:
                reader, writer = await asyncio.open_unix_connection(params["path"])
            else:
                secure = params.get("connection_class") is SSLConnection
                tls = ssl.create_default_context() if secure else None
                reader, writer = await asyncio.open_connection(
                    params.get("host", "localhost"), params.get("port", 6379), ssl=tls
                )
            if params.get("password"):
                user = [params["username"]] if params.get("username") else []
                writer.write(command("AUTH", *user, params["password"]))
                await _reply(reader, hiredis.Reader())
        return reader, writer


async def _replies(reader: asyncio.StreamReader, parser: hiredis.Reader) -> AsyncIterator[Any]:
    """Every reply on a connection as it is parsed, until Redis closes it."""
    while True:
        while (item := parser.gets()) is not False:
            yield item
        data = await reader.read(READ_SIZE)
        if not data:
            return
        parser.feed(data)


async def _reply(reader: asyncio.StreamReader, parser: hiredis.Reader) -> Any:
    """The next reply on a connection (an error reply raised)."""
    async for item in _replies(reader, parser):
        if isinstance(item, hiredis.ReplyError):
            raise item
        return item
    raise EOFError("Redis closed the connection")


def _safe_url(url: str) -> str:
    """``url`` without a password, for the log."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url
