"""render(): the exact lines for every event and error code (docs/messages.md)."""

from __future__ import annotations

from typing import Any

import pytest

from chat.client.file_lines import (
    file_aborted_line,
    file_damaged_line,
    file_offer_error_line,
    file_received_line,
    file_refused_line,
    file_result_line,
    human_bytes,
    progress_line,
)
from chat.client.render import render, when
from chat.protocol.envelope import EVENTS, Envelope, decode_event, encode_event
from chat.safe_text import printable


def ev(kind: str, **fields: Any) -> Envelope:
    """An event as the client receives it: encoded and decoded by the real codec."""
    return decode_event(encode_event(kind, **fields))


EVENT_LINES: list[tuple[Envelope, list[str]]] = [
    (ev("welcome", name="sophia"), ["[Welcome sophia]"]),
    (ev("user_joined", names=["jojo"]), ["[jojo joined]"]),
    (ev("user_exited", names=["jojo"]), ["[jojo exited]"]),
    # The server may combine announcements: one line per name, in order.
    (ev("user_joined", names=["a", "b"]), ["[a joined]", "[b joined]"]),
    (ev("user_exited", names=["zed", "Amy", "bob"]), ["[zed exited]", "[Amy exited]", "[bob exited]"]),
    (ev("user_list", users=["sophia", "jojo"]), ["sophia, jojo"]),
    (ev("user_list", users=["sophia"]), ["sophia"]),
    (ev("user_list", users=["sophia", "jojo"], more=9998), ["sophia, jojo and 9,998 more"]),
    (ev("error", code="internal_error"), ["[The server could not handle that request.]"]),
    (ev("broadcast", sender="nana", text="hi"), ["[Broadcast from nana]: hi"]),
    (ev("broadcast", sender="nana", text="  two  spaces "), ["[Broadcast from nana]:   two  spaces "]),
    (ev("broadcast", sender="nana", text="{name} {0}"), ["[Broadcast from nana]: {name} {0}"]),
    (ev("private", sender="sophia", text="How are you?"), ["Private message from sophia: How are you?"]),
    (ev("private_sent", to="jojo", text="How are you?"), ["Private message to jojo: How are you?"]),
    (
        ev("private", sender="sophia", text="while you were out", sent_at=1_700_000_000),
        [f"Private message from sophia (sent {when(1_700_000_000)}): while you were out"],
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
    (ev("missed", count=12), ["[You missed 12 broadcast messages: your connection was too slow for them.]"]),
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
    ({"code": "wrong_password", "name": "bob"}, "[Wrong password.]"),
    ({"code": "too_many_attempts", "name": "bob"}, "[Too many wrong passwords for 'bob'; try again later.]"),
    ({"code": "already_registered", "name": "bob"}, "[Name 'bob' is already registered.]"),
    ({"code": "not_registered", "name": "bob"}, "[Name 'bob' is not registered; use /register first.]"),
    ({"code": "weak_password", "limit": 8}, "Password too short: use at least 8 characters."),
]


def test_password_required_is_a_prompt_not_a_line() -> None:
    assert render(ev("error", code="password_required", name="bob")) == []


def test_account_and_history_events() -> None:
    assert render(ev("registered", name="bob")) == ["[Name 'bob' is now registered.]"]
    assert render(ev("password_changed")) == ["[Password changed.]"]
    assert render(ev("group_history", group="g", messages=[])) == ["No messages in group g yet."]
    messages = [{"sender": "a", "text": "hi", "sent_at": 0}, {"sender": "b", "text": "yo", "sent_at": 60}]
    assert render(ev("group_history", group="g", messages=messages)) == [
        f"[{when(0)}] a: hi", f"[{when(60)}] b: yo"
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
    "member_removed", "missed",
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


# --- file transfer lines ------------------------------------------------------------------

def test_file_result_lines() -> None:
    assert file_result_line("a.txt", "bob", False, ["Bob"], []) == "File a.txt sent to Bob successfully."
    assert (
        file_result_line("a.txt", "bob", False, [], [{"name": "bob", "detail": "disconnected"}])
        == "File a.txt could not be sent to bob: disconnected."
    )
    everyone = file_result_line("a.txt", "g1", True, ["bob", "carl"], [])
    assert everyone == "File a.txt sent to group g1 successfully."
    failed = [
        {"name": "bob", "detail": "declined: larger than their limit of 10 bytes"},
        {"name": "carl", "detail": "disconnected."},
    ]
    assert file_result_line("a.txt", "g1", True, ["dan"], failed) == (
        "File a.txt was not delivered to: bob (declined: larger than their limit of 10 bytes), "
        "carl (disconnected)."
    )


def test_file_offer_errors_name_the_file() -> None:
    assert file_offer_error_line("big.iso", ev("error", code="file_too_large", limit=1000)) == [
        "File big.iso is too large: the server accepts at most 1000 bytes."
    ]
    assert file_offer_error_line("a", ev("error", code="too_many_transfers", limit=8)) == [
        "Cannot send a: too many file transfers at once (limit 8); try again when one finishes."
    ]
    bad = ev("error", code="bad_transfer", detail="nope")
    assert file_offer_error_line("a", bad) == ["Cannot send a: nope."]
    assert file_offer_error_line("a", ev("error", code="no_recipients", group="g1")) == [
        "No other member of group g1 is online."
    ]
    assert file_offer_error_line("a", ev("error", code="user_not_online", users=["bob"])) == [
        "User 'bob' is not online."
    ]


def test_file_receiving_lines() -> None:
    assert file_received_line("a (1).txt", "alice", None) == "You received file 'a (1).txt' from alice."
    assert file_received_line("a.txt", "alice", "g1") == "[Receive a.txt from Group g1 alice]"
    assert (
        file_refused_line("a.txt", "alice", "larger than your limit of 10 bytes")
        == "Refused file 'a.txt' from alice: larger than your limit of 10 bytes."
    )
    assert (
        file_aborted_line("a.txt", "alice", "the sender disconnected")
        == "Transfer of 'a.txt' from alice was aborted: the sender disconnected."
    )
    assert file_damaged_line("a", "alice", "bad data.") == "File 'a' from alice was not saved: bad data."


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"code": "file_too_large", "limit": 5}, "File is too large: the server accepts at most 5 bytes."),
        ({"code": "no_recipients", "group": "g1"}, "No other member of group g1 is online."),
        ({"code": "bad_transfer", "detail": "no transfer 1f"}, "File transfer error: no transfer 1f."),
    ],
)
def test_file_errors_without_context(fields: dict[str, Any], line: str) -> None:
    assert render(ev("error", **fields)) == [line]


