"""Turning one input line into what the client should do (README "Commands").

``parse(line)`` is pure: it returns a ``Send`` (a request for ``encode_request``), a
``SendFile`` (a file transfer the client runs), an ``Action`` the client performs itself
(help, quit), a ``Show`` (local lines such as a usage message) or ``None`` (nothing to
do). Every value it puts in a ``Send`` already
fits the envelope limits, so a parsed request can always be encoded.

``COMMANDS`` is the command table: ``/help`` prints it and Tab completion uses its words.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from chat.protocol.envelope import MAX_HISTORY, MAX_SEARCH_CHARS
from chat.protocol.limits import MAX_LIST_ITEMS, MAX_NAME_CHARS, MAX_TEXT_CHARS


@dataclass(frozen=True)
class Send:
    """A request to send: ``encode_request(kind, **fields)``."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Show:
    """Lines to print locally; nothing is sent."""

    lines: tuple[str, ...]

    @classmethod
    def line(cls, text: str) -> Show:
        return cls((text,))


@dataclass(frozen=True)
class SendFile:
    """``/file`` or ``/groupfile``: send the file at ``path`` (as typed, not yet checked)
    to the user or group ``target``."""

    target: str
    path: str
    group: bool = False


@dataclass(frozen=True)
class FileAnswer:
    """``/accept [N]`` or ``/decline [N]``: answer a file offer (``--ask-files``); without
    a number, the oldest one waiting."""

    accept: bool
    number: int | None = None


@dataclass(frozen=True)
class OpenReceived:
    """``/open [N]``: open a file received with ``--open`` (without a number, the latest)."""

    number: int | None = None


class Action(Enum):
    HELP = "help"
    QUIT = "quit"
    #: The client asks for the password(s), then sends the request.
    REGISTER = "register"
    PASSWD = "passwd"


Parsed = Send | SendFile | FileAnswer | OpenReceived | Show | Action | None


@dataclass(frozen=True)
class Command:
    """One row of the command table: its syntax, its aliases' syntax, what it does."""

    syntax: str
    aliases: tuple[str, ...]
    description: str


COMMANDS: tuple[Command, ...] = (
    Command("<message>", (), "send a message to everyone online"),
    Command("/msg <username> <message>", ("@<username> <message>",), "send a private message"),
    Command("/list", ("@names",), "list who is online"),
    Command(
        "/create <group> [<user1,user2,...>]",
        ("@group set <group> <user1,user2,...>",),
        "create and join a group, adding users",
    ),
    Command("/join <group>", (), "join a group"),
    Command("/showgroups", (), "list the groups"),
    Command("/showgroupmembers [<group>]", (), "members of a group (default: yours)"),
    Command("/group <group> <message>", ("@group send <group> <message>",), "send a message to a group"),
    Command("/leave <group>", ("@group leave <group>",), "leave a group"),
    Command("/delete <group>", ("@group delete <group>",), "delete a group you own"),
    Command("/add <group> <username>", ("@add <group> <username>",), "add a user to a group you own"),
    Command("/kick <group> <username>", ("@kick <group> <username>",), "remove a user from a group you own"),
    Command("/inviteonly <group> on|off", (), "on: only you add members to a group you own; off: open"),
    Command("/history [<target>] [<n>]", (), "messages of * (everyone, the default), @user, or a group"),
    Command("/search <words>", (), "find messages you may read that have all the words (newest first)"),
    Command("/register", (), "protect your name with a password"),
    Command("/passwd", (), "change your password"),
    Command("/file <username> <path>", (), "send a file to a user"),
    Command("/groupfile <group> <path>", (), "send a file to a group"),
    Command("/accept [<n>]", (), "accept file offer n (--ask-files; default: the oldest)"),
    Command("/decline [<n>]", (), "decline file offer n (default: the oldest)"),
    Command("/open [<n>]", (), "open received file n (--open; default: the latest)"),
    Command("/help", ("@help",), "show this list"),
    Command("/quit", ("@quit",), "leave the chat"),
)


MESSAGE_TOO_LONG = f"Message too long (limit {MAX_TEXT_CHARS} characters)."
_GROUP_USAGE = "Usage: @group set|send|leave|delete <group> ..."


def help_lines() -> list[str]:
    """One line per command: its syntax in a column, what it does, and its aliases."""
    width = max(len(command.syntax) for command in COMMANDS)
    lines = []
    for command in COMMANDS:
        also = f" (also {', '.join(command.aliases)})" if command.aliases else ""
        lines.append(f"{command.syntax.ljust(width)}  {command.description}{also}")
    return lines


# --- splitting ------------------------------------------------------------------------

_WORD = re.compile(r"(\S+)\s*")


def _take(rest: str) -> tuple[str, str]:
    """Split off the next whitespace-delimited word; the remainder keeps its inner spacing."""
    match = _WORD.match(rest)
    if match is None:
        return "", ""
    return match.group(1), rest[match.end() :]


