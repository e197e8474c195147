"""The message catalogue: every line this client prints for what the server sends, the
lines it says on its own, and the usage lines of its commands, generated from the
templates in render.py, own_lines.py and commands.py
(``python -m chat.client.catalogue > docs/messages.md``).

Another client that wants to show the same words renders from this document; a test
keeps it identical to what the code prints. Values are shown as ``<field>``.
"""

from __future__ import annotations

from typing import Any

from chat.client import commands, file_lines, own_lines, render
from chat.protocol.codes import ErrorCode, NoticeCode
from chat.protocol.envelope import EVENTS, Envelope
from chat.protocol.kinds import Bool, Int, Kind, List, Objects, Str

#: Integer fields whose renderers format them as numbers get a sample number.
_NUMBER = 3
_NUMERIC = {"more", "sent_at", "count"}
#: Times are shown as ``YYYY-MM-DD HH:MM`` in the reader's local time zone.
_TIME = "YYYY-MM-DD HH:MM"
_FAILED = [{"name": "<user>", "detail": "<detail>"}]


def _sample(name: str, kind: Kind) -> Any:
    if isinstance(kind, Str):
        return f"<{name}>"
    if isinstance(kind, Int):
        return _NUMBER if name in _NUMERIC else f"<{name}>"
    if isinstance(kind, Bool):
        return True
    if isinstance(kind, List):
        return [f"<{name[:-1] if name.endswith('s') else name}>"]
    if isinstance(kind, Objects):
        return [{key: _sample(key, sub) for key, sub in kind.schema.items()}]
    raise TypeError(kind)


def _event(kind: str, **overrides: Any) -> Envelope:
    schema = EVENTS[kind]
    fields = {name: _sample(name, k) for name, k in schema.required.items()}
    fields.update(overrides)
    return Envelope(kind, fields)


def _shown(lines: list[str]) -> list[str]:
    """Sample times replaced by their format (they depend on the reader's time zone)."""
    stamp = render.when(_NUMBER)
    return [line.replace(stamp, _TIME) for line in lines]


def _error_lines(code: str) -> list[str]:
    """The line for an error, with and (where it differs) without a ``user``."""
    fields = {"name": "<name>", "group": "<group>", "limit": "<limit>", "detail": "<detail>"}
    bare = render.render(Envelope("error", {"code": code, **fields}))
    named = render.render(Envelope("error", {"code": code, **fields, "user": "<user>", "users": ["<user>"]}))
    return bare if named == bare else [*bare, *named]


def _rows(pairs: list[tuple[str, list[str]]]) -> list[str]:
    rows = ["| what | line(s) |", "|---|---|"]
    for what, lines in pairs:
        shown = "<br>".join(f"`{line}`" for line in lines) if lines else "(nothing shown)"
        rows.append(f"| {what} | {shown.replace('|', '&#124;')} |")
    return rows


