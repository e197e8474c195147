"""Groups with owners, members and kicks: pure state, no I/O (SPEC section 5).

Membership is by username, so it survives a disconnect. Members are kept in join order,
which decides who inherits ownership when the owner leaves.

A change is planned first (``GroupChange``: the group before and after, nothing touched),
then stored, and only then applied, in the same step as its reply and notifications: so
routing never uses a membership that has not been announced, and nothing is announced
that is not on disk. ``GroupRegistry.changing`` serialises changes while they are stored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from chat.server.errors import RequestError
from chat.server.names import is_group_name, key
from chat.server.storage import StoredGroup


@dataclass
class Group:
    name: str
    owner: str
    #: key(username) -> username as first written, in join order.
    members: dict[str, str] = field(default_factory=dict)
    #: key(username) of users removed by the owner; cleared when the owner adds them back.
    kicked: set[str] = field(default_factory=set)

    def has(self, user: str) -> bool:
        return key(user) in self.members

    def other_members(self, user: str) -> list[str]:
        me = key(user)
        return [name for k, name in self.members.items() if k != me]

    def sorted_members(self) -> list[str]:
        return sorted(self.members.values(), key=lambda n: (n.casefold(), n))

    def copy(self) -> Group:
        return Group(self.name, self.owner, dict(self.members), set(self.kicked))

    def to_stored(self) -> StoredGroup:
        return StoredGroup(self.name, self.owner, list(self.members.items()), set(self.kicked))

    @classmethod
    def from_stored(cls, stored: StoredGroup) -> Group:
        return cls(stored.name, stored.owner_key, dict(stored.members), set(stored.kicked))


@dataclass(frozen=True)
class GroupChange:
    """A group's next state: ``after`` is None when the group goes away, ``before`` is
    None when it is new."""

    before: Group | None
    after: Group | None

    @property
    def name(self) -> str:
        group = self.after or self.before
        assert group is not None
        return group.name


class GroupRegistry:
    """Every group on the server, by key(name), in creation order."""

    def __init__(self, max_per_user: int = 0, max_groups: int = 0) -> None:
        """``max_per_user`` bounds the groups one user is in; ``max_groups`` all groups (0: no cap)."""
        self._groups: dict[str, Group] = {}
        self._max_per_user = max_per_user
        self._max_groups = max_groups
        self.changing = asyncio.Lock()

    def _check_room_for(self, user: str) -> None:
        if self._max_per_user and len(self.of_user(user)) >= self._max_per_user:
            raise RequestError("too_many_groups", user=user, limit=self._max_per_user)

    def load(self, stored: list[StoredGroup]) -> None:
        """Replace every group with ``stored`` (in creation order), as read at start-up."""
        self._groups = {key(g.name): Group.from_stored(g) for g in stored}

    def apply(self, change: GroupChange) -> None:
        if change.after is None:
            self._groups.pop(key(change.name), None)
        else:
            self._groups[key(change.name)] = change.after

    def exists(self, name: str) -> bool:
        return key(name) in self._groups

    def names(self) -> list[str]:
        return [g.name for g in self._groups.values()]

    def get(self, name: str) -> Group:
        group = self._groups.get(key(name))
        if group is None:
            raise RequestError("no_such_group", group=name)
        return group

    def of_user(self, user: str) -> list[Group]:
        return [g for g in self._groups.values() if g.has(user)]

    def member_group(self, name: str, user: str) -> Group:
        """The group, if ``user`` is a member of it."""
        group = self.get(name)
        if not group.has(user):
            raise RequestError("not_member", group=group.name)
        return group

    def owned_group(self, name: str, user: str) -> Group:
        """The group, if ``user`` owns it."""
        group = self.get(name)
        if group.owner != key(user):
            raise RequestError("not_owner", group=group.name)
        return group

    def check_available(self, name: str) -> None:
        """Raise unless ``name`` is a valid name no group has yet."""
        if not is_group_name(name):
            raise RequestError("invalid_group_name", group=name)
        if key(name) in self._groups:
            raise RequestError("group_exists", group=self._groups[key(name)].name)
        if self._max_groups and len(self._groups) >= self._max_groups:
            raise RequestError("too_many_groups", limit=self._max_groups)

    # --- planned changes (nothing is modified until apply) ------------------------------

    def create(self, name: str, owner: str, members: list[str]) -> GroupChange:
        """``members`` are display names, already known to be online or registered."""
        self.check_available(name)
        for user in (owner, *members):
            self._check_room_for(user)
        group = Group(name=name, owner=key(owner))
        group.members[key(owner)] = owner
        for member in members:
            group.members.setdefault(key(member), member)
        return GroupChange(None, group)

    def join(self, name: str, user: str) -> GroupChange:
        group = self.get(name)
        if key(user) in group.kicked:
            raise RequestError("kicked", group=group.name)
        if group.has(user):
            raise RequestError("already_member", group=group.name)
        self._check_room_for(user)
        after = group.copy()
        after.members[key(user)] = user
        return GroupChange(group, after)

    def leave(self, name: str, user: str) -> GroupChange:
        """Remove ``user``; pass ownership on, or drop the group when it empties."""
        group = self.member_group(name, user)
        return GroupChange(group, _without(group, user))

    def delete(self, name: str, user: str) -> GroupChange:
        return GroupChange(self.owned_group(name, user), None)

    def add(self, name: str, owner: str, user: str) -> GroupChange:
        group = self.owned_group(name, owner)
        if group.has(user):
            raise RequestError("already_member", group=group.name, user=group.members[key(user)])
        self._check_room_for(user)
        after = group.copy()
        after.kicked.discard(key(user))
        after.members[key(user)] = user
        return GroupChange(group, after)

    def kick(self, name: str, owner: str, user: str) -> tuple[GroupChange, str]:
        """Remove ``user`` and bar them from rejoining; also returns their display name."""
        group = self.owned_group(name, owner)
        if key(user) == group.owner:
            raise RequestError("cannot_kick_self", group=group.name)
        if not group.has(user):
            raise RequestError("not_member", group=group.name, user=user)
        after = _without(group, user)
        assert after is not None  # the owner is still in it
        after.kicked.add(key(user))
        return GroupChange(group, after), group.members[key(user)]


def _without(group: Group, user: str) -> Group | None:
    """``group`` less ``user``: None if nobody is left; the earliest member owns it if
    ``user`` owned it."""
    after = group.copy()
    del after.members[key(user)]
    if not after.members:
        return None
    if after.owner == key(user):
        after.owner = next(iter(after.members))
    return after
