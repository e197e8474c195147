"""Text from another party made harmless before a terminal or a log shows it.

One function, ``printable``, used by the client's output (every line it shows) and by
the server's log formatter (every line it writes), so a message, a name or a reason can
neither drive a terminal (escape sequences, OSC 52 clipboard writes, BEL) nor forge a
line (newline, carriage return, backspace) nor reorder what is shown (bidi controls).
"""

from __future__ import annotations

import re
import unicodedata

#: Format characters that are safe inside ordinary text: zero-width (non-)joiners shape
#: emoji sequences and Persian or Indic words; they cannot move or hide other text.
_KEPT_FORMAT = frozenset("\u200c\u200d")


def _visible(char: str) -> str:
    """How an unsafe character is shown: C0 controls as their Control Pictures
    (U+2400..U+241F, so a newline is ``␊``), DEL as ``␡``, everything else as
    ``<U+XXXX>``."""
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return f"<U+{code:04X}>"


def _unsafe(char: str) -> bool:
    """Controls (C0, DEL, C1), format characters (bidi controls and isolates, zero-width
    space, soft hyphen, tags, ...), line and paragraph separators, private-use,
    surrogate and unassigned code points: anything that could drive a terminal, move
    text around or hide it."""
    if char in _KEPT_FORMAT:
        return False
    return unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


_SAFE_RUN = re.compile(r"[\x20-\x7e\xa0-\xac\xae-\xff]*")


def printable(text: str) -> str:
    """``text`` from another user (a message, a name, a file name, a reason) made
    harmless for a terminal and a log: every character that could drive the terminal
    (escape sequences, OSC 52 clipboard writes, BEL), forge a line (newline, carriage
    return, backspace) or reorder what is shown (bidi controls) is replaced by a visible
    stand-in, so one event is always exactly one line and looks like what was sent."""
    if _SAFE_RUN.fullmatch(text):
        return text  # the common case: nothing to look at character by character
    return "".join(_visible(ch) if _unsafe(ch) else ch for ch in text)
