"""The process's own limits (review finding H5): enough file descriptors for the
connections it admits, and accept errors logged once in a while rather than per failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger("chat.server")

#: Descriptors kept for the database, the listening sockets, logs and the key file.
RESERVED_DESCRIPTORS = 64
#: Seconds between two log lines about failing accept() calls.
ACCEPT_ERROR_LOG_INTERVAL = 10.0


def fit_descriptors(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (POSIX; elsewhere nothing to do)
    and return ``max_connections`` lowered, if need be, so every admitted connection has
    a descriptor with headroom left: the server refuses connections itself instead of
    failing accept() (0, unlimited, becomes the descriptor bound)."""
    try:
        import resource
    except ImportError:
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    usable = max(1, soft - RESERVED_DESCRIPTORS) if soft != resource.RLIM_INFINITY else max_connections
    if max_connections == 0 or max_connections > usable:
        log.info("max connections lowered to %d: %d file descriptors available", usable, soft)
        return usable
    return max_connections


class _AcceptErrorLog:
    """A loop exception handler that reports failing accept() calls (EMFILE, ENFILE,
    ENOBUFS: asyncio retries after a second) once per interval with a count; everything
    else goes to the default handler."""

    def __init__(self) -> None:
        self.failures = 0
        self._last = float("-inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        self.failures += 1
        now = time.monotonic()
        if now - self._last >= ACCEPT_ERROR_LOG_INTERVAL:
            self._last = now
            error = context.get("exception")
            log.error("cannot accept connections: %s (%d failures so far)", error, self.failures)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_exception_handler(_AcceptErrorLog())