def catalogue() -> str:
    """The whole catalogue as Markdown."""
    events = [
        (f"`{kind}`", _shown(render.render(_event(kind))))
        for kind in EVENTS
        if kind not in ("error", "notice") and not kind.startswith("file_")
    ]
    events += [
        ("`private` delivered late", _shown(render.render(_event("private", sent_at=_NUMBER)))),
        ("`user_list` with `more`", render.render(_event("user_list", more=_NUMBER))),
        ("`group_invite_only` off", render.render(_event("group_invite_only", on=False))),
        ("`history` of everyone, empty", render.render(_event("history", target="*", messages=[]))),
        ("`history` with a user, empty", render.render(_event("history", target="@<user>", messages=[]))),
        ("`history` of a group, empty", render.render(_event("history", target="<group>", messages=[]))),
        ("`search_results`, none", render.render(_event("search_results", results=[]))),
        ("`replayed` with `lost`", render.render(_event("replayed", lost=_NUMBER))),
    ]
    errors = [(f"`{code}`", _error_lines(str(code))) for code in ErrorCode]
    errors.append(("an unknown code", _error_lines("<code>")))
    notices = [(f"`{code}`", render.render(Envelope("notice", {"code": str(code)}))) for code in NoticeCode]
    files = [
        ("received (private)", [file_lines.file_received_line("<file>", "<sender>", None)]),
        ("received (group)", [file_lines.file_received_line("<file>", "<sender>", "<group>")]),
        ("refused by this client", [file_lines.file_refused_line("<file>", "<sender>", "<reason>")]),
        ("aborted", [file_lines.file_aborted_line("<file>", "<sender>", "<detail>")]),
        ("not saved", [file_lines.file_damaged_line("<file>", "<sender>", "<problem>")]),
        ("offered, --ask-files", [file_lines.file_asked_line("<file>", "<sender>", 2048, 1, None)]),
        ("declined by the user", [file_lines.file_declined_line("<file>", "<sender>")]),
        ("--open", [file_lines.file_open_offer_line("<file>", 1)]),
        ("--open, a program", [file_lines.file_not_opened_line("<file>")]),
        ("`/accept`, `/decline`: nothing to answer", [file_lines.no_offer_waiting_line(None, [])]),
        ("`/accept <n>`, `/decline <n>`: no such offer", [file_lines.no_offer_waiting_line(7, [1, 2])]),
        ("`/open`: nothing to open", [file_lines.nothing_to_open_line(None)]),
        ("`/open <n>`: no such file", [file_lines.nothing_to_open_line(7)]),
        ("`/open`: it failed", [file_lines.file_open_failed_line("<file>", "<problem>")]),
        ("sent", [file_lines.file_result_line("<file>", "<user>", False, ["<user>"], [])]),
        ("sent to a group", [file_lines.file_result_line("<file>", "<group>", True, ["<user>"], [])]),
        ("not sent", [file_lines.file_result_line("<file>", "<user>", False, [], _FAILED)]),
        ("not delivered to some", [file_lines.file_result_line("<file>", "<group>", True, [], _FAILED)]),
    ]  # fmt: skip
    problem = RuntimeError("<detail>")
    lost = own_lines.connection_lost("<reason>")
    lost_again = own_lines.connection_lost("<reason>", again=True)
    own = [
        ("connected (terminal)", [own_lines.connected("ws://<host>:<port>", "SHA256:<fingerprint>")]),
        ("a line typed while disconnected (terminal)", [own_lines.HELD]),
        ("`/register`, `/passwd` while disconnected", [own_lines.NOT_CONNECTED]),
        ("`/quit` while disconnected", [own_lines.unsent_at_quit(_NUMBER)]),
        ("the two passwords differ", [own_lines.PASSWORDS_DIFFER]),
        ("a request the protocol cannot carry", [own_lines.cannot_send("<problem>")]),
        ("`/quit` with transfers running (terminal)", [own_lines.WAITING_FOR_TRANSFERS]),
        ("connection lost (terminal)", [
            own_lines.reconnecting_in(lost, _NUMBER, first=True),
            own_lines.reconnecting_in("<why the last attempt failed>.", _NUMBER, first=False),
            own_lines.reconnecting_in(lost_again, _NUMBER, first=False),
        ]),
        ("logged back in", [own_lines.reconnected("<name>")]),
        ("line mode with --reconnect: lost, back", [
            own_lines.LINE_MODE_LOST, own_lines.reconnected("<name>", bracketed=True),
        ]),
        ("the old session is still there", [own_lines.old_session_remains("<name>", 0.5)]),
        ("cannot log back in (then the client exits)", [own_lines.cannot_log_back_in("<name>", "<why>")]),
        ("a file that cannot be sent", [own_lines.cannot_send_file("<file>", "<reason>")]),
        ("a file over --max-file-size", [own_lines.file_too_large("<file>", _NUMBER)]),
        ("a file the lost connection stopped", [own_lines.file_not_sent("<file>", "<reason>")]),
        ("progress (terminal bottom bar)", [
            own_lines.sending_progress("<file>", "<user>", False) + ": <progress>",
            own_lines.sending_progress("<file>", "<group>", True) + ": waiting for an answer",
            own_lines.receiving_progress("<file>", "<sender>") + ": <progress>",
        ]),
        ("a bug", [own_lines.internal_error(problem), own_lines.transfer_failed(problem)]),
    ]  # fmt: skip
    usages = [(f"`/{word}`", [usage]) for word, (_, usage) in commands._SLASH.items()]
    parts = [
        "# Message catalogue",
        "",
        "Generated by `python -m chat.client.catalogue` from the client's templates",
        "(`chat/client/render.py`, `chat/client/own_lines.py`, `chat/client/commands.py`); a",
        "test keeps it current. Every",
        "line is printed as one line, with text from other users made visible-safe first",
        "(control, bidi and format characters shown as stand-ins). `<field>` is a value from",
        "the event; PROTOCOL.md section 6 says what each event and code means.",
        "",
        "## Events",
        "",
        *_rows(events),
        "",
        "## Errors (`error {code}`)",
        "",
        *_rows(errors),
        "",
        "## Notices (`notice {code}`)",
        "",
        *_rows(notices),
        "",
        "## File transfers",
        "",
        *_rows(files),
        "",
        "## The client's own lines",
        "",
        *_rows(own),
        "",
        "## Usage lines of the commands",
        "",
        *_rows(usages),
        "",
        "## Help (`/help`)",
        "",
        "```",
        *commands.help_lines(),
        "```",
        "",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(catalogue(), end="")
