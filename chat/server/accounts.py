"""Registered names (SPEC section 6): who may log in as whom, /register and /passwd.

Unregistered names work as before; a registered name needs its password. A wrong password
is answered only after a delay, and repeated failures per name or per address are refused
for a while, so guessing is slow.
"""

from __future__ import annotations

import asyncio

from chat.protocol.envelope import Envelope
from chat.server.errors import RequestError
from chat.server.handlers import Context
from chat.server.names import key
from chat.server.passwords import (
    MIN_PASSWORD_CHARS,
    LoginThrottle,
    hash_password_async,
    verify_password_async,
)
from chat.server.storage import Storage

#: Seconds before a wrong password is answered.
WRONG_PASSWORD_DELAY = 1.0


class Accounts:
    def __init__(self, storage: Storage, wrong_password_delay: float = WRONG_PASSWORD_DELAY) -> None:
        self._storage = storage
        self._throttle = LoginThrottle()
        self._delay = wrong_password_delay

    async def is_registered(self, name: str) -> str | None:
        """The name as registered, or None."""
        account = await self._storage.account(key(name))
        return account[0] if account else None

    async def authenticate(self, name: str, password: str | None, address: str) -> str:
        """The name to log in as (as registered, if it is), or RequestError."""
        account = await self._storage.account(key(name))
        if account is None:
            return name
        registered_name, stored_hash = account
        if password is None:
            raise RequestError("password_required", name=registered_name)
        if self._throttle.blocked(key(name), address):
            raise RequestError("too_many_attempts", name=registered_name)
        if not await verify_password_async(password, stored_hash):
            self._throttle.failed(key(name), address)
            await asyncio.sleep(self._delay)
            raise RequestError("wrong_password", name=registered_name)
        return registered_name

    async def register(self, ctx: Context, env: Envelope) -> None:
        password = _checked(env["password"])
        created = await self._storage.create_account(
            key(ctx.user), ctx.user, await hash_password_async(password)
        )
        if not created:
            raise RequestError("already_registered", name=ctx.user)
        ctx.reply("registered", name=ctx.user)

    async def change_password(self, ctx: Context, env: Envelope) -> None:
        account = await self._storage.account(key(ctx.user))
        if account is None:
            raise RequestError("not_registered", name=ctx.user)
        new_password = _checked(env["new_password"])
        if not await verify_password_async(env["old_password"], account[1]):
            await asyncio.sleep(self._delay)
            raise RequestError("wrong_password", name=ctx.user)
        await self._storage.set_password(key(ctx.user), await hash_password_async(new_password))
        ctx.reply("password_changed")


def _checked(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise RequestError("weak_password", limit=MIN_PASSWORD_CHARS)
    return password