def _words(rest: str) -> list[str]:
    return rest.split()


# --- local checks (so nothing un-encodable is ever sent) ------------------------------


def _user_error(user: str) -> Show | None:
    if len(user) > MAX_NAME_CHARS:
        return Show.line(f"User '{user}' is not online.")
    return None


def _group_error(group: str) -> Show | None:
    if len(group) > MAX_NAME_CHARS:
        return Show.line(f"Group '{group}' does not exist.")
    return None


def _text_error(text: str) -> Show | None:
    if len(text) > MAX_TEXT_CHARS:
        return Show.line(MESSAGE_TOO_LONG)
    return None


# --- the commands -----------------------------------------------------------------------
# Each handler takes what follows the command word (leading whitespace removed) and the
# usage line to show when the form is wrong.


def _no_args(kind: str | Action) -> Callable[[str, str], Parsed]:
    def handler(rest: str, usage: str) -> Parsed:
        if rest.strip():
            return Show.line(usage)
        return kind if isinstance(kind, Action) else Send(kind)

    return handler


def _private(rest: str, usage: str) -> Parsed:
    user, text = _take(rest)
    if not user or not text:
        return Show.line(usage)
    return _user_error(user) or _text_error(text) or Send("private", {"to": user, "text": text})


def _group_text(rest: str, usage: str) -> Parsed:
    group, text = _take(rest)
    if not group or not text:
        return Show.line(usage)
    return _group_error(group) or _text_error(text) or Send("group_message", {"group": group, "text": text})


def _one_group(kind: str) -> Callable[[str, str], Parsed]:
    def handler(rest: str, usage: str) -> Parsed:
        words = _words(rest)
        if len(words) != 1:
            return Show.line(usage)
        return _group_error(words[0]) or Send(kind, {"group": words[0]})

    return handler


def _group_user(kind: str) -> Callable[[str, str], Parsed]:
    def handler(rest: str, usage: str) -> Parsed:
        words = _words(rest)
        if len(words) != 2:
            return Show.line(usage)
        group, user = words
        return _group_error(group) or _user_error(user) or Send(kind, {"group": group, "user": user})

    return handler


def _create(rest: str, usage: str, *, members_required: bool = False) -> Parsed:
    group, member_text = _take(rest)
    if not group:
        return Show.line(usage)
    # Usernames never contain commas or spaces, so both separate names.
    members = [name for name in re.split(r"[,\s]+", member_text) if name]
    if members_required and not members:
        return Show.line(usage)
    if len(group) > MAX_NAME_CHARS:
        return Show.line(f"Invalid group name '{group}': use 1-32 letters, digits, '_', '-' or '.'.")
    for member in members:
        if error := _user_error(member):
            return error
    if len(members) > MAX_LIST_ITEMS:
        return Show.line(f"Too many users (limit {MAX_LIST_ITEMS}).")
    fields: dict[str, Any] = {"group": group}
    if members:
        fields["members"] = members
    return Send("group_create", fields)


def _show_members(rest: str, usage: str) -> Parsed:
    words = _words(rest)
    if len(words) > 1:
        return Show.line(usage)
    if not words:
        return Send("group_members")
    return _group_error(words[0]) or Send("group_members", {"group": words[0]})


def _unquote(path: str) -> str:
    """The path as typed, without surrounding whitespace or one pair of matching quotes
    (terminals quote a dropped file's path that has spaces in it)."""
    path = path.strip()
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "\"'":
        path = path[1:-1]
    return path


def _file(group: bool) -> Callable[[str, str], Parsed]:
    def handler(rest: str, usage: str) -> Parsed:
        target, path_text = _take(rest)
        path = _unquote(path_text)
        if not target or not path:
            return Show.line(usage)
        error = _group_error(target) if group else _user_error(target)
        return error or SendFile(target, path, group)

    return handler


def _history(rest: str, usage: str) -> Parsed:
    """``[<target>] [<count>]``: a lone number is a count of messages to everyone."""
    words = _words(rest)
    if len(words) > 2:
        return Show.line(usage)
    if len(words) == 1 and words[0].isdigit():
        words = ["*", words[0]]
    target = words[0] if words else "*"
    fields: dict[str, Any] = {"target": target}
    if len(words) == 2:
        if not words[1].isdigit() or not 1 <= int(words[1]) <= MAX_HISTORY:
            return Show.line(f"The count must be a number from 1 to {MAX_HISTORY}.")
        fields["limit"] = int(words[1])
    if target.startswith("@"):
        error = _user_error(target[1:]) if target != "@" else Show.line(usage)
    else:
        error = _group_error(target) if target != "*" else None
    return error or Send("history", fields)


def _search(rest: str, usage: str) -> Parsed:
    words = rest.strip()
    if not words:
        return Show.line(usage)
    if len(words) > MAX_SEARCH_CHARS:
        return Show.line(f"Search for fewer words (at most {MAX_SEARCH_CHARS} characters).")
    return Send("search", {"words": words})


