"""Registered names (README "Accounts"): who may log in as whom, /register and /passwd.

Unregistered names work as before; a registered name needs its password. Every password
check (login and /passwd) first reserves an attempt in the LoginThrottle, then waits the
per-name delay, then runs with at most one check per name at a time in the bounded
PasswordWork pool. A wrong password is answered only after ``wrong_password_delay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from chat.protocol.codes import ErrorCode
from chat.protocol.envelope import Envelope
from chat.server.errors import RequestError
from chat.server.login_throttle import LoginThrottle, Reservation, SlidingCounts, address_prefix
from chat.server.names import key
from chat.server.passwords import (
    MIN_PASSWORD_CHARS,
    PasswordWork,
    ServerBusy,
    check_password,
    hash_password,
)
from chat.server.request_context import RequestContext
from chat.server.shared_limits import Counted, SharedLimits
from chat.server.store_api import Store

log = logging.getLogger(__name__)

#: Seconds before a wrong password is answered.
WRONG_PASSWORD_DELAY = 1.0
REGISTRATION_WINDOW = 3600.0


class NameLocks:
    """One asyncio.Lock per name while anyone uses it; forgotten when nobody does."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, name_key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(name_key, (asyncio.Lock(), 0))
        self._locks[name_key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name_key]
            if users == 1:
                del self._locks[name_key]
            else:
                self._locks[name_key] = (lock, users - 1)


class Accounts:
    def __init__(
        self,
        storage: Store,
        wrong_password_delay: float = WRONG_PASSWORD_DELAY,
        *,
        throttle: LoginThrottle | None = None,
        work: PasswordWork | None = None,
        registrations_per_ip: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self._throttle = throttle or LoginThrottle()
        self._work = work or PasswordWork()
        self._delay = wrong_password_delay
        self._names = NameLocks()
        self._registrations = SlidingCounts(REGISTRATION_WINDOW, max(1, registrations_per_ip))
        self._registrations_per_ip = registrations_per_ip
        self._clock = clock
        #: In a cluster, the same limits counted across the nodes (shared_limits.py).
        self.shared: SharedLimits | None = None

    async def is_registered(self, name: str) -> str | None:
        """The name as registered, or None."""
        account = await self._storage.account(key(name))
        return account[0] if account else None

    async def authenticate(self, name: str, password: str | None, address: str) -> tuple[str, bool]:
        """The name to log in as (as registered, if it is) and whether it is registered,
        or RequestError (one lookup of the account: a login made two)."""
        account = await self._storage.account(key(name))
        if account is None:
            return name, False
        registered_name, _ = account
        if password is None:
            raise RequestError(ErrorCode.PASSWORD_REQUIRED, name=registered_name)
        await self._check(key(name), registered_name, password, address)
        return registered_name, True

    async def _check(self, name_key: str, shown: str, password: str, address: str) -> None:
        """Reserve, delay, verify (upgrading an outdated hash); RequestError if refused."""
        reservation = self._throttle.reserve(name_key, address)
        if reservation is None:
            raise RequestError(ErrorCode.TOO_MANY_ATTEMPTS, name=shown)
        delay, shared = reservation.delay, Counted()
        if self.shared is not None:
            throttle = self._throttle
            limits = (throttle.per_pair, throttle.per_prefix)
            counted = await self.shared.login_attempt(name_key, address, *limits)
            if counted is None:
                throttle.refund(reservation)
                raise RequestError(ErrorCode.TOO_MANY_ATTEMPTS, name=shown)
            shared, delay = counted, max(delay, throttle.name_delay(counted.before))
        try:
            await self._refunded_unless_wrong(name_key, shown, password, reservation, delay)
        except BaseException as exc:
            if not (isinstance(exc, RequestError) and exc.code is ErrorCode.WRONG_PASSWORD):
                await self._give_back(shared)
            raise
        await self._give_back(shared)

    async def _give_back(self, counted: Counted) -> None:
        if self.shared is not None and counted.entries:
            await self.shared.give_back(counted)

    async def _refunded_unless_wrong(
        self, name_key: str, shown: str, password: str, reservation: Reservation, delay: float
    ) -> None:
        try:
            await asyncio.sleep(delay)
            async with self._names.hold(name_key):
                # Read again under the lock: a check just before may have re-hashed it.
                account = await self._storage.account(name_key)
                if account is None:
                    self._throttle.refund(reservation)
                    raise RequestError(ErrorCode.NOT_REGISTERED, name=shown)
                matched, new_hash = await self._work.run(check_password, password, account[1])
                if matched and new_hash is not None:
                    await self._storage.set_password(name_key, new_hash)
                    log.info("password hash upgraded to the current parameters")
        except ServerBusy:
            self._throttle.refund(reservation)
            raise RequestError(ErrorCode.SERVER_BUSY) from None
        if not matched:
            await asyncio.sleep(self._delay)
            raise RequestError(ErrorCode.WRONG_PASSWORD, name=shown)
        self._throttle.refund(reservation)

    async def _hash(self, password: str) -> str:
        try:
            return await self._work.run(hash_password, password)
        except ServerBusy:
            raise RequestError(ErrorCode.SERVER_BUSY) from None

    async def register(self, ctx: RequestContext, env: Envelope) -> None:
        password = _checked(env["password"])
        prefix = address_prefix(_address(ctx))
        now = self._clock()
        if await self._storage.account(key(ctx.user)) is not None:
            raise RequestError(ErrorCode.ALREADY_REGISTERED, name=ctx.user)
        if self._registrations.count(prefix, now) >= self._registrations_per_ip:
            # limit: accounts per hour from this network.
            raise RequestError(ErrorCode.TOO_MANY_REGISTRATIONS, limit=self._registrations_per_ip)
        # Counted before the slow hash, so simultaneous requests cannot all slip through.
        shared = Counted()
        if self.shared is not None:
            limit = self._registrations_per_ip
            counted = await self.shared.registration(_address(ctx), limit, REGISTRATION_WINDOW)
            if counted is None:
                raise RequestError(ErrorCode.TOO_MANY_REGISTRATIONS, limit=self._registrations_per_ip)
            shared = counted
        self._registrations.add(prefix, now)
        try:
            # The guest's own conversations so far stay theirs (nothing from before their login).
            hashed = await self._hash(password)
            floor = ctx.outbox.reads_from
            created = await self._storage.create_account(key(ctx.user), ctx.user, hashed, reads_from=floor)
        except BaseException:
            self._registrations.remove(prefix, now)
            await self._give_back(shared)
            raise
        if not created:
            self._registrations.remove(prefix, now)
            await self._give_back(shared)
            raise RequestError(ErrorCode.ALREADY_REGISTERED, name=ctx.user)
        ctx.reply("registered", name=ctx.user)

    async def change_password(self, ctx: RequestContext, env: Envelope) -> None:
        account = await self._storage.account(key(ctx.user))
        if account is None:
            raise RequestError(ErrorCode.NOT_REGISTERED, name=ctx.user)
        new_password = _checked(env["new_password"])
        await self._check(key(ctx.user), account[0], env["old_password"], _address(ctx))
        await self._storage.set_password(key(ctx.user), await self._hash(new_password))
        ctx.reply("password_changed")


def _address(ctx: RequestContext) -> str:
    """The requesting connection's IP address ("?" if unknown)."""
    return str(getattr(ctx.outbox, "ip", "?"))


def _checked(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise RequestError(ErrorCode.WEAK_PASSWORD, limit=MIN_PASSWORD_CHARS)
    return password
