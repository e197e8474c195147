"""Where the client's lines go: plain lines on stdout in line mode (exactly the lines of
README's command table, nothing else), styled lines above the input line on a terminal.
Both pass each line through ``printable``, the one place where text from other users is
made harmless for a terminal: whatever a peer sends, one line out is one line shown."""

from __future__ import annotations

import sys
import time
from typing import Protocol

from chat.client.style import STYLE, SYSTEM, styled
from chat.safe_text import printable


class Output(Protocol):
    def show(self, line: str, kind: str = SYSTEM) -> None:
        """Print one line now; ``kind`` is its colour class (style.py)."""


class PlainOutput:
    """Line mode: the line as it is. ``sys.stdout`` is looked up each time (tests and
    ``patch_stdout`` may swap it)."""

    def show(self, line: str, kind: str = SYSTEM) -> None:
        sys.stdout.write(printable(line) + "\n")
        sys.stdout.flush()


class TerminalOutput:
    """A terminal: prompt_toolkit prints the line above the prompt (erasing the input
    line, printing, then drawing it again as it was), in colour unless disabled.
    Every line goes through ``printable`` first: prompt_toolkit alone lets newlines,
    backspaces, BEL and C1 controls through."""

    def __init__(self, *, colour: bool, timestamps: bool) -> None:
        self.colour = colour
        self.timestamps = timestamps

    def show(self, line: str, kind: str = SYSTEM) -> None:
        from prompt_toolkit import print_formatted_text

        stamp = time.time() if self.timestamps else None
        text = styled(printable(line), kind, colour=self.colour, timestamp=stamp)
        print_formatted_text(text, style=STYLE if self.colour else None, flush=True)