def _optional_number(make: Callable[[int | None], Parsed]) -> Callable[[str, str], Parsed]:
    def handler(rest: str, usage: str) -> Parsed:
        words = _words(rest)
        if not words:
            return make(None)
        if len(words) != 1 or not words[0].isdigit() or len(words[0]) > 9:
            return Show.line(usage)
        return make(int(words[0]))

    return handler


def _invite_only(rest: str, usage: str) -> Parsed:
    words = _words(rest)
    if len(words) != 2 or words[1].lower() not in ("on", "off"):
        return Show.line(usage)
    fields = {"group": words[0], "on": words[1].lower() == "on"}
    return _group_error(words[0]) or Send("group_invite_only", fields)


def _at_group(rest: str, usage: str) -> Parsed:
    sub, args = _take(rest)
    handler = _AT_GROUP.get(sub.lower())
    if handler is None:
        return Show.line(_GROUP_USAGE)
    return handler(args)


_AT_GROUP: dict[str, Callable[[str], Parsed]] = {
    "set": lambda args: _create(args, "Usage: @group set <group> <user1,user2,...>", members_required=True),
    "send": lambda args: _group_text(args, "Usage: @group send <group> <message>"),
    "leave": lambda args: _one_group("group_leave")(args, "Usage: @group leave <group>"),
    "delete": lambda args: _one_group("group_delete")(args, "Usage: @group delete <group>"),
}

#: command word -> (handler, usage line)
_SLASH: dict[str, tuple[Callable[[str, str], Parsed], str]] = {
    "msg": (_private, "Usage: /msg <username> <message>"),
    "list": (_no_args("list"), "Usage: /list"),
    "create": (_create, "Usage: /create <group> [<user1,user2,...>]"),
    "join": (_one_group("group_join"), "Usage: /join <group>"),
    "showgroups": (_no_args("group_list"), "Usage: /showgroups"),
    "showgroupmembers": (_show_members, "Usage: /showgroupmembers [<group>]"),
    "group": (_group_text, "Usage: /group <group> <message>"),
    "leave": (_one_group("group_leave"), "Usage: /leave <group>"),
    "delete": (_one_group("group_delete"), "Usage: /delete <group>"),
    "add": (_group_user("group_add"), "Usage: /add <group> <username>"),
    "kick": (_group_user("group_kick"), "Usage: /kick <group> <username>"),
    "history": (_history, "Usage: /history [* | @<username> | <group>] [<count>]"),
    "search": (_search, "Usage: /search <words>"),
    "inviteonly": (_invite_only, "Usage: /inviteonly <group> on|off"),
    "register": (_no_args(Action.REGISTER), "Usage: /register"),
    "passwd": (_no_args(Action.PASSWD), "Usage: /passwd"),
    "file": (_file(group=False), "Usage: /file <username> <path>"),
    "groupfile": (_file(group=True), "Usage: /groupfile <group> <path>"),
    "accept": (_optional_number(lambda n: FileAnswer(True, n)), "Usage: /accept [<n>]"),
    "decline": (_optional_number(lambda n: FileAnswer(False, n)), "Usage: /decline [<n>]"),
    "open": (_optional_number(OpenReceived), "Usage: /open [<n>]"),
    "help": (_no_args(Action.HELP), "Usage: /help"),
    "quit": (_no_args(Action.QUIT), "Usage: /quit"),
}

_AT: dict[str, tuple[Callable[[str, str], Parsed], str]] = {
    "names": (_no_args("list"), "Usage: @names"),
    "group": (_at_group, _GROUP_USAGE),
    "add": (_group_user("group_add"), "Usage: @add <group> <username>"),
    "kick": (_group_user("group_kick"), "Usage: @kick <group> <username>"),
    "help": (_no_args(Action.HELP), "Usage: @help"),
    "quit": (_no_args(Action.QUIT), "Usage: @quit"),
}


#: Every literal command word, for Tab completion.
COMMAND_WORDS: tuple[str, ...] = tuple(f"/{word}" for word in _SLASH) + tuple(f"@{word}" for word in _AT)


def parse(line: str) -> Parsed:
    """Parse one input line (without its line terminator)."""
    if not line.strip():
        return None
    if line[0] == "/":
        word, rest = _take(line)
        entry = _SLASH.get(word[1:].lower())
        if entry is None:
            return Show.line(f"Unknown command '{word}'. Type /help for the list of commands.")
        handler, usage = entry
        return handler(rest, usage)
    if line[0] == "@":
        word, rest = _take(line)
        entry = _AT.get(word[1:].lower())
        if entry is None:
            # Any other @word is a private message to that user.
            return _private(line[1:], "Usage: @<username> <message>")
        handler, usage = entry
        return handler(rest, usage)
    return _text_error(line) or Send("broadcast", {"text": line})
