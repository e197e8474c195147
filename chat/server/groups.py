"""Groups with owners, members and kicks: pure state, no I/O (README "Commands").

Membership is by account for registered users (it survives a disconnect) and by
connection for guests (it ends with it). Members are kept in join order,
which decides who inherits ownership when the owner leaves.

A change is planned first (``GroupChange``: the group before and after, nothing touched),
then stored, and only then applied, in the same step as its reply and notifications: so
routing never uses a membership that has not been announced, and nothing is announced
that is not on disk. ``GroupRegistry.changing`` serialises changes while they are stored.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from chat.protocol.codes import ErrorCode
from chat.server.errors import RequestError
from chat.server.names import is_group_name, key
from chat.server.ratelimit import KeyedBuckets
from chat.server.schema import StoredGroup


@dataclass
class Group:
    name: str
    owner: str
    #: key(username) -> username as first written, in join order.
    members: dict[str, str] = field(default_factory=dict)
    #: key(username) of registered users removed by the owner; cleared when the owner
    #: adds them back. Stored: a kick sticks to the account.
    kicked: set[str] = field(default_factory=set)
    #: Members who are guests (no account): their membership ends with their connection
    #: and is never stored; likewise a kicked guest is kept out for that connection only.
    guests: set[str] = field(default_factory=set)
    guest_kicks: set[str] = field(default_factory=set)
    #: Only the owner adds members; /join is refused.
    invite_only: bool = False
    #: Members the owner added who have not accepted yet (by /join or by posting):
    #: counted against their invitations, not their own quota of groups.
    pending: set[str] = field(default_factory=set)
    #: key(member) -> id of the last group message before they joined: history shows
    #: them only what came after.
    joined: dict[str, int] = field(default_factory=dict)

    def has(self, user: str) -> bool:
        return key(user) in self.members

    def other_members(self, user: str) -> list[str]:
        me = key(user)
        return [name for k, name in self.members.items() if k != me]

    def sorted_members(self) -> list[str]:
        return sorted(self.members.values(), key=lambda n: (n.casefold(), n))

    def registered_members(self) -> list[str]:
        return [name for k, name in self.members.items() if k not in self.guests]

    @property
    def persistent(self) -> bool:
        """Groups owned by a registered user are stored; a guest's live in memory."""
        return self.owner not in self.guests

    def copy(self) -> Group:
        return Group(
            self.name, self.owner, dict(self.members), set(self.kicked), set(self.guests),
            set(self.guest_kicks), self.invite_only, set(self.pending), dict(self.joined),
        )  # fmt: skip

    def with_member(self, user: str, *, guest: bool, at: int, pending: bool = False) -> Group:
        after = self.copy()
        member = key(user)
        after.members[member] = user
        after.kicked.discard(member)
        after.guest_kicks.discard(member)
        after.joined[member] = at
        if guest:
            after.guests.add(member)
        if pending:
            after.pending.add(member)
        return after

    def to_stored(self) -> StoredGroup:
        """The registered part of the group (guests are never stored)."""
        members = [(k, n) for k, n in self.members.items() if k not in self.guests]
        return StoredGroup(
            self.name, self.owner, members, set(self.kicked), self.invite_only,
            self.pending - self.guests, {k: v for k, v in self.joined.items() if k not in self.guests},
        )  # fmt: skip

    @classmethod
    def from_stored(cls, stored: StoredGroup) -> Group:
        return cls(
            stored.name, stored.owner_key, dict(stored.members), set(stored.kicked),
            invite_only=stored.invite_only, pending=set(stored.pending), joined=dict(stored.joined),
        )  # fmt: skip


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


#: A network (IPv4 /24, IPv6 /64: a class behind one NAT) may create this many times
#: the groups per hour of one creator.
NETWORK_CREATIONS_FACTOR = 6


