"""Turning a server event into the exact lines a user sees (README "Commands", docs/messages.md).

``render(event)`` is pure and total: an unknown type or a missing field never raises;
it yields a generic line or nothing, so a newer server cannot crash an older client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chat.protocol.codes import ErrorCode, NoticeCode
from chat.protocol.envelope import Envelope

GROUP_NAME_RULE = "use 1-32 letters, digits, '_', '-' or '.'"


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


#: After a name in a list, marks a registered user (guests' names carry no mark).
REGISTERED_MARK = "\u2713"


def marked(names: list[str], registered: list[str] | None) -> list[str]:
    """``names`` with the registered ones marked (``sophia✓``). A guest cannot fake the
    mark: names cannot contain symbols."""
    accounts = set(registered or [])
    return [name + REGISTERED_MARK if name in accounts else name for name in names]


def _group_members(event: Envelope) -> list[str]:
    groups: list[dict[str, Any]] = event.get("groups") or []
    if not groups:
        return ["You are not in any group."]
    lists = [" ".join(marked(entry.get("members", []), entry.get("registered"))) for entry in groups]
    if len(groups) == 1:
        lines = lists
    else:
        lines = [f"{entry.get('group', '')}: {names}" for entry, names in zip(groups, lists, strict=True)]
    if event.get("more"):
        lines[-1] += _more(event)
    return lines


def when(timestamp: int) -> str:
    """A server timestamp (UTC seconds) as local date and time."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _private(event: Envelope) -> list[str]:
    sent_at = event.get("sent_at")
    late = f" (sent {when(sent_at)})" if sent_at is not None else ""
    return [f"Private message from {event.get('sender', '')}{late}: {event.get('text', '')}"]


def _history(event: Envelope) -> list[str]:
    messages: list[dict[str, Any]] = event.get("messages") or []
    if not messages:
        target = str(event.get("target", event.get("group", "")))
        at = target.startswith("@")
        where = "to everyone" if target == "*" else f"with {target[1:]}" if at else f"in group {target}"
        return [f"No messages {where} yet."]
    lines = [f"[{when(m['sent_at'])}] {m['sender']}: {m['text']}" for m in messages]
    more = event.get("more")
    if more:
        lines.insert(0, f"({more:,} earlier message(s) did not fit in one reply; ask for fewer.)")
    return lines


def _search_results(event: Envelope) -> list[str]:
    results: list[dict[str, Any]] = event.get("results") or []
    if not results:
        return [f"No messages found for: {event.get('words', '')}"]
    return [f"[{when(r['sent_at'])}] {r['where']} {r['sender']}: {r['text']}" for r in results]


#: Notice lines by code (PROTOCOL.md section 6.3).
NOTICES: dict[NoticeCode, str] = {
    NoticeCode.TOO_FAST: "[You are sending too fast; slow down.]",
    NoticeCode.SHUTDOWN: "Server is shutting down.",
    NoticeCode.CLUSTER_LOST: "[The server lost contact with the other servers of the service; "
    "messages to and from users on them are delayed, not lost.]",
    NoticeCode.CLUSTER_BACK: "[The server is in contact with the other servers again; "
    "delayed messages follow.]",
}


def _notice(event: Envelope) -> list[str]:
    code = event.get("code", "")
    if code in NOTICES:
        return [NOTICES[code]]
    detail = event.get("detail")
    return [f"[Notice: {code}: {detail}]" if detail else f"[Notice: {code}]"]


def _user_not_online(event: Envelope) -> str:
    users: list[str] = event.get("users") or []
    if len(users) == 1:
        return f"User '{users[0]}' is not online."
    if users:
        return f"Users {_quoted(users)} are not online."
    return "User is not online."


def _member_error(event: Envelope, status: str) -> str:
    group, user = event.get("group", ""), event.get("user")
    if user:
        return f"User '{user}' is {status} group {group}."
    return f"You are {status} group {group}."


def _username_invalid(event: Envelope) -> str:
    detail = str(event.get("detail") or "").rstrip(".")
    reason = f": {detail}" if detail else ""
    return f"[Invalid username '{event.get('name', '')}'{reason}.]"


def _too_many_groups(event: Envelope) -> str:
    if event.get("user"):
        return "User '{user}' is in too many groups (limit {limit}).".format_map(_Fields(event.fields))
    return "The server has too many groups (limit {limit}).".format_map(_Fields(event.fields))


