"""Groups across the nodes of a cluster: one change at a time cluster-wide, and every
node's registry (groups.py) kept equal to the others'.

A change is planned, stored and applied under ``GroupRegistry.changing``. In a cluster
that lock is :class:`ClusterGroupLock`: this node's asyncio lock, then a Redis lock
shared by all nodes. Whoever holds it has applied every earlier change: each change
increments ``chat:groups:version`` and is published (``g`` frame) before the lock is
released, and a node taking the lock first waits until it has applied that version; if a
change was lost (Redis restarted), it reloads the groups from the database instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import TYPE_CHECKING

from redis.asyncio.lock import Lock
from redis.exceptions import RedisError

from chat.protocol.codes import ErrorCode
from chat.server.cluster_wire import Frame, encode_frame, group_from_state, group_state
from chat.server.errors import RequestError
from chat.server.groups import GroupChange, GroupRegistry
from chat.server.names import key
from chat.server.redis_link import ALL, RedisLink

if TYPE_CHECKING:
    from chat.server.store_api import Store

log = logging.getLogger("chat.server")

VERSION_KEY = "chat:groups:version"
#: Seconds a node may hold the group lock (a dead node's lock frees itself), and waits
#: for it or for the changes before it.
LOCK_TIMEOUT = 10.0
CATCH_UP_TIMEOUT = 1.0


class ClusterGroups:
    """This node's side of the shared group registry."""

    def __init__(self, link: RedisLink, registry: GroupRegistry, storage: Store) -> None:
        self._link, self._registry, self._storage = link, registry, storage
        #: The newest group version this node has applied.
        self.version = 0
        self._applied = asyncio.Condition()
        registry.changing = ClusterGroupLock(self)  # type: ignore[assignment]

    async def publish(self, change: GroupChange) -> None:
        """Tell the other nodes of a change this node stored and applied (lock held)."""
        try:
            version = int(await self._link.redis.incr(VERSION_KEY))
        except (RedisError, OSError):
            return  # the others reload from the database when they next change a group
        self.version = version
        state = group_state(change.after)
        frame = encode_frame("g", self._link.node, v=version, name=change.name, s=state)
        self._link.publish(ALL, frame)
        await self._link.flush()

    async def received(self, frame: Frame) -> None:
        name, state = frame.header["name"], frame.header["s"]
        before = self._registry.current(key(name))
        after = group_from_state(state) if state is not None else None
        self._registry.apply(GroupChange(before, after) if after else GroupChange(before, None))
        async with self._applied:
            self.version = max(self.version, int(frame.header["v"]))
            self._applied.notify_all()

    async def catch_up(self) -> bool:
        """Apply every change made so far, from Redis or the database (before a change,
        and before refusing a request for a group this node may not know of yet);
        whether there was anything to apply."""
        try:
            wanted = int(await self._link.redis.get(VERSION_KEY) or 0)
        except (RedisError, OSError):
            raise RequestError(ErrorCode.SERVER_BUSY) from None
        if wanted <= self.version:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CATCH_UP_TIMEOUT), self._applied:
                await self._applied.wait_for(lambda: self.version >= wanted)
        if self.version < wanted:
            await self.reload()
            self.version = wanted
        return True

    async def reload(self) -> None:
        """Read the registered groups again (a change was lost on its way here); groups of
        guests on this node are kept."""
        stored = await self._storage.load_groups()
        kept = {k: g for k, g in self._registry._groups.items() if not g.persistent}
        self._registry.load(stored)
        for k, group in kept.items():
            self._registry._groups.setdefault(k, group)
        log.info("cluster: reloaded %d groups from the database", len(stored))


class ClusterGroupLock:
    """``async with registry.changing``: this node's lock, then the cluster's."""

    def __init__(self, groups: ClusterGroups) -> None:
        self._groups = groups
        self._local = asyncio.Lock()
        self._redis: Lock | None = None

    async def __aenter__(self) -> None:
        await self._local.acquire()
        try:
            lock = self._groups._link.redis.lock(
                "chat:groups:lock", timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_TIMEOUT
            )
            if not await lock.acquire():
                raise RequestError(ErrorCode.SERVER_BUSY)
            self._redis = lock
            await self._groups.catch_up()
        except (RedisError, OSError):
            self._local.release()
            raise RequestError(ErrorCode.SERVER_BUSY) from None
        except BaseException:
            await self._release_redis()
            self._local.release()
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._release_redis()
        self._local.release()

    async def _release_redis(self) -> None:
        lock, self._redis = self._redis, None
        if lock is not None:
            with contextlib.suppress(RedisError, OSError):
                await lock.release()
