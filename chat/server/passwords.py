"""Password hashing (scrypt, memory-hard) and the throttle on wrong passwords.

Hashes are stored as ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`` so parameters can
be raised later without invalidating existing accounts. Hashing runs in a worker thread:
it is deliberately slow (tens of milliseconds) and must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections import defaultdict, deque

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

LOG2_N, R, P = 14, 8, 1  # 16 MiB of memory per hash
SALT_LEN, HASH_LEN = 16, 32
MIN_PASSWORD_CHARS = 8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = os.urandom(SALT_LEN)
    digest = Scrypt(salt=salt, length=HASH_LEN, n=1 << LOG2_N, r=R, p=P).derive(password.encode("utf-8"))
    return f"scrypt${LOG2_N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        kdf = Scrypt(
            salt=base64.b64decode(salt), length=HASH_LEN, n=1 << int(log2_n), r=int(r), p=int(p)
        )
        kdf.verify(password.encode("utf-8"), base64.b64decode(digest))
    except (InvalidKey, ValueError):
        return False
    return True


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, stored: str) -> bool:
    return await asyncio.to_thread(verify_password, password, stored)


class LoginThrottle:
    """Counts wrong passwords per name and per address over a sliding window."""

    def __init__(self, per_name: int = 5, per_address: int = 20, window: float = 600.0) -> None:
        self._limits = {"name": per_name, "address": per_address}
        self._window = window
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def _recent(self, kind: str, value: str, now: float) -> deque[float]:
        failures = self._failures[(kind, value)]
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            # Forget names and addresses with nothing recent, so guessing many names
            # does not grow this table without bound.
            del self._failures[(kind, value)]
            return deque()
        return failures

    def blocked(self, name_key: str, address: str) -> bool:
        now = time.monotonic()
        return any(
            len(self._recent(kind, value, now)) >= self._limits[kind]
            for kind, value in (("name", name_key), ("address", address))
        )

    def failed(self, name_key: str, address: str) -> None:
        now = time.monotonic()
        for kind, value in (("name", name_key), ("address", address)):
            self._recent(kind, value, now)
            self._failures[(kind, value)].append(now)
