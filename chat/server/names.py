"""The rules for usernames and group names (SPEC sections 4 and 5)."""

from __future__ import annotations

import re

from chat.protocol.limits import MAX_NAME_CHARS

#: Words a user types as commands (with / or @); a user named like one would be ambiguous.
COMMAND_WORDS = frozenset(
    {
        "names", "help", "quit", "group", "add", "kick", "msg", "list", "create", "join",
        "leave", "delete", "file", "groupfile", "showgroups", "showgroupmembers",
        "register", "passwd", "history", "set", "send",
    }
)

GROUP_NAME = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_NAME_CHARS}}}")


def username_problem(name: str) -> str | None:
    """Why ``name`` cannot be a username, as a phrase for the user; None if it can."""
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        return f"it must be 1 to {MAX_NAME_CHARS} characters"
    if any(ch.isspace() or not ch.isprintable() for ch in name):
        return "it cannot contain spaces or control characters"
    if "," in name:
        return "it cannot contain commas"
    if name[0] in "/@":
        return "it cannot start with '/' or '@'"
    if name.casefold() in COMMAND_WORDS:
        return f"'{name}' is a command word"
    return None


def is_group_name(name: str) -> bool:
    return GROUP_NAME.fullmatch(name) is not None


def key(name: str) -> str:
    """Names match case-insensitively; this is the form they are compared in."""
    return name.casefold()
