"""The routing seam: who is online, and delivery of encoded events to users.

Handlers talk only to a :class:`Hub`. :class:`LocalHub` keeps everything in this process;
a Redis-backed hub (several server processes acting as one) implements the same
interface, which is why every method is a coroutine even where the local one needs no
waiting.

Events are passed already encoded (envelope plaintext bytes): a broadcast is serialised
once and each recipient's connection only seals it under its own keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Protocol

from chat.protocol.codes import Feature
from chat.protocol.envelope import Envelope
from chat.server.conversations import Message
from chat.server.groups import GroupChange
from chat.server.names import key, skeleton
from chat.server.presence import UNSUBSCRIBED


class Outbox(Protocol):
    """A logged-in user's connection, as the hub sees it."""

    #: Whether its user has an account (a guest otherwise).
    registered: bool
    #: How far into the presence feed it has been sent (presence.py).
    presence_seen: int
    #: Extensions its client asked for at login (PROTOCOL.md section 6.6).
    features: set[Feature]
    #: The message id from which its user may read their private conversations (a guest:
    #: from its login; an account: from its registration).
    reads_from: int
    #: The token its client may resume with (resume_tokens.py), if it asked for one.
    resume_token: str | None
    #: Whether its user's new connection took over from it (``supersede``).
    superseded: bool
    #: Whether its user's read marks were kept already (when the connection was lost).
    read_marked: bool
    #: Whether it asked for Feature.RESUME (its events carry their message numbers).
    numbered: bool

    @property
    def closing(self) -> bool:
        """Whether the connection is ending (a login on it must fail)."""

    def logged_in(self, name: str, registered: bool, features: set[Feature]) -> None:
        """The login handler accepted ``name``: the connection records it."""

    def supersede(self) -> None:
        """Its user logged in again with its resume token: close it and log it out."""

    def deliver(self, payload: bytes, *, bulk: bool = False, droppable: bool = False) -> None:
        """Seal and queue one encoded event; never blocks, never raises. ``bulk`` marks
        file data, which flow control bounds, so it does not count as unread backlog;
        ``droppable`` a broadcast, which a reader too slow for it misses (and is told)
        instead of being disconnected (review M4)."""


class SessionState:
    """What the handlers and the hub keep on an Outbox about its user's session, as it
    is before login (a connection, or the in-memory peer of the tests, starts from it)."""

    __slots__ = (
        "features", "name", "numbered", "presence_seen", "read_marked", "reads_from", "registered",
        "resume_token", "superseded",
    )  # fmt: skip

    def __init__(self) -> None:
        self.name: str | None = None
        self.registered = False
        self.features: set[Feature] = set()
        self.numbered = False
        self.reads_from = 0
        self.resume_token: str | None = None
        self.superseded = False
        self.read_marked = False
        self.presence_seen = UNSUBSCRIBED


class Claim(Enum):
    """How a login's claim on its name went."""

    #: The name is online already (or a look-alike of it is).
    REFUSED = "refused"
    #: The name was free: a new arrival, to be announced.
    NEW = "new"
    #: The name's own earlier session held it and was superseded (PROTOCOL.md 6.8):
    #: no moment without a holder, nobody is told of a join.
    TAKEN_OVER = "taken_over"


