"""A node's link to the cluster's Redis: its heartbeat, one ordered publisher and one
subscriber, and what happens when Redis goes away and comes back.

Order: every frame this node publishes goes through one queue and one connection, so the
other nodes receive them in the order they were sent (a user's join before their first
message). Frames queued while Redis is unreachable are dropped: what was stored reaches
its readers from the database once the link is back (redis_hub.py), and the users here
are told (NoticeCode.CLUSTER_LOST) instead of losing messages silently.

Liveness: ``chat:node:<id>`` exists while the node is alive (set every HEARTBEAT seconds
to expire after NODE_TTL); a name claimed by a node whose key is gone is free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as redis
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
#: Frames one pipeline carries at most.
BATCH = 512


def node_channel(node: str) -> bytes:
    return f"chat:to:{node}".encode()


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
        self._on_frame, self._on_up, self._on_down = on_frame, on_up, on_down
        #: Whether the subscriber is connected and the last publish and heartbeat worked.
        self.up = False
        self._queue: list[tuple[bytes, bytes]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()

    async def start(self, wait: float = 5.0) -> None:
        """Start the link; waits up to ``wait`` seconds for Redis (a node that cannot
        reach it starts anyway, says so, and keeps trying)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._subscribe_forever()), loop.create_task(self._publish_forever())]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._ready.wait()
        if not self.up:
            log.warning("cluster: cannot reach Redis at %s; retrying", _safe_url(self._url))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(NODE_KEY + self.node)
        await self.redis.aclose()

    def publish(self, channel: bytes, frame: bytes) -> None:
        """Queue ``frame`` for ``channel`` (never blocks; dropped while the link is down)."""
        if self.up:
            self._queue.append((channel, frame))
            self._wake.set()

    async def flush(self) -> None:
        """Wait until what is queued now has been handed to Redis (or dropped)."""
        while self._queue and self.up:
            await asyncio.sleep(0.001)

    def _lost(self, exc: BaseException) -> None:
        if self.up:
            self.up = False
            self._queue.clear()
            log.warning("cluster: lost Redis (%s); users here are told, stored messages follow later",
                        type(exc).__name__)
            self._on_down()

    async def _publish_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self.up:
                batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for channel, frame in batch:
                            pipe.publish(channel, frame)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    self._lost(exc)

    async def _subscribe_forever(self) -> None:
        delay = RETRY_MIN
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(ALL, node_channel(self.node))
                await self.redis.set(NODE_KEY + self.node, b"1", ex=NODE_TTL)
                self.up = True
                await self._on_up()
                self._ready.set()
                if delay > RETRY_MIN:
                    log.info("cluster: Redis is back")
                delay = RETRY_MIN
                heartbeat = asyncio.get_running_loop().time() + HEARTBEAT
                while self.up:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        await self._on_frame(message["data"])
                    now = asyncio.get_running_loop().time()
                    if now >= heartbeat:
                        heartbeat = now + HEARTBEAT
                        await self.redis.set(NODE_KEY + self.node, b"1", ex=NODE_TTL)
            except (RedisError, OSError) as exc:
                self._lost(exc)
            finally:
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)


def _safe_url(url: str) -> str:
    """``url`` without a password, for the log."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url