class GroupRegistry:
    """Every group on the server, by key(name), in creation order."""

    def __init__(
        self, max_per_user: int = 0, max_groups: int = 0, max_owned: int = 0, creations_per_hour: float = 0
    ) -> None:
        """``max_per_user`` bounds the groups one user is in, ``max_groups`` all groups,
        ``max_owned`` the groups one user owns (0: no cap); ``creations_per_hour`` the
        groups one creator (an account, or a guest) may create, and six times that one
        network (0: no rate). Together they keep throwaway names from filling the group
        table (review M6)."""
        self._groups: dict[str, Group] = {}
        self._max_per_user = max_per_user
        self._max_groups = max_groups
        self._max_owned = max_owned
        rate = creations_per_hour / 3600
        self._creator_rate = KeyedBuckets(rate, max(1.0, creations_per_hour))
        self._network_rate = KeyedBuckets(
            rate * NETWORK_CREATIONS_FACTOR, max(1.0, creations_per_hour * NETWORK_CREATIONS_FACTOR)
        )
        self.changing = asyncio.Lock()

    def _check_room_for(self, user: str, *, invitation: bool = False) -> None:
        """A user's own groups (created, joined, accepted) and the invitations they have
        not accepted are bounded separately, so others' adds cannot use up a user's
        quota (review M6)."""
        if not self._max_per_user:
            return
        me = key(user)
        mine = [g for g in self._groups.values() if me in g.members and (me in g.pending) == invitation]
        if len(mine) >= self._max_per_user:
            code = ErrorCode.TOO_MANY_INVITATIONS if invitation else ErrorCode.TOO_MANY_GROUPS
            raise RequestError(code, user=user, limit=self._max_per_user)

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
            raise RequestError(ErrorCode.NO_SUCH_GROUP, group=name)
        return group

    def current(self, group_key: str) -> Group | None:
        return self._groups.get(group_key)

    def of_user(self, user: str) -> list[Group]:
        return [g for g in self._groups.values() if g.has(user)]

    def member_group(self, name: str, user: str) -> Group:
        """The group, if ``user`` is a member of it."""
        group = self.get(name)
        if not group.has(user):
            raise RequestError(ErrorCode.NOT_MEMBER, group=group.name)
        return group

    def owned_group(self, name: str, user: str) -> Group:
        """The group, if ``user`` owns it."""
        group = self.get(name)
        if group.owner != key(user):
            raise RequestError(ErrorCode.NOT_OWNER, group=group.name)
        return group

    def check_available(self, name: str) -> None:
        """Raise unless ``name`` is a valid name no group has yet."""
        if not is_group_name(name):
            raise RequestError(ErrorCode.INVALID_GROUP_NAME, group=name)
        if key(name) in self._groups:
            raise RequestError(ErrorCode.GROUP_EXISTS, group=self._groups[key(name)].name)
        if self._max_groups and len(self._groups) >= self._max_groups:
            raise RequestError(ErrorCode.TOO_MANY_GROUPS, limit=self._max_groups)

    # --- planned changes (nothing is modified until apply) ------------------------------

    def create(
        self, name: str, owner: str, members: list[str], guests: set[str], at: int, network: str = ""
    ) -> GroupChange:
        """``members`` are display names, already known to be online or registered;
        ``guests`` the keys of those (owner included) who are guests; ``network`` the
        creator's address prefix. Spends one creation of the owner and of the network."""
        self.check_available(name)
        self._check_room_for(owner)
        for user in members:
            self._check_room_for(user, invitation=True)
        if self._max_owned and sum(g.owner == key(owner) for g in self._groups.values()) >= self._max_owned:
            raise RequestError(ErrorCode.TOO_MANY_OWNED_GROUPS, limit=self._max_owned)
        now = time.monotonic()
        if not self._creator_rate.take(key(owner), now) or not self._network_rate.take(network, now):
            raise RequestError(ErrorCode.CREATING_GROUPS_TOO_FAST, limit=int(self._creator_rate.burst))
        group = Group(name=name, owner=key(owner)).with_member(owner, guest=key(owner) in guests, at=at)
        for member in members:
            if not group.has(member):
                group = group.with_member(member, guest=key(member) in guests, at=at, pending=True)
        return GroupChange(None, group)

    def join(self, name: str, user: str, *, guest: bool, at: int) -> GroupChange:
        """Join, or accept an invitation (a member the owner added)."""
        group = self.get(name)
        if key(user) in group.pending:
            after = group.copy()
            self._check_room_for(user)
            after.pending.discard(key(user))
            return GroupChange(group, after)
        if key(user) in group.kicked or key(user) in group.guest_kicks:
            raise RequestError(ErrorCode.KICKED, group=group.name)
        if group.has(user):
            raise RequestError(ErrorCode.ALREADY_MEMBER, group=group.name)
        if group.invite_only:
            raise RequestError(ErrorCode.INVITE_ONLY, group=group.name)
        self._check_room_for(user)
        return GroupChange(group, group.with_member(user, guest=guest, at=at))

    def accept(self, group: Group, user: str) -> GroupChange | None:
        """Posting to a group one was added to accepts the invitation."""
        if key(user) not in group.pending:
            return None
        after = group.copy()
        after.pending.discard(key(user))
        return GroupChange(group, after)

    def leave(self, name: str, user: str) -> GroupChange:
        """Remove ``user``; pass ownership on, or drop the group when it empties."""
        group = self.member_group(name, user)
        return GroupChange(group, _without(group, user))

    def delete(self, name: str, user: str) -> GroupChange:
        return GroupChange(self.owned_group(name, user), None)

    def add(self, name: str, owner: str, user: str, *, guest: bool, at: int) -> GroupChange:
        """An owner adds ``user``: a member at once (an invitation they have not accepted
        yet, so it does not count against their own quota)."""
        group = self.owned_group(name, owner)
        if group.has(user):
            raise RequestError(ErrorCode.ALREADY_MEMBER, group=group.name, user=group.members[key(user)])
        self._check_room_for(user, invitation=True)
        return GroupChange(group, group.with_member(user, guest=guest, at=at, pending=True))

    def set_invite_only(self, name: str, owner: str, on: bool) -> GroupChange:
        group = self.owned_group(name, owner)
        after = group.copy()
        after.invite_only = on
        return GroupChange(group, after)

    def registered(self, user: str) -> list[GroupChange]:
        """``user`` (a guest until now) registered: their memberships become lasting."""
        changes = []
        for group in self.of_user(user):
            if key(user) in group.guests:
                after = group.copy()
                after.guests.discard(key(user))
                changes.append(GroupChange(group, after))
        return changes

    def kick(self, name: str, owner: str, user: str) -> tuple[GroupChange, str]:
        """Remove ``user`` and bar them from rejoining; also returns their display name."""
        group = self.owned_group(name, owner)
        if key(user) == group.owner:
            raise RequestError(ErrorCode.CANNOT_KICK_SELF, group=group.name)
        if not group.has(user):
            raise RequestError(ErrorCode.NOT_MEMBER, group=group.name, user=user)
        after = _without(group, user)
        assert after is not None  # the owner is still in it
        if key(user) in group.guests:
            after.guest_kicks.add(key(user))
        else:
            after.kicked.add(key(user))
        return GroupChange(group, after), group.members[key(user)]

    def expired(self, keys: list[str]) -> list[Group]:
        """Drop the groups the database expired (unused for too long); they are returned
        so their online members can be told."""
        return [group for k in keys if (group := self._groups.pop(k, None)) is not None]

    def guest_gone(self, user: str) -> None:
        """A kicked guest's connection ended: the kick does not pass to the next guest of
        that name (nothing a guest had outlives its connection)."""
        for group in self._groups.values():
            group.guest_kicks.discard(key(user))


def _without(group: Group, user: str) -> Group | None:
    """``group`` less ``user``: None if nobody is left; the earliest member owns it if
    ``user`` owned it."""
    after = group.copy()
    member = key(user)
    del after.members[member]
    after.guests.discard(member)
    after.pending.discard(member)
    after.joined.pop(member, None)
    if not after.members:
        return None
    if after.owner == key(user):
        after.owner = next(iter(after.members))
    return after
