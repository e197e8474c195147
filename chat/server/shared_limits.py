"""Limits that must hold across the nodes of a cluster, counted in Redis (sorted sets of
event times, one per key, pruned to the window on each use): password guesses per
(name, address) and per network and the per-name delay (login_throttle.py), and new
accounts per network (accounts.py). Each node still applies its own counts too; Redis
adds the attempts made on the other nodes. If Redis cannot answer, the node's own
limits apply alone (a node cut off from Redis must not lock everyone out)."""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, field

import redis.asyncio as redis
from redis.exceptions import RedisError

from chat.server.login_throttle import WINDOW, address_prefix

#: KEYS: the set. ARGV: now, window, limit (0: none), member. Returns 1 if counted.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if tonumber(ARGV[3]) > 0 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
return redis.call('ZCARD', KEYS[1]) - 1
"""


@dataclass
class Counted:
    """Events counted in Redis, to give back if the attempt turns out not to count."""

    entries: list[tuple[str, str]] = field(default_factory=list)
    #: How many events the last key had before this one.
    before: int = 0


class SharedLimits:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._take = client.register_script(_TAKE)

    async def _count(self, counted: Counted, key: str, window: float, limit: int) -> bool:
        member = secrets.token_hex(8)
        before = int(await self._take(keys=[key], args=[time.time(), window, limit, member]))
        if before < 0:
            return False
        counted.entries.append((key, member))
        counted.before = before
        return True

    async def login_attempt(
        self, name_key: str, address: str, per_pair: int, per_prefix: int
    ) -> Counted | None:
        """Count a password attempt cluster-wide; None if the pair or network is over its
        budget. ``before`` is the name's recent attempts (for its delay)."""
        counted = Counted()
        try:
            for key, limit in ((f"chat:lim:pair:{name_key}:{address}", per_pair),
                               (f"chat:lim:net:{address_prefix(address)}", per_prefix),
                               (f"chat:lim:name:{name_key}", 0)):
                if not await self._count(counted, key, WINDOW, limit):
                    await self.give_back(counted)
                    return None
        except (RedisError, OSError):
            await self.give_back(counted)
            return Counted()
        return counted

    async def registration(self, address: str, limit: int, window: float) -> Counted | None:
        """Count a new account from ``address``'s network; None if over ``limit``."""
        counted = Counted()
        try:
            ok = await self._count(counted, f"chat:lim:reg:{address_prefix(address)}", window, limit)
        except (RedisError, OSError):
            return Counted()
        return counted if ok else None

    async def give_back(self, counted: Counted) -> None:
        with contextlib.suppress(RedisError, OSError):
            for key, member in counted.entries:
                await self._redis.zrem(key, member)
        counted.entries.clear()