class Hub(Protocol):
    async def claim(self, name: str, outbox: Outbox, *, takeover: bool = False) -> Claim:
        """Log ``name`` in with ``outbox``. With ``takeover`` (the login showed the name's
        resume token) a session holding the name is superseded, wherever it is."""

    async def release(self, name: str, outbox: Outbox) -> None:
        """Log ``name`` out, if ``outbox`` is still the one holding it."""

    async def online(self) -> list[str]:
        """Online usernames as first written, in login order."""

    async def lookup(self, name: str) -> str | None:
        """The online user's name as first written, or None if not online."""

    async def lookup_similar(self, name: str) -> str | None:
        """An online user whose name looks like ``name`` (names.skeleton) without being
        it, or None."""

    async def send(
        self, names: Iterable[str], payload: bytes, *, bulk: bool = False, numbered: bytes | None = None,
        message: Message | None = None,
    ) -> None:
        """Deliver to each named user who is online; others are skipped. ``numbered``:
        the same event with its stored ``message``'s numbers, for sessions with
        Feature.RESUME."""

    async def send_all(
        self, payload: bytes, *, exclude: str | None = None, numbered: bytes | None = None,
        message: Message | None = None,
    ) -> None:
        """Deliver a broadcast to every online user except ``exclude`` (droppable)."""

    async def group_changed(self, change: GroupChange) -> None:
        """A group change was stored and applied here (the other nodes apply it too)."""

    async def groups_caught_up(self) -> bool:
        """Apply the group changes other nodes made that this one has not yet; whether
        there were any (a request refused for a group is then tried again)."""

    def in_turn(self, message: Message, deliver: Callable[[], None]) -> None:
        """Call ``deliver`` (the reply to ``message``'s sender) once every earlier message
        of its conversation has been delivered here, so a client never learns a
        sequence number before those below it."""

    def forward(self, user: str, rid: int | None, registered: bool, address: str, env: Envelope) -> bool:
        """Send a file request about another node's transfer to that node (which relays
        the transfer and answers ``user`` through the hub); False: handle it here."""

    def outboxes(self) -> list[Outbox]:
        """Every connection logged in on this node (used by its shutdown)."""


class LocalHub:
    """The in-process hub: a dict of online users in login order."""

    def __init__(self) -> None:
        # key(name) -> (name as written, outbox); dicts keep insertion (login) order.
        self._online: dict[str, tuple[str, Outbox]] = {}
        #: skeleton(name) -> key(name) of the online users.
        self._looks: dict[str, str] = {}

    async def claim(self, name: str, outbox: Outbox, *, takeover: bool = False) -> Claim:
        held = self._online.get(key(name))
        if takeover and held is not None and held[1] is not outbox:
            self._online[key(name)] = (held[0], outbox)  # no moment without a holder
            held[1].supersede()
            return Claim.TAKEN_OVER
        if key(name) in self._online or self._looks.get(skeleton(name), key(name)) != key(name):
            return Claim.REFUSED
        self._online[key(name)] = (name, outbox)
        self._looks.setdefault(skeleton(name), key(name))
        return Claim.NEW

    async def release(self, name: str, outbox: Outbox) -> None:
        entry = self._online.get(key(name))
        if entry is not None and entry[1] is outbox:
            del self._online[key(name)]
            if self._looks.get(skeleton(name)) == key(name):
                del self._looks[skeleton(name)]

    async def online(self) -> list[str]:
        return [name for name, _ in self._online.values()]

    async def lookup(self, name: str) -> str | None:
        entry = self._online.get(key(name))
        return entry[0] if entry else None

    async def lookup_similar(self, name: str) -> str | None:
        other = self._looks.get(skeleton(name))
        if other is None or other == key(name):
            return None
        return self._online[other][0]

    async def send(
        self, names: Iterable[str], payload: bytes, *, bulk: bool = False, numbered: bytes | None = None,
        message: Message | None = None,
    ) -> None:
        for name in names:
            entry = self._online.get(key(name))
            if entry is not None:
                entry[1].deliver(_variant(entry[1], payload, numbered), bulk=bulk)

    async def send_all(
        self, payload: bytes, *, exclude: str | None = None, numbered: bytes | None = None,
        message: Message | None = None,
    ) -> None:
        skip = key(exclude) if exclude is not None else None
        for k, (_, outbox) in list(self._online.items()):
            if k != skip:
                outbox.deliver(_variant(outbox, payload, numbered), droppable=True)

    async def group_changed(self, change: GroupChange) -> None:
        pass  # one node: nobody else to tell

    async def groups_caught_up(self) -> bool:
        return False  # one node: nothing elsewhere

    def in_turn(self, message: Message, deliver: Callable[[], None]) -> None:
        deliver()  # one node delivers in order already

    def forward(self, user: str, rid: int | None, registered: bool, address: str, env: Envelope) -> bool:
        return False  # every transfer is relayed here

    def outboxes(self) -> list[Outbox]:
        return [outbox for _, outbox in self._online.values()]


def _variant(outbox: Outbox, payload: bytes, numbered: bytes | None) -> bytes:
    # ``outbox.numbered``, not ``Feature.RESUME in outbox.features``: an Enum's hash is a
    # Python call, and this runs once per recipient of every broadcast.
    if numbered is not None and outbox.numbered:
        return numbered
    return payload