def _with_detail(template: str, bare: str) -> Callable[[Envelope], str]:
    """``template`` when the error carries a ``detail``, else ``bare``."""
    return lambda event: template.format_map(_Fields(event.fields)) if event.get("detail") else bare


#: Error lines by code: a template formatted with the error's fields (missing ones are
#: empty), or a function of the whole event where the line depends on what is present.
ERRORS: dict[ErrorCode, str | Callable[[Envelope], str]] = {
    ErrorCode.NOT_LOGGED_IN: "You must log in first.",
    ErrorCode.ALREADY_LOGGED_IN: "You are already logged in.",
    ErrorCode.USERNAME_TAKEN: "[Username '{name}' is already in use. Please enter another name.]",
    ErrorCode.USERNAME_INVALID: _username_invalid,
    ErrorCode.REGISTRATION_REQUIRED: (
        "[This server admits registered users only; ask its operator for an account.]"
    ),
    ErrorCode.INVITE_ONLY: "[You cannot join {group}: it is invite-only; ask its owner to add you.]",
    ErrorCode.TOO_MANY_INVITATIONS: "User '{user}' has too many groups they were added to (limit {limit}).",
    ErrorCode.USERNAME_RESERVED: "[The name '{name}' is reserved. Please enter another name.]",
    ErrorCode.USER_NOT_ONLINE: _user_not_online,
    ErrorCode.NO_SUCH_GROUP: "Group '{group}' does not exist.",
    ErrorCode.GROUP_EXISTS: "Group '{group}' already exists.",
    ErrorCode.INVALID_GROUP_NAME: "Invalid group name '{group}': " + GROUP_NAME_RULE + ".",
    ErrorCode.NOT_MEMBER: lambda event: _member_error(event, "not a member of"),
    ErrorCode.ALREADY_MEMBER: lambda event: _member_error(event, "already a member of"),
    ErrorCode.NOT_OWNER: "Only the owner of {group} can do that.",
    ErrorCode.KICKED: "[You cannot join {group}: you were removed by its owner.]",
    ErrorCode.CANNOT_KICK_SELF: "You cannot remove yourself from {group}; use /leave {group}.",
    ErrorCode.TOO_MANY_GROUPS: _too_many_groups,
    ErrorCode.TOO_MANY_OWNED_GROUPS: "You own too many groups (limit {limit}); /delete one first.",
    ErrorCode.CREATING_GROUPS_TOO_FAST: "[You are creating groups too fast (at most {limit} an hour); "
    "try again later.]",
    ErrorCode.PASSWORD_REQUIRED: "",  # the client asks for the password instead
    ErrorCode.WRONG_PASSWORD: "[Wrong password.]",
    ErrorCode.TOO_MANY_ATTEMPTS: "[Too many wrong passwords for '{name}'; try again later.]",
    ErrorCode.ALREADY_REGISTERED: "[Name '{name}' is already registered.]",
    ErrorCode.NOT_REGISTERED: "[Name '{name}' is not registered; use /register first.]",
    ErrorCode.WEAK_PASSWORD: "Password too short: use at least {limit} characters.",
    ErrorCode.BAD_REQUEST: _with_detail("Bad request: {detail}", "Bad request."),
    ErrorCode.INTERNAL_ERROR: "[The server could not handle that request.]",
    ErrorCode.NETWORK_TOO_FAST: "[Your network is sending too fast; that was not sent. Slow down.]",
    ErrorCode.MAILBOX_FULL: "[{user}'s mailbox is full; the message was not stored.]",
    ErrorCode.MAILBOX_SHARE_FULL: (
        "[You have left {user} as many messages as one sender may; the message was not stored.]"
    ),
    # File transfer errors; the transfer that caused them shows them with the file's name
    # (file_offer_error_line), these are for any that arrive without that context.
    ErrorCode.FILE_TOO_LARGE: "File is too large: the server accepts at most {limit} bytes.",
    ErrorCode.NO_RECIPIENTS: "No other member of group {group} is online.",
    ErrorCode.TOO_MANY_TRANSFERS: "Too many file transfers at once (limit {limit}); wait for one to finish.",
    ErrorCode.BAD_TRANSFER: _with_detail("File transfer error: {detail}.", "File transfer error."),
    ErrorCode.SERVER_BUSY: "[The server is busy; try again in a moment.]",
    ErrorCode.TOO_MANY_REGISTRATIONS: "[Too many new accounts from your network (at most {limit} an hour); "
    "try again later.]",
}


