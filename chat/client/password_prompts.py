"""The chat client's questions for passwords: ``/register`` and ``/passwd`` ask twice
(and say so when the two differ), then send the request; the password that worked is
kept in memory only, to log back in after a lost connection.

A mixin of :class:`client.ChatClient`; ``_Client`` names what it uses of it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from chat.client import own_lines
from chat.client.commands import Send
from chat.client.inputs import LineInput
from chat.client.style import ERROR
from chat.client.transport import ClientSession

PASSWORD_PROMPT = "Password: "
NEW_PASSWORD_PROMPT = "New password: "
REPEAT_PASSWORD_PROMPT = "Repeat password: "


class _Client(Protocol):
    _session: ClientSession
    _lines: LineInput
    _ordered_local_output: bool
    _offered_password: str | None

    async def _show(self, lines: Sequence[str], kind: str) -> None: ...

    async def _send(self, request: Send) -> None: ...

    async def _ask_secret(self, prompt: str) -> str | None: ...

    async def _new_password(self, prompt: str) -> str | None: ...


class PasswordPrompts:
    """Asking for passwords."""

    #: A password sent with /register or /passwd, effective once the server says so.
    _offered_password: str | None

    async def _ask_secret(self: _Client, prompt: str) -> str | None:
        if self._ordered_local_output:
            await self._session.wait_idle()  # the prompt comes after earlier commands' output
        return await self._lines.read_secret(prompt)

    async def _new_password(self: _Client, prompt: str) -> str | None:
        """Ask twice; None (after saying why) if the two differ or input ended."""
        first = await self._ask_secret(prompt)
        second = await self._ask_secret(REPEAT_PASSWORD_PROMPT) if first is not None else None
        if first is None or second is None:
            return None
        if first != second:
            await self._show([own_lines.PASSWORDS_DIFFER], ERROR)
            return None
        return first

    async def _register(self: _Client) -> None:
        password = await self._new_password(PASSWORD_PROMPT)
        if password is not None:
            self._offered_password = password
            await self._send(Send("register", {"password": password}))

    async def _change_password(self: _Client) -> None:
        old = await self._ask_secret(PASSWORD_PROMPT)
        if old is None:
            return
        new = await self._new_password(NEW_PASSWORD_PROMPT)
        if new is not None:
            self._offered_password = new
            await self._send(Send("change_password", {"old_password": old, "new_password": new}))
