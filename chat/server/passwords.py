"""Password hashing: Argon2id in PHC strings, old scrypt hashes still verified.

New hashes are ``$argon2id$v=19$m=...,t=...,p=...$salt$hash`` with the parameters of the
OWASP Password Storage Cheat Sheet (m = 19 MiB, t = 2, p = 1). Each hash carries its own
parameters, so they can be raised later: a login that succeeds against an older hash
(``scrypt$...`` from earlier versions, or Argon2id with other parameters) gets a new one
(``needs_rehash``). Hashing is deliberately slow and runs in worker threads; ``PasswordWork``
bounds how many run and wait at once.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

#: Argon2id parameters: memory in KiB, passes, lanes (OWASP's first recommendation).
MEMORY_KIB, ITERATIONS, LANES = 19 * 1024, 2, 1
SALT_LEN, HASH_LEN = 16, 32
MIN_PASSWORD_CHARS = 8
CURRENT_PARAMETERS = f"m={MEMORY_KIB},t={ITERATIONS},p={LANES}"
T = TypeVar("T")


class ServerBusy(Exception):
    """Too many password operations running and waiting; the caller should retry later."""


def hash_password(password: str) -> str:
    kdf = Argon2id(
        salt=os.urandom(SALT_LEN), length=HASH_LEN, iterations=ITERATIONS, lanes=LANES,
        memory_cost=MEMORY_KIB,
    )
    return kdf.derive_phc_encoded(password.encode("utf-8"))


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored`` (Argon2id PHC string or legacy scrypt)."""
    secret = password.encode("utf-8")
    try:
        if stored.startswith("$argon2id$"):
            Argon2id.verify_phc_encoded(secret, stored)
            return True
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        kdf = Scrypt(
            salt=base64.b64decode(salt), length=HASH_LEN, n=1 << int(log2_n), r=int(r), p=int(p)
        )
        kdf.verify(secret, base64.b64decode(digest))
    except (InvalidKey, ValueError):
        return False
    return True


def needs_rehash(stored: str) -> bool:
    """True unless ``stored`` is Argon2id with exactly the current parameters."""
    parts = stored.split("$")
    return len(parts) != 6 or parts[1] != "argon2id" or parts[3] != CURRENT_PARAMETERS


def check_password(password: str, stored: str) -> tuple[bool, str | None]:
    """(matches, a new hash if it matched and ``stored`` is outdated). One worker call."""
    if not verify_password(password, stored):
        return False, None
    return True, hash_password(password) if needs_rehash(stored) else None


class PasswordWork:
    """Runs password hashing in at most ``workers`` threads (one per core by default) with
    at most ``max_waiting`` more queued; beyond that ``run`` raises ServerBusy at once
    instead of letting a crowd of logins queue slow work without limit."""

    def __init__(self, workers: int | None = None, max_waiting: int = 64) -> None:
        workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="password")
        self._limit = workers + max_waiting
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    def _finished(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._pending >= self._limit:
                raise ServerBusy
            self._pending += 1
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._finished(Future())
            raise
        future.add_done_callback(self._finished)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
