"""The client's resume bookkeeping (chat/client/resume_state.py), without I/O: cursors,
each message shown once, live messages held during a replay, unacknowledged messages
sent again with their ids."""

from __future__ import annotations

from typing import Any

from chat.client.resume_state import ResumeState
from chat.protocol.envelope import Envelope


def ev(kind: str, **fields: Any) -> Envelope:
    return Envelope(kind, fields)


def shown(state: ResumeState, *events: Envelope) -> list[str]:
    return [str(e.get("text", e.type)) for event in events for e in state.received(event)]


def test_each_message_once_and_cursors_follow() -> None:
    state = ResumeState()
    state.welcome(ev("welcome", name="ann", head=7, token="t" * 43))
    first = ev("broadcast", sender="bob", text="one", mid=8, seq=3)
    assert shown(state, first, first, ev("private", sender="Bob", text="hi", mid=9, seq=1)) == ["one", "hi"]
    assert state.cursors == {"*": 3, "@bob": 1}
    assert shown(state, ev("broadcast", sender="bob", text="old", mid=5, seq=2)) == []
    assert shown(state, ev("user_joined", names=["cy"])) == ["user_joined"]


def test_live_messages_wait_for_the_end_of_the_replay() -> None:
    state = ResumeState()
    state.welcome(ev("welcome", name="ann", head=1, token="t" * 43))
    state.cursors["*"] = 1
    fields = state.login_fields()
    assert fields == {"token": "t" * 43, "since": 1, "cursors": [{"target": "*", "seq": 1}]}
    live = ev("broadcast", sender="bob", text="live 4", mid=12, seq=4)
    assert shown(state, live) == []  # held: older ones are still to come
    assert shown(state, ev("broadcast", sender="bob", text="missed 2", mid=10, seq=2, sent_at=1)) == [
        "missed 2"
    ]
    assert shown(state, ev("replayed", count=1, more=True)) == ["replayed"]
    assert state.replay_fields()["cursors"] == [{"target": "*", "seq": 2}]
    assert shown(state, ev("broadcast", sender="bob", text="missed 3", mid=11, seq=3, sent_at=1)) == [
        "missed 3"
    ]
    again = ev("broadcast", sender="bob", text="live 4", mid=12, seq=4, sent_at=1)
    assert shown(state, again, ev("replayed", count=2)) == ["live 4", "replayed"]  # the held copy is dropped
    assert not state.replaying


def test_unacknowledged_messages_go_again_with_their_ids() -> None:
    state = ResumeState()
    first = state.numbered("broadcast", {"text": "a"})
    second = state.numbered("group_message", {"group": "Team", "text": "b"})
    assert len(first["cmid"]) >= 16 and first["cmid"] != second["cmid"]
    assert state.numbered("list", {}) == {}
    state.sent(1, "broadcast", first)
    state.sent(2, "group_message", second)
    assert shown(state, ev("ok", re=1, mid=4, seq=2)) == ["ok"]
    assert state.cursors == {"*": 2}
    pending = state.to_resend()
    assert [(p.kind, p.fields) for p in pending] == [("group_message", second)]
    assert state.numbered(pending[0].kind, pending[0].fields)["cmid"] == second["cmid"]
    assert state.to_resend() == []
