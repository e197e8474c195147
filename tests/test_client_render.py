"""render(): the exact lines for every event and error code (SPEC section 4)."""

from __future__ import annotations

from typing import Any

import pytest

from chat.client.render import render
from chat.protocol.envelope import EVENTS, Envelope, decode_event, encode_event


def ev(kind: str, **fields: Any) -> Envelope:
    """An event as the client receives it: encoded and decoded by the real codec."""
    return decode_event(encode_event(kind, **fields))


EVENT_LINES: list[tuple[Envelope, list[str]]] = [
    (ev("welcome", name="sophia"), ["[Welcome sophia]"]),
    (ev("user_joined", name="jojo"), ["[jojo joined]"]),
    (ev("user_exited", name="jojo"), ["[jojo exited]"]),
    (ev("user_list", users=["sophia", "jojo"]), ["sophia, jojo"]),
    (ev("user_list", users=["sophia"]), ["sophia"]),
    (ev("broadcast", sender="nana", text="hi"), ["[Broadcast from nana]: hi"]),
    (ev("broadcast", sender="nana", text="  two  spaces "), ["[Broadcast from nana]:   two  spaces "]),
    (ev("broadcast", sender="nana", text="{name} {0}"), ["[Broadcast from nana]: {name} {0}"]),
    (ev("private", sender="sophia", text="How are you?"), ["Private message from sophia: How are you?"]),
    (ev("private_sent", to="jojo", text="How are you?"), ["Private message to jojo: How are you?"]),
    (
        ev("private", sender="sophia", text="while you were out", sent_at=1_700_000_000),
        ["Private message from sophia: while you were out"],
    ),
    (
        ev("private_queued", to="jojo", text="see you"),
        ["[jojo is offline; the message will be delivered at their next login.]"],
    ),
    (ev("group_created", group="haha"), ["Group haha created and joined."]),
    (ev("group_added", group="haha"), ["[You have been added to the haha group]"]),
    (ev("group_joined", group="haha"), ["Joined group haha"]),
    (ev("member_joined", group="haha", name="jojo"), ["[jojo joined group haha]"]),
    (ev("group_list", groups=["haha", "g2"]), ["haha, g2"]),
    (ev("group_list", groups=["haha"]), ["haha"]),
    (ev("group_list", groups=[]), ["No groups."]),
    (ev("group_members", groups=[]), ["You are not in any group."]),
    (ev("group_members", groups=[{"group": "haha", "members": ["jojo", "sophia"]}]), ["jojo sophia"]),
    (
        ev(
            "group_members",
            groups=[{"group": "haha", "members": ["jojo", "sophia"]}, {"group": "g2", "members": ["nana"]}],
        ),
        ["haha: jojo sophia", "g2: nana"],
    ),
    (
        ev("group_message", group="haha", sender="jojo", text="Hello there!"),
        ["[Receive group haha message from jojo]: Hello there!"],
    ),
    (ev("group_left", group="haha"), ["[You have successfully left the haha group.]"]),
    (ev("member_left", group="haha", name="jojo"), ["[jojo has left the haha group.]"]),
    (ev("group_delete_done", group="haha"), ["[Group 'haha' has been successfully deleted.]"]),
    (ev("group_deleted", group="haha"), ["[Group 'haha' has been deleted.]"]),
    (ev("group_removed", group="haha"), ["[You have been removed from the haha group]"]),
    (ev("member_added", group="haha", name="nana"), ["[nana has been added to the haha group]"]),
    (ev("member_removed", group="haha", name="nana"), ["[nana has been removed from the haha group]"]),
    (ev("ok"), []),
    (ev("ok", re=7), []),
    (ev("notice", code="too_fast"), ["[You are sending too fast; slow down.]"]),
    (ev("notice", code="shutdown"), ["Server is shutting down."]),
    (ev("notice", code="shutdown", detail="maintenance"), ["Server is shutting down."]),
    (ev("notice", code="something_new"), ["[Notice: something_new]"]),
]


@pytest.mark.parametrize(("event", "lines"), EVENT_LINES)
def test_events(event: Envelope, lines: list[str]) -> None:
    assert render(event) == lines


def test_reply_marker_does_not_change_the_line() -> None:
    assert render(ev("group_joined", group="haha", re=3)) == ["Joined group haha"]


