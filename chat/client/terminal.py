"""Reading what the user types on a terminal (prompt_toolkit).

The chat prompt (``sophia> ``) has Tab completion of command words, online usernames and
group names (from the roster), and Up/Down history of what was typed at it, kept in
memory only: a chat whose traffic is encrypted should not leave its messages in a file.
Questions, usernames and passwords are asked at a second prompt without history, so a
password never comes back with Up.
"""

from __future__ import annotations

import contextlib

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import DummyHistory, InMemoryHistory
from prompt_toolkit.shortcuts import CompleteStyle

from chat.client.completion import ChatCompleter
from chat.client.roster import Roster
from chat.client.style import STYLE

CHAT_PROMPT = "> "


class TerminalInput:
    def __init__(self, roster: Roster, *, colour: bool) -> None:
        self._colour = colour
        self._prompt = CHAT_PROMPT
        style = STYLE if colour else None
        self._chat: PromptSession[str] = PromptSession(
            history=InMemoryHistory(),
            completer=ChatCompleter(roster),
            # Like a shell: Tab completes (a common prefix, or lists the candidates when
            # several remain); nothing pops up while typing.
            complete_style=CompleteStyle.READLINE_LIKE,
            complete_while_typing=False,
            style=style,
        )
        self._plain: PromptSession[str] = PromptSession(history=DummyHistory(), style=style)

    def _message(self) -> FormattedText:
        return FormattedText([("class:prompt" if self._colour else "", self._prompt)])

    async def read_line(self, prompt: str = "") -> str | None:
        """A chat line, or the answer to ``prompt`` (asked without history)."""
        try:
            if prompt:
                return await self._plain.prompt_async(prompt)
            return await self._chat.prompt_async(self._message)
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C: leave quietly
            return None

    async def read_secret(self, prompt: str) -> str | None:
        try:
            return await self._plain.prompt_async(prompt, is_password=True)
        except (EOFError, KeyboardInterrupt):
            return None

    def show_identity(self, name: str, online: bool) -> None:
        """The chat prompt says who you are, and when the connection is down."""
        self._prompt = f"{name}> " if online else f"{name} (reconnecting)> "
        self._redraw()

    def show_status(self, lines: list[str]) -> None:
        toolbar = "\n".join(lines) if lines else None
        if toolbar == self._chat.bottom_toolbar:
            return
        # prompt_toolkit re-reads this attribute at each redraw; None hides the bar.
        self._chat.bottom_toolbar = toolbar
        self._redraw()

    def _redraw(self) -> None:
        with contextlib.suppress(Exception):  # no prompt on screen at the moment
            self._chat.app.invalidate()
