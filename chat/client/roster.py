"""What the client knows of who is online and which groups exist, kept up to date from
the events it receives (for Tab completion and the status line). Pure: no I/O."""

from __future__ import annotations

from chat.protocol.envelope import Envelope

#: Events that name a group the user is now in, or no longer in.
_JOINED = {"group_created", "group_joined", "group_added"}
_LEFT = {"group_left", "group_removed"}
_GONE = {"group_deleted", "group_delete_done"}


class Roster:
    def __init__(self) -> None:
        self.me: str | None = None
        #: key -> name as shown, in the order the client learnt of them.
        self._online: dict[str, str] = {}
        self._groups: dict[str, str] = {}
        self._mine: dict[str, str] = {}

    @property
    def online(self) -> list[str]:
        return list(self._online.values())

    @property
    def groups(self) -> list[str]:
        return list(self._groups.values())

    @property
    def my_groups(self) -> list[str]:
        return list(self._mine.values())

    def apply(self, event: Envelope) -> None:
        kind = event.type
        if kind == "welcome":
            self.me = event["name"]
            self._online.setdefault(self.me.casefold(), self.me)
        elif kind == "user_list":
            self._online = {name.casefold(): name for name in event["users"]}
        elif kind == "user_joined":
            for name in event["names"]:
                self._online[name.casefold()] = name
        elif kind == "user_exited":
            for name in event["names"]:
                self._online.pop(name.casefold(), None)
        elif kind == "group_list":
            self._groups = {name.casefold(): name for name in event["groups"]}
        elif kind == "group_members":
            for entry in event["groups"]:
                self._groups[entry["group"].casefold()] = entry["group"]
        elif kind in _JOINED:
            group = event["group"]
            self._groups[group.casefold()] = self._mine[group.casefold()] = group
        elif kind in _LEFT:
            self._mine.pop(event["group"].casefold(), None)
        elif kind in _GONE:
            self._mine.pop(event["group"].casefold(), None)
            self._groups.pop(event["group"].casefold(), None)
