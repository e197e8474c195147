"""How the interactive client colours a line, by the kind of event it came from.

Colours are prompt_toolkit style classes, off when ``NO_COLOR`` is set (no-color.org) or
``--no-color`` is given. Line mode never colours anything.
"""

from __future__ import annotations

import os
import time

from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.styles import Style

PRIVATE, GROUP, SYSTEM, ERROR, BROADCAST, FILE = "private", "group", "system", "error", "broadcast", "file"
#: Local text such as /help: the terminal's own colour.
PLAIN = "plain"

_KINDS: dict[str, str] = {
    "private": PRIVATE, "private_sent": PRIVATE, "private_queued": PRIVATE,
    "group_message": GROUP, "group_history": GROUP, "history": GROUP,
    "broadcast": BROADCAST,
    "error": ERROR,
}

STYLE = Style.from_dict(
    {
        PRIVATE: "ansimagenta",
        GROUP: "ansicyan",
        SYSTEM: "ansiyellow",
        ERROR: "ansired bold",
        BROADCAST: "",
        PLAIN: "",
        FILE: "ansigreen",
        "timestamp": "ansibrightblack",
        "prompt": "bold",
    }
)


def colour_enabled(no_color_flag: bool = False) -> bool:
    return not no_color_flag and not os.environ.get("NO_COLOR")


def kind_of(event_type: str) -> str:
    """The colour class of a line rendered from an event of this type."""
    if event_type.startswith("file_"):
        return FILE
    return _KINDS.get(event_type, SYSTEM)


def styled(line: str, kind: str, *, colour: bool, timestamp: float | None = None) -> FormattedText:
    """One line ready for prompt_toolkit's print_formatted_text."""
    parts: list[tuple[str, str]] = []
    if timestamp is not None:
        clock = time.strftime("%H:%M ", time.localtime(timestamp))
        parts.append(("class:timestamp" if colour else "", clock))
    parts.append((f"class:{kind}" if colour else "", line))
    return FormattedText(parts)
