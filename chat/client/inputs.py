"""Where the client's input lines come from.

``LineInput`` is what the chat loop needs; ``PipeInput`` implements it for line mode
(stdin is a pipe or a file), ``terminal.TerminalInput`` on a terminal.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import sys
import threading
from typing import Protocol


class LineInput(Protocol):
    async def read_line(self, prompt: str = "") -> str | None:
        """The next line without its terminator, or None at end of input."""

    async def read_secret(self, prompt: str) -> str | None:
        """Like read_line, without echo where there is a terminal."""

    def show_status(self, lines: list[str]) -> None:
        """Show these lines (transfer progress) below the input line; [] hides them."""

    def show_identity(self, name: str, online: bool) -> None:
        """Who the user is logged in as, and whether the connection is up (the prompt)."""


class PipeInput:
    """Lines from a pipe or file, read by a daemon thread (portable: no add_reader on
    Windows pipes) that never blocks interpreter exit. Reads raw bytes from the file
    descriptor so the thread holds no lock of ``sys.stdin``."""

    def __init__(self, fd: int | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._eof = False
        if fd is None:
            self._queue.put_nowait(None)
        else:
            threading.Thread(target=self._pump, args=(fd,), name="stdin-reader", daemon=True).start()

    def _put(self, item: str | None) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the client is exiting
            return False
        return True

    def _pump(self, fd: int) -> None:
        decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        pending = ""
        try:
            while chunk := os.read(fd, 65536):
                pending += decoder.decode(chunk)
                *lines, pending = pending.split("\n")
                for line in lines:
                    if not self._put(line.removesuffix("\r")):
                        return
            pending += decoder.decode(b"", final=True)
            if pending:
                self._put(pending.removesuffix("\r"))
        except OSError:
            pass
        finally:
            self._put(None)

    async def read_line(self, prompt: str = "") -> str | None:
        if prompt:
            sys.stdout.write(prompt)
            sys.stdout.flush()
        if self._eof:
            return None
        line = await self._queue.get()
        if line is None:
            self._eof = True
        return line

    async def read_secret(self, prompt: str) -> str | None:
        """In line mode a password is simply the next line (README "Connect a client")."""
        return await self.read_line(prompt)

    def show_status(self, lines: list[str]) -> None:
        """Line mode shows no progress: its output is exactly the events' lines."""

    def show_identity(self, name: str, online: bool) -> None:
        """Line mode has no prompt to show it in."""
