"""Our side of the server's rate limit: the client paces its own requests, so a piped
script is slowed down rather than disconnected."""

from __future__ import annotations

import asyncio

#: Our own pace, under the server's guaranteed minimum (README "Server options and limits": 10
#: per second, bursts of 30), so a piped script is slowed down rather than disconnected.
PACE_PER_SECOND = 8.0
PACE_BURST = 20


class Pacer:
    """A token bucket on our side of the rate limit: ``wait()`` before each request."""

    def __init__(self, rate: float = PACE_PER_SECOND, burst: int = PACE_BURST) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    async def wait(self) -> None:
        """Take a token, sleeping until it is due. Safe with several waiting tasks (the
        chat and file transfers): each reserves its token first, so the bucket may go
        negative and later callers sleep correspondingly longer."""
        now = asyncio.get_running_loop().time()
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1.0
        if self._tokens < 0.0:
            await asyncio.sleep(-self._tokens / self._rate)