def _error_line(event: Envelope) -> str:
    code = event.get("code", "")
    line = ERRORS.get(code)
    if line is None:
        detail = event.get("detail")
        return f"Error: {code}: {detail}" if detail else f"Error: {code}"
    if isinstance(line, str):
        return line.format_map(_Fields(event.fields))
    return line(event)


def _presence(template: str) -> Callable[[Envelope], list[str]]:
    """A ``user_joined`` / ``user_exited`` event: one line per name, in order."""

    def render_names(event: Envelope) -> list[str]:
        return [template.format(name=name) for name in event.get("names") or []]

    return render_names


def _line(template: str) -> Callable[[Envelope], list[str]]:
    """An event shown as one line: ``template`` formatted with the event's fields."""

    def render_one(event: Envelope) -> list[str]:
        return [template.format_map(_Fields(event.fields))]

    return render_one


def _more(event: Envelope) -> str:
    """The tail of a /list line when the server named only the first users online."""
    more = event.get("more")
    return f" and {more:,} more" if more else ""


class _Fields(dict[str, Any]):
    """Missing fields format as empty strings instead of raising."""

    def __missing__(self, key: str) -> str:
        return ""


_RENDERERS: dict[str, Callable[[Envelope], list[str]]] = {
    "ok": lambda event: [],
    "offline_page": lambda event: [],  # acknowledged by the client, not shown
    "welcome": _line("[Welcome {name}]"),
    "user_joined": _presence("[{name} joined]"),
    "user_exited": _presence("[{name} exited]"),
    "user_list": lambda event: [
        ", ".join(marked(event.get("users") or [], event.get("registered"))) + _more(event)
    ],
    "broadcast": _line("[Broadcast from {sender}]: {text}"),
    "private": _private,
    "private_sent": _line("Private message to {to}: {text}"),
    "private_queued": _line("[{to} is offline; the message will be delivered at their next login.]"),
    "group_created": _line("Group {group} created and joined."),
    "group_added": _line("[You have been added to the {group} group]"),
    "group_joined": _line("Joined group {group}"),
    "member_joined": _line("[{name} joined group {group}]"),
    "group_list": lambda event: [(", ".join(event.get("groups") or []) or "No groups.") + _more(event)],
    "group_invite_only": lambda event: [
        f"[Group {event.get('group', '')} is now invite-only: only you add members.]"
        if event.get("on")
        else f"[Group {event.get('group', '')} is open: anyone may join.]"
    ],
    "group_members": _group_members,
    "group_message": _line("[Receive group {group} message from {sender}]: {text}"),
    "group_left": _line("[You have successfully left the {group} group.]"),
    "member_left": _line("[{name} has left the {group} group.]"),
    "group_delete_done": _line("[Group '{group}' has been successfully deleted.]"),
    "group_deleted": _line("[Group '{group}' has been deleted.]"),
    "missed": _line("[You missed {count} broadcast messages: your connection was too slow for them.]"),
    "group_removed": _line("[You have been removed from the {group} group]"),
    "member_added": _line("[{name} has been added to the {group} group]"),
    "member_removed": _line("[{name} has been removed from the {group} group]"),
    "notice": _notice,
    "error": lambda event: [line for line in [_error_line(event)] if line],
    "registered": _line("[Name '{name}' is now registered.]"),
    "password_changed": lambda event: ["[Password changed.]"],
    "group_history": _history,
    "history": _history,
    "search_results": _search_results,
    "unread": lambda event: [
        f"[{g['count']:,} new message(s) in group {g['group']} since you were last here:"
        f" /history {g['group']}]"
        for g in event.get("groups") or []
    ],
    "replayed": lambda event: (
        [f"[{event['lost']:,} message(s) sent while you were away are no longer kept: see /history.]"]
        if event.get("lost")
        else []
    ),
}


def render(event: Envelope) -> list[str]:
    """The lines to print for ``event``; an empty list for ``ok`` and unknown types."""
    renderer = _RENDERERS.get(event.type)
    if renderer is None:
        return []
    try:
        return renderer(event)
    except (TypeError, ValueError, AttributeError):
        # Only reachable with a hand-built Envelope: decoded events are schema-checked.
        return []
