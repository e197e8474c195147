"""What the client keeps so that a lost connection loses nothing (PROTOCOL.md section
6.8, Feature.RESUME): no I/O, the chat loop feeds it.

- a cursor per conversation: the ``seq`` of the last message shown (``*`` everyone,
  ``@user``, a group), sent with the next login so the server replays what came after;
- the session's start (``head`` of the first welcome) and the latest resume token;
- the messages sent but not acknowledged, each with its client message id (``cmid``):
  sent again after a reconnect, the server stores and delivers them once;
- while a replay runs, live messages wait, and each message is shown at most once
  (subscribe first, replay, then drain with de-duplication).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chat.protocol.envelope import Envelope

#: The requests that send a stored message, and the events that carry one.
SENDS = ("broadcast", "private", "group_message")
STORED = ("broadcast", "private", "group_message")


def target_of(event: Envelope) -> str | None:
    """The conversation of a stored message event, as a cursor names it."""
    if event.type == "broadcast":
        return "*"
    if event.type == "private":
        return "@" + str(event.get("sender", "")).casefold()
    if event.type == "group_message":
        return str(event.get("group", "")).casefold()
    return None


def _target_of_send(kind: str, fields: dict[str, Any]) -> str:
    if kind == "broadcast":
        return "*"
    if kind == "private":
        return "@" + str(fields["to"]).casefold()
    return str(fields["group"]).casefold()


@dataclass
class Unacknowledged:
    kind: str
    fields: dict[str, Any]


class ResumeState:
    def __init__(self) -> None:
        self.cursors: dict[str, int] = {}
        self.head: int | None = None
        self.token: str | None = None
        self.replaying = False
        self._waiting: list[Envelope] = []
        #: rid -> the message request it numbered, in the order sent.
        self._unacknowledged: dict[int, Unacknowledged] = {}

    # --- sending -------------------------------------------------------------------------

    def numbered(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The fields to send: a message gets a client message id (kept if it has one)."""
        if kind in SENDS and "cmid" not in fields:
            return {**fields, "cmid": secrets.token_urlsafe(12)}
        return fields

    def sent(self, rid: int, kind: str, fields: dict[str, Any]) -> None:
        if kind in SENDS:
            self._unacknowledged[rid] = Unacknowledged(kind, fields)

    def to_resend(self) -> list[Unacknowledged]:
        """The messages never acknowledged (the connection was lost first), oldest first;
        forgotten here: sending them again numbers them anew."""
        pending = list(self._unacknowledged.values())
        self._unacknowledged.clear()
        return pending

    # --- receiving -----------------------------------------------------------------------

    def welcome(self, event: Envelope) -> None:
        if self.head is None and event.get("head") is not None:
            self.head = event["head"]
        if event.get("token") is not None:
            self.token = event["token"]

    def login_fields(self) -> dict[str, Any]:
        """What a login after a lost connection carries to resume."""
        if self.token is None:
            return {}
        fields: dict[str, Any] = {"token": self.token}
        if self.head is not None:
            fields.update(self.replay_fields())
            self.replaying = True
        return fields

    def replay_fields(self) -> dict[str, Any]:
        """Where this client is: for a login that resumes, or the next page of a replay."""
        cursors = [{"target": t, "seq": s} for t, s in self.cursors.items()]
        return {"since": self.head or 0, "cursors": cursors}

    def received(self, event: Envelope) -> Iterator[Envelope]:
        """The events to show for ``event`` (none, it, or it and those that waited)."""
        rid = event.get("re")
        if rid is not None:
            request = self._unacknowledged.pop(rid, None)
            if request is not None and event.get("seq") is not None:
                target = _target_of_send(request.kind, request.fields)
                self.cursors[target] = max(self.cursors.get(target, 0), event["seq"])
            yield event
            return
        if event.type == "replayed":
            yield event
            if event.get("more"):
                return  # the client asks for the next page; live messages keep waiting
            self.replaying = False
            waiting, self._waiting = self._waiting, []
            for live in waiting:
                yield from self._once(live)
            return
        if self.replaying and event.type in STORED and "sent_at" not in event.fields:
            self._waiting.append(event)  # live: shown after what the replay brings
            return
        yield from self._once(event)

    def _once(self, event: Envelope) -> Iterator[Envelope]:
        target = target_of(event)
        seq = event.get("seq")
        if target is None or seq is None:
            yield event
            return
        if seq <= self.cursors.get(target, 0):
            return  # shown already
        self.cursors[target] = seq
        yield event
