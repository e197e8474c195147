"""The lines the client says on its own, not in answer to an event: its connection, a
lost connection and logging back in, lines that cannot be sent, files it cannot send.

render.py words what the server sends; together they are every line the user reads, and
the message catalogue (catalogue.py, docs/messages.md) lists both. Names of files and
text from elsewhere are made printable here; the output makes every line safe again.
"""

from __future__ import annotations

from chat.safe_text import printable

#: A line typed while the connection is down (terminal mode).
HELD = "(not connected: will send when reconnected)"
#: /register or /passwd while the connection is down: they ask questions first.
NOT_CONNECTED = "Not connected: try again once reconnected."
PASSWORDS_DIFFER = "Passwords do not match; nothing was changed."
#: /quit on a terminal while files are still being sent or received.
WAITING_FOR_TRANSFERS = "Waiting for file transfers to finish (Ctrl-C to stop them)..."


def connected(uri: str, fingerprint: str) -> str:
    """Terminal mode, once the handshake is done."""
    return f"Connected to {uri} (server key {fingerprint}). Type /help for the commands."


def unsent_at_quit(count: int) -> str:
    return f"Not connected: {count} line(s) typed meanwhile were not sent."


def cannot_send(problem: object) -> str:
    """A request the protocol cannot carry (a field too long, a character not allowed)."""
    return f"Cannot send that: {problem}."


def internal_error(error: BaseException) -> str:
    return f"Internal error: {type(error).__name__}: {error}"


def connection_lost(reason: str, *, again: bool = False) -> str:
    """The first half of the reconnecting line (see ``reconnecting_in``)."""
    return f"Connection lost{' again' if again else ''}: {reason}."


def reconnecting_in(what: str, delay: float, *, first: bool) -> str:
    """``what`` is why (``connection_lost``, or why the last attempt failed)."""
    return f"{what} {'Reconnecting' if first else 'Retrying'} in {delay:.0f} s..."


#: Line mode with --reconnect, when the connection is lost (README: fixed words).
LINE_MODE_LOST = "[Connection lost; reconnecting...]"


def reconnected(name: str, *, bracketed: bool = False) -> str:
    """Back online; line mode's words are bracketed like its other system lines."""
    return f"[Reconnected as {name}.]" if bracketed else f"Reconnected as {name}."


def old_session_remains(name: str, retry: float) -> str:
    return f"The server still has the old session of {name}; trying again every {retry:g} s..."


def cannot_log_back_in(name: str, why: str) -> str:
    return f"Cannot log back in as {name}: {why}."


def cannot_send_file(name: str, reason: str) -> str:
    """A file that could not be offered or finished (``name`` as the user typed it, or
    the file's name)."""
    return f"Cannot send {printable(name)}: {printable(reason).rstrip('.')}."


def file_too_large(name: str, limit: int) -> str:
    return f"File {printable(name)} is too large: this client sends at most {limit} bytes."


def file_not_sent(name: str, reason: str) -> str:
    """An offer or a transfer that a lost connection ended."""
    return f"File {printable(name)} was not sent: {reason}."


def transfer_failed(error: BaseException) -> str:
    return f"File transfer failed: internal error: {type(error).__name__}: {error}"


def sending_progress(name: str, target: str, group: bool) -> str:
    """The start of a progress line in the terminal's bottom bar."""
    return f"Sending {printable(name)} to {'group ' if group else ''}{target}"


def receiving_progress(name: str, sender: str) -> str:
    return f"Receiving {printable(name)} from {sender}"
