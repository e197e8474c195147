"""Resume tokens shared by the nodes of a cluster (PROTOCOL.md 6.8): the same rules as
resume_tokens.py, kept in Redis so a session lost on one node resumes on another.
If Redis cannot answer, a token is not valid: the client logs in afresh."""

from __future__ import annotations

import contextlib
import hashlib
import secrets

import redis.asyncio as redis
from redis.exceptions import RedisError

from chat.server.resume_tokens import TOKEN_LIFETIME, Ticket

#: Seconds a token of a session still online is kept (renewed by each login).
ONLINE_LIFETIME = 7 * 86400


def _key(token: str) -> str:
    """Tokens are stored by digest: whoever reads Redis cannot resume with them."""
    return "chat:token:" + hashlib.sha256(token.encode()).hexdigest()


class RedisResumeTokens:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    async def issue(self, name_key: str, reads_from: int) -> str:
        token = secrets.token_urlsafe(32)
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(_key(token), mapping={"name": name_key, "reads_from": reads_from})
                pipe.expire(_key(token), ONLINE_LIFETIME)
                await pipe.execute()
        return token

    async def valid(self, token: str | None, name_key: str) -> Ticket | None:
        if not isinstance(token, str):
            return None
        try:
            held = await self._redis.hgetall(_key(token))
        except (RedisError, OSError):
            return None
        if held.get(b"name") != name_key.encode():
            return None
        return Ticket(name_key, int(held[b"reads_from"]))

    async def use(self, token: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(_key(token))

    async def ended(self, token: str | None) -> None:
        if token is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.expire(_key(token), int(TOKEN_LIFETIME))