def test_file_events_render_nothing_by_themselves() -> None:
    """The transfer code shows them (it knows the file's name)."""
    assert render(ev("file_go", id="ab", window=10)) == []
    assert render(decode_event(encode_event("file_chunk", body=b"data", id="ab", offset=0))) == []


def test_progress_line() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"
    line = progress_line("Sending a to bob", 512 * 1024, 1024 * 1024, 2 * 1024 * 1024, width=10)
    assert line == "Sending a to bob [=====>    ]  50%  512.0 KiB of 1.0 MiB  2.0 MiB/s"
    assert "100%" in progress_line("x", 10, 10, 0, width=4)
    assert "100%" in progress_line("x", 0, 0, 0, width=4)


def test_names_and_reasons_from_others_cannot_forge_lines_or_drive_the_terminal() -> None:
    assert printable("a\nb\x1b[2Jc\u202etxt") == "a\u240ab\u241b[2Jc<U+202E>txt"
    line = file_refused_line("x\nYou received file 'evil' from bob.", "mallory", "because\r\x07")
    assert line == (
        "Refused file 'x\u240aYou received file 'evil' from bob.' from mallory: because\u240d\u2407."
    )
    assert "\x1b" not in file_aborted_line("\x1b]0;title\x07", "m", "\x1b[31mred")
    assert file_result_line("a", "bob", False, [], [{"name": "bob", "detail": "no\nway"}]) == (
        "File a could not be sent to bob: no\u240away."
    )


def test_printable_shows_every_unsafe_character_visibly_and_keeps_text() -> None:
    """Review H3: C0, DEL, C1, bidi and other format characters, line and paragraph
    separators become visible stand-ins; letters, emoji (with their joiners) stay."""
    assert printable("\x00\x07\x08\t\n\r\x1b\x1f\x7f") == "␀␇␈␉␊␍␛␟␡"
    assert printable("\x9b31m\x85") == "<U+009B>31m<U+0085>"
    assert printable("\u2028\u2029\u200b\u00ad\u2066\u202e\ufeff\U000e0041") == (
        "<U+2028><U+2029><U+200B><U+00AD><U+2066><U+202E><U+FEFF><U+E0041>"
    )
    kept = "José 北京 Привет مرحبا 👩\u200d💻 né"
    assert printable(kept) == kept
    assert printable("[Broadcast from sophia]: hello") == "[Broadcast from sophia]: hello"