ERROR_LINES: list[tuple[dict[str, Any], str]] = [
    ({"code": "not_logged_in"}, "You must log in first."),
    ({"code": "already_logged_in"}, "You are already logged in."),
    (
        {"code": "username_taken", "name": "sophia"},
        "[Username 'sophia' is already in use. Please enter another name.]",
    ),
    (
        {"code": "username_invalid", "name": "a b", "detail": "it cannot contain spaces"},
        "[Invalid username 'a b': it cannot contain spaces.]",
    ),
    (
        {"code": "username_invalid", "name": "a b", "detail": "it cannot contain spaces."},
        "[Invalid username 'a b': it cannot contain spaces.]",
    ),
    ({"code": "user_not_online", "users": ["bob"]}, "User 'bob' is not online."),
    ({"code": "user_not_online", "users": ["bob", "carol"]}, "Users 'bob', 'carol' are not online."),
    ({"code": "user_not_online", "users": ["a", "b", "c"]}, "Users 'a', 'b', 'c' are not online."),
    ({"code": "no_such_group", "group": "haha"}, "Group 'haha' does not exist."),
    ({"code": "group_exists", "group": "haha"}, "Group 'haha' already exists."),
    (
        {"code": "invalid_group_name", "group": "a/b"},
        "Invalid group name 'a/b': use 1-32 letters, digits, '_', '-' or '.'.",
    ),
    ({"code": "not_member", "group": "haha"}, "You are not a member of group haha."),
    ({"code": "not_member", "group": "haha", "user": "bob"}, "User 'bob' is not a member of group haha."),
    ({"code": "already_member", "group": "haha"}, "You are already a member of group haha."),
    (
        {"code": "already_member", "group": "haha", "user": "bob"},
        "User 'bob' is already a member of group haha.",
    ),
    ({"code": "not_owner", "group": "haha"}, "Only the owner of haha can do that."),
    ({"code": "kicked", "group": "haha"}, "[You cannot join haha: you were removed by its owner.]"),
    ({"code": "cannot_kick_self", "group": "haha"}, "You cannot remove yourself from haha; use /leave haha."),
    ({"code": "bad_request", "detail": "field 'text' is missing"}, "Bad request: field 'text' is missing"),
    ({"code": "something_new"}, "Error: something_new"),
    ({"code": "something_new", "detail": "why"}, "Error: something_new: why"),
    (
        {"code": "too_many_groups", "limit": 100, "user": "bob"},
        "User 'bob' is in too many groups (limit 100).",
    ),
    ({"code": "too_many_groups", "limit": 10000}, "The server has too many groups (limit 10000)."),
    ({"code": "password_required", "name": "bob"}, "Error: password_required"),
]


@pytest.mark.parametrize(("fields", "line"), ERROR_LINES)
def test_errors(fields: dict[str, Any], line: str) -> None:
    assert render(ev("error", **fields)) == [line]
    assert render(ev("error", re=5, **fields)) == [line]


#: The event types this version of the client shows (accounts, history and file transfer
#: are later work items; their events render through the generic paths meanwhile).
CHAT_EVENTS = {
    "ok", "error", "notice", "welcome", "user_joined", "user_exited", "user_list", "broadcast",
    "private", "private_sent", "private_queued", "group_created", "group_added", "group_joined",
    "group_list", "group_members", "group_message", "group_left", "group_deleted",
    "group_delete_done", "group_removed", "member_joined", "member_left", "member_added",
    "member_removed",
}  # fmt: skip


def test_every_chat_event_type_is_covered() -> None:
    covered = {event.type for event, _ in EVENT_LINES} | {"error"}
    assert covered == CHAT_EVENTS
    assert set(EVENTS) >= CHAT_EVENTS


@pytest.mark.parametrize(
    "event",
    [
        Envelope("future_event", {"x": 1}),
        Envelope("welcome"),
        Envelope("broadcast", {"sender": "a"}),
        Envelope("group_members", {"groups": [{"group": "g"}]}),
        Envelope("group_members", {"groups": None}),
        Envelope("user_list", {"users": None}),
        Envelope("error"),
        Envelope("error", {"code": "user_not_online"}),
        Envelope("notice"),
    ],
)
def test_odd_events_never_raise(event: Envelope) -> None:
    lines = render(event)
    assert isinstance(lines, list)
    assert all(isinstance(line, str) for line in lines)


def test_unknown_event_type_renders_nothing() -> None:
    assert render(Envelope("future_event", {"x": 1})) == []
