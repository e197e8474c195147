"""The roster follows events; Tab completion offers commands, users and groups."""

from __future__ import annotations

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from chat.client.completion import ChatCompleter
from chat.client.roster import Roster
from chat.protocol.envelope import Envelope


def event(kind: str, **fields: object) -> Envelope:
    return Envelope(kind, dict(fields))


@pytest.fixture
def roster() -> Roster:
    roster = Roster()
    for e in (
        event("welcome", name="sophia"),
        event("user_list", users=["sophia", "jojo", "Jack"]),
        event("group_list", groups=["haha", "Hello"]),
    ):
        roster.apply(e)
    return roster


def complete(roster: Roster, text: str) -> list[str]:
    return [c.text for c in ChatCompleter(roster).get_completions(Document(text), CompleteEvent())]


def test_roster_follows_presence_and_groups(roster: Roster) -> None:
    roster.apply(event("user_joined", names=["nana"]))
    roster.apply(event("user_exited", names=["JOJO"]))
    assert roster.online == ["sophia", "Jack", "nana"]
    # Combined announcements: every name applies, in order.
    roster.apply(event("user_joined", names=["zed", "Amy", "bob"]))
    roster.apply(event("user_exited", names=["ZED", "jack"]))
    assert roster.online == ["sophia", "nana", "Amy", "bob"]
    assert [c for c in complete(roster, "/msg ") if c in ("Amy", "bob", "zed", "Jack")] == ["Amy", "bob"]
    roster.apply(event("group_created", group="team"))
    roster.apply(event("group_joined", group="haha"))
    assert roster.my_groups == ["team", "haha"]
    roster.apply(event("group_left", group="team"))
    roster.apply(event("group_deleted", group="HAHA"))
    assert roster.my_groups == []
    assert roster.groups == ["Hello", "team"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/m", ["/msg"]),
        ("/sh", ["/showgroups", "/showgroupmembers"]),
        ("/msg j", ["jojo", "Jack"]),
        ("/msg jojo hel", []),
        ("/join h", ["haha", "Hello"]),
        ("/add h", ["haha", "Hello"]),
        ("/add haha J", ["jojo", "Jack"]),
        ("@j", ["@jojo", "@Jack"]),
        ("@group s", ["set", "send"]),
        ("@group send h", ["haha", "Hello"]),
        ("hello there", []),
        ("", []),
    ],
)
def test_completions(roster: Roster, text: str, expected: list[str]) -> None:
    assert complete(roster, text) == expected
