"""What the nodes of a cluster tell each other over Redis pub/sub (README "Running a
cluster"): one frame per message, a JSON header line then the raw event bytes, so an
event is never re-encoded on its way to another node's users.

Kinds (the header's ``t``):

- ``j`` / ``x``: a user logged in (``k`` key, ``n`` name, ``o`` login order) / out;
- ``t``: a user's new session took the name over from ``prev``'s;
- ``r``: a node's whole roster (``u``: ``[key, name, order]`` lists), after it
  (re)connected to Redis;
- ``d``: events for named users of one node (``u``: keys), ``a``: a broadcast;
  both carry the plain event and, for stored messages, the numbered one and ``m``, the
  message id;
- ``g``: a group's new state (``s``, or null when it is gone) and the group version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chat.server.conversations import Message
from chat.server.groups import Group


@dataclass(frozen=True)
class Frame:
    kind: str
    node: str
    header: dict[str, Any]
    payload: bytes = b""
    numbered: bytes | None = None


def encode_frame(
    kind: str, node: str, *, payload: bytes | memoryview = b"", numbered: bytes | None = None, **header: Any
) -> bytes:
    header["t"], header["node"] = kind, node
    header["pl"] = len(payload)
    if numbered is not None:
        header["nl"] = len(numbered)
    line = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    return line + b"\n" + payload + (numbered or b"")


def decode_frame(data: bytes) -> Frame:
    """The frame in ``data``; ValueError if it is not one (a foreign publisher)."""
    line, sep, body = data.partition(b"\n")
    if not sep:
        raise ValueError("no header")
    header = json.loads(line)
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise ValueError("bad header")
    size = int(header.get("pl", 0))
    payload = body[:size]
    numbered = body[size : size + int(header["nl"])] if "nl" in header else None
    return Frame(header["t"], str(header.get("node", "")), header, payload, numbered)


def group_state(group: Group | None) -> dict[str, Any] | None:
    """A group as JSON, guests included (the database keeps only the registered part)."""
    if group is None:
        return None
    return {
        "name": group.name, "owner": group.owner, "members": list(group.members.items()),
        "kicked": sorted(group.kicked), "guests": sorted(group.guests),
        "guest_kicks": sorted(group.guest_kicks), "invite_only": group.invite_only,
        "pending": sorted(group.pending), "joined": group.joined,
    }  # fmt: skip


def group_from_state(state: dict[str, Any]) -> Group:
    return Group(
        state["name"], state["owner"], {k: n for k, n in state["members"]}, set(state["kicked"]),
        set(state["guests"]), set(state["guest_kicks"]), bool(state["invite_only"]),
        set(state["pending"]), {k: int(v) for k, v in state["joined"].items()},
    )  # fmt: skip


def stored_numbers(message: Message | None) -> dict[str, Any]:
    """A frame's header fields for a stored message: its id, conversation and seq."""
    return {} if message is None else {"m": message.id, "c": message.conversation, "s": message.seq}


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
