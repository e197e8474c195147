"""The server's log: one line per event, whatever a peer put in the names and errors it
quotes (review finding M11: an unknown field name holding a newline and escape sequences
forged log lines and drove an operator's terminal)."""

from __future__ import annotations

import logging
import sys

from chat.safe_text import printable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Characters of one log message kept; a peer cannot make one line arbitrarily long.
MAX_MESSAGE_CHARS = 2000


class SafeFormatter(logging.Formatter):
    """Escapes every log message with :func:`printable` (tracebacks, written by the
    server itself, keep their lines) and truncates it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = printable(record.getMessage())
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + f"... ({len(message) - MAX_MESSAGE_CHARS} more)"
        record.message = message
        return super().formatMessage(record)


def configure(level: str) -> None:
    """Log to stderr through :class:`SafeFormatter`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("websockets").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
