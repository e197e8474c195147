"""A bounded soak: 100 clients chatting with random joins, leaves, drops and reconnects
against a real server, and a checker that proves exact delivery (about 1,700 routed
events, 80,000 deliveries and 300 connections in a few seconds).

The oracle
----------
*Intended recipients.* An event is intended for the connections that were online (and,
for group events, whose user was a member) at the moment the server handled the request
that caused it. The server handles one request at a time and hands each of its
notifications to the recipients' FIFO queues in that same step, so every recipient sees
the notifications in the same relative order: the server's handling order.

*The timeline.* An observer logs in first, creates every group (so it is a member of all
of them, and their owner) and then only reads. It is therefore a recipient of every
routed notification: ``user_joined``, ``user_exited``, ``broadcast``, ``group_message``,
``member_joined`` and ``member_left``. Its stream is the timeline T: the server's
handling order of everything routed. A ``user_joined`` or ``user_exited`` may name several
users (the server combines announcements made close together, and may cut them
differently for each recipient), so T, and every stream below, counts it as one step per
name, in order. Replaying T gives, before and after each entry, who
is online (which *connection* of each name: the n-th login of a name is its n-th
``user_joined`` in T; a name reconnects only after the observer saw its ``user_exited``)
and who is in each group.

*Routed events.* From T and the replayed state, the checker computes for each entry its
recipients (``broadcast``: everyone online but the sender; ``group_message``: online
members but the sender; ``user_joined``/``user_exited``: everyone else online;
``member_joined``/``member_left``: the group's other online members after the change),
hence for each connection c its expected stream E(c). The routed events c actually
received, A(c), must equal E(c) exactly if c lived to the end or quit (``quit`` is
acknowledged after the logout, so nothing routed to c is left behind), and must be a
prefix of E(c) if c's client dropped it (what was in flight is lost with the socket). This
proves none lost, none duplicated, none misrouted, and every sender's order kept (indeed
the global order).

*Replies.* Every request of a connection that lived or quit gets exactly one reply. A
broadcast or group message answered ``ok`` is in T exactly once, one answered with an
error is not in T, and one whose sender dropped before the answer is in T at most once;
each connection's group_joined / group_left replies match its member_joined /
member_left entries in T (plus, for a connection that quit or dropped, one member_left
per group it was still in: its users are guests, whose memberships end with them).

*Private messages* are not seen by the observer. A private is handled after the last
routed event its sender received before sending it and before the first one received
after its reply (or before the sender's logout): a window of T in which the sender would
have seen any login or logout of the target. The target connections online in that window are
the candidates: ``private_sent`` means exactly one candidate connection receives it (it
must, if it lived, quit, or received anything routed after the window), an error means
nobody does, no reply (the sender dropped) means at most one candidate does; received
privates name their receiver as target, and each (sender, receiver) pair keeps order.

A failure lists each kind of problem with examples. A stream mismatch found while the
connection's own group_join or group_leave of that group was pending (sent, not yet
answered) is reported as such: it means the server changed a membership, routed by it,
and only later announced the change.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from robust_helpers import NO_ADDRESS_LIMITS, RawSession, assert_fresh_pair_chats, running_server
from websockets.exceptions import ConnectionClosed

from chat.keys import load_public_key
from chat.protocol.envelope import Envelope, decode_event, encode_request

SEED = 20240605
CLIENTS = 100
STEPS = 40
GROUPS = [f"g{k}" for k in range(8)]
OBSERVER = "observer"
ROUTED = ("user_joined", "user_exited", "broadcast", "group_message", "member_joined", "member_left")
PRESENCE = ("user_joined", "user_exited")
#: Weights of the actions an actor picks from at each step.
ACTIONS = {
    "broadcast": 6, "private": 30, "group_message": 30, "group_join": 14, "group_leave": 9,
    "drop": 2, "drop_in_flight": 1, "quit": 2, "pause": 6,
}
Key = tuple[str, int]  # a connection: (name, generation)


def _name(index: int) -> str:
    return f"u{index:03d}"


@dataclass
class Sent:
    kind: str
    fields: dict[str, Any]
    #: How many events the connection had received when the request went out.
    mark: int
    reply: Envelope | None = None
    #: Index of the reply in the connection's events.
    position: int | None = None


class Conn:
    """One connection of one name: every event it received, every request it sent."""

    def __init__(self, session: RawSession, name: str, gen: int) -> None:
        self.session = session
        self.name = name
        self.gen = gen
        self.events: list[Envelope] = []
        self.sent: dict[int, Sent] = {}
        self.fate = "live"  # or "dropped" / "quit"
        self.exits: Counter[str] = Counter()
        #: Replies to a request that was answered already, and replies to unknown rids.
        self.stray_replies: list[Envelope] = []
        self._waiters: dict[int, asyncio.Future[Envelope]] = {}
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @property
    def key(self) -> Key:
        return (self.name, self.gen)

    async def _read(self) -> None:
        ws, channel = self.session.ws, self.session.channel
        assert channel is not None
        try:
            while True:
                record = await ws.recv()
                assert isinstance(record, bytes)
                event = decode_event(channel.open(record))
                self.events.append(event)
                if event.type == "user_exited" and "re" not in event.fields:
                    for name in event["names"]:
                        self.exits[name] += 1
                rid = event.get("re")
                if rid is not None and (rid not in self.sent or self.sent[rid].reply is not None):
                    self.stray_replies.append(event)
                elif rid is not None:
                    sent = self.sent[rid]
                    sent.reply, sent.position = event, len(self.events) - 1
                    waiter = self._waiters.pop(rid, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(event)
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            for waiter in self._waiters.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError(f"{self.key} closed"))
            self._changed.set()

    async def send(self, kind: str, **fields: Any) -> int:
        rid = len(self.sent) + 1
        self.sent[rid] = Sent(kind, fields, len(self.events))
        await self.session.send_plaintext(encode_request(kind, rid=rid, **fields))
        return rid

    async def request(self, kind: str, **fields: Any) -> Envelope:
        rid = len(self.sent) + 1
        waiter: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = waiter
        await self.send(kind, **fields)
        try:
            return await asyncio.wait_for(waiter, 30)
        except TimeoutError:
            raise AssertionError(f"{self.key}: no reply to {kind} {fields} within 30s") from None

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def abort(self) -> None:
        self.fate = "dropped"
        self.session.abort()

    async def ended(self) -> None:
        await asyncio.wait_for(asyncio.shield(self._reader), 30)


async def _connect(port: int, key: rsa.RSAPublicKey, name: str, gen: int, gate: asyncio.Semaphore) -> Conn:
    async with gate:
        session = await RawSession.established(port, key)
    conn = Conn(session, name, gen)
    welcome = await conn.request("login", name=name)
    assert (welcome.type, welcome.get("name")) == ("welcome", name), welcome
    return conn


@dataclass
class World:
    port: int
    key: rsa.RSAPublicKey
    observer: Conn
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(40))
    conns: list[Conn] = field(default_factory=list)
    counter: Counter[str] = field(default_factory=Counter)


async def _actor(world: World, index: int) -> Conn:
    """One user's random life; returns its last connection."""
    rng = random.Random(SEED * 1000 + index)
    name = _name(index)
    gen = 1
    conn = await _connect(world.port, world.key, name, gen, world.gate)
    world.conns.append(conn)
    for seq in range(1, STEPS + 1):
        action = rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
        world.counter[action] += 1
        if action == "broadcast":
            await conn.request("broadcast", text=f"b:{name}:{gen}:{seq}")
        elif action == "private":
            to = _name(rng.choice([k for k in range(CLIENTS) if k != index]))
            await conn.request("private", to=to, text=f"p:{name}:{gen}:{to}:{seq}")
        elif action == "group_message":
            await conn.request("group_message", group=rng.choice(GROUPS), text=f"g:{name}:{gen}:{seq}")
        elif action in ("group_join", "group_leave"):
            await conn.request(action, group=rng.choice(GROUPS))
        elif action == "pause":
            await asyncio.sleep(rng.random() * 0.2)
        else:
            if action == "quit":
                ok = await conn.request("quit")
                assert ok.type == "ok", ok
                conn.fate = "quit"
                await conn.ended()
            else:
                if action == "drop_in_flight":
                    to = _name(rng.choice([k for k in range(CLIENTS) if k != index]))
                    await conn.send("private", to=to, text=f"p:{name}:{gen}:{to}:{seq}")
                    await conn.send("broadcast", text=f"b:{name}:{gen}:{seq}")
                conn.abort()
                await conn.ended()
            await world.observer.wait_until(lambda o=world.observer, g=gen: o.exits[name] >= g)
            gen += 1
            conn = await _connect(world.port, world.key, name, gen, world.gate)
            world.conns.append(conn)
        await asyncio.sleep(rng.random() * 0.02)
    return conn


# --- the checker --------------------------------------------------------------------------


def _ident(event: Envelope) -> tuple[Any, ...]:
    return (event.type, *sorted(event.fields.items()))


def _steps(event: Envelope) -> list[Envelope]:
    """A routed event as steps of the timeline: a ``user_joined`` / ``user_exited`` naming
    several users (the server combines announcements made close together, and may cut
    them differently for each recipient) is one step per name, in order, each with a
    single ``name``; anything else is one step."""
    if event.type in PRESENCE:
        return [Envelope(event.type, {"name": name}) for name in event["names"]]
    return [event]


class Checker:
    """Replays the observer's timeline and checks every connection against it."""

    def __init__(self, observer: Conn, conns: list[Conn]) -> None:
        self.observer = observer
        self.conns = {c.key: c for c in conns}
        self.problems: dict[str, list[str]] = defaultdict(list)
        self.timeline = [step for e in observer.events if "re" not in e.fields for step in _steps(e)]
        self.expected: dict[Key, list[int]] = defaultdict(list)
        #: name -> [(gen, index of its user_joined, index of its user_exited or len(T))]
        self.lives: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        #: For each connection: (index in its events, index in T) of its routed events.
        self.aligned: dict[Key, list[tuple[int, int]]] = {}

    def problem(self, category: str, text: str) -> None:
        self.problems[category].append(text)

    def replay(self) -> None:
        online: dict[str, int] = {OBSERVER: 1}
        joined: Counter[str] = Counter()
        members: dict[str, set[str]] = {g: {OBSERVER} for g in GROUPS}
        started: dict[str, int] = {}
        for i, event in enumerate(self.timeline):
            kind = event.type
            if kind not in ROUTED:
                self.problem("observer", f"T[{i}] unexpected {event.type} {event.fields}")
                continue
            recipients: list[str] = []
            if kind == "user_joined":
                who = event["name"]
                if who in online:
                    self.problem("observer", f"T[{i}] {who} joined while online")
                recipients = list(online)
                joined[who] += 1
                online[who] = joined[who]
                started[who] = i
            elif kind == "user_exited":
                who = event["name"]
                if who not in online:
                    self.problem("observer", f"T[{i}] {who} exited while offline")
                    continue
                self.lives[who].append((online.pop(who), started.pop(who), i))
                recipients = list(online)
            elif kind == "broadcast":
                if event["sender"] not in online:
                    self.problem("observer", f"T[{i}] broadcast from {event['sender']}, who is offline")
                recipients = [n for n in online if n != event["sender"]]
            else:
                group = members.get(event["group"])
                if group is None:
                    self.problem("observer", f"T[{i}] unknown group {event.fields}")
                    continue
                if kind == "group_message":
                    if event["sender"] not in group:
                        self.problem("observer", f"T[{i}] group message from a non-member {event.fields}")
                    recipients = [n for n in group if n != event["sender"] and n in online]
                elif kind == "member_joined":
                    if event["name"] in group:
                        self.problem("observer", f"T[{i}] {event.fields}: already a member")
                    group.add(event["name"])
                    recipients = [n for n in group if n != event["name"] and n in online]
                else:
                    if event["name"] not in group:
                        self.problem("observer", f"T[{i}] {event.fields}: not a member")
                    group.discard(event["name"])
                    recipients = [n for n in group if n in online]
            for name in recipients:
                self.expected[(name, online[name])].append(i)
        for who, gen in online.items():
            if who != OBSERVER:
                self.lives[who].append((gen, started[who], len(self.timeline)))

    def life(self, key: Key) -> tuple[int, int]:
        for gen, start, end in self.lives.get(key[0], []):
            if gen == key[1]:
                return start, end
        raise KeyError(key)

    def check_streams(self) -> None:
        """A(c) == E(c), or a prefix of it for a dropped connection."""
        for key, conn in self.conns.items():
            got = [
                (n, step)
                for n, e in enumerate(conn.events)
                if e.type in ROUTED and "re" not in e.fields
                for step in _steps(e)
            ]
            want = self.expected.get(key, [])
            aligned = []
            for k, (n, event) in enumerate(got):
                if k >= len(want):
                    self.problem("misrouted or out of order", f"{key} {conn.fate}: {_ident(event)} not owed")
                    break
                if _ident(event) != _ident(self.timeline[want[k]]):
                    near = [_ident(self.timeline[j]) for j in want[k : k + 3]]
                    owed = {_ident(self.timeline[j]) for j in want[k:]}
                    extra = " (owed later)" if _ident(event) in owed else " (not owed)"
                    previous = aligned[-1][0] if aligned else 0
                    self.problem(
                        self._mismatch_kind(conn, previous, n, event, self.timeline[want[k]]),
                        f"{key} ({conn.fate}) event #{k}: got {_ident(event)}{extra}, owed {near}",
                    )
                    break
                aligned.append((n, want[k]))
            else:
                if conn.fate != "dropped" and len(got) < len(want):
                    missing = [_ident(self.timeline[j]) for j in want[len(got) : len(got) + 3]]
                    self.problem("lost", f"{key} ({conn.fate}) missed {len(want) - len(got)}: {missing}")
            self.aligned[key] = aligned

    @staticmethod
    def _mismatch_kind(conn: Conn, first: int, last: int, got: Envelope, owed: Envelope) -> str:
        """Name a stream mismatch found between positions ``first`` and ``last`` of the
        connection's events: while its own group_join or group_leave of that group was
        pending (sent, reply not yet received), or anything else."""
        groups = {e.get("group") for e in (got, owed)} - {None}
        for sent in conn.sent.values():
            pending = sent.mark <= last and (sent.position is None or sent.position > first)
            if pending and sent.kind in ("group_join", "group_leave") and sent.fields["group"] in groups:
                return f"group event routed by a membership not yet announced (own {sent.kind} pending)"
        return "misrouted or out of order"

    def check_replies(self) -> None:
        in_timeline: Counter[str] = Counter(
            e["text"] for e in self.timeline if e.type in ("broadcast", "group_message")
        )
        for key, conn in self.conns.items():
            for event in conn.stray_replies:
                self.problem("duplicated", f"{key}: a reply to no outstanding request: {event.fields}")
            for sent in conn.sent.values():
                if sent.reply is None and conn.fate != "dropped":
                    self.problem("no reply", f"{key} {sent.kind} {sent.fields}")
                if sent.kind not in ("broadcast", "group_message"):
                    continue
                count = in_timeline[sent.fields["text"]]
                if sent.reply is None:
                    ok = count <= 1
                elif sent.reply.type == "ok":
                    ok = count == 1
                else:
                    ok = count == 0
                if not ok:
                    reply = sent.reply.type if sent.reply else None
                    text = sent.fields["text"]
                    self.problem("acknowledged vs routed", f"{text}: reply {reply}, {count}x in T")
            self._check_membership_replies(key, conn)
        order: dict[Key, list[int]] = defaultdict(list)
        for event in self.timeline:
            if event.type in ("broadcast", "group_message"):
                _, name, gen, seq = event["text"].split(":")
                if name != event["sender"]:
                    self.problem("misrouted or out of order", f"{event.fields}: wrong sender")
                order[(name, int(gen))].append(int(seq))
        for key, seqs in order.items():
            if seqs != sorted(set(seqs)):
                self.problem("misrouted or out of order", f"{key}: its messages in T in order {seqs}")

    def _check_membership_replies(self, key: Key, conn: Conn) -> None:
        try:
            start, end = self.life(key)
        except KeyError:
            self.problem("observer", f"{key} never seen logging in")
            return
        for request, reply, notice in (
            ("group_join", "group_joined", "member_joined"),
            ("group_leave", "group_left", "member_left"),
        ):
            for group in GROUPS:
                sent = [s for s in conn.sent.values() if s.kind == request and s.fields["group"] == group]
                replied = sum(1 for s in sent if s.reply is not None and s.reply.type == reply)
                seen = sum(
                    1 for e in self.timeline[start:end]
                    if e.type == notice and e["name"] == key[0] and e["group"] == group
                )
                unknown = sum(1 for s in sent if s.reply is None)
                # A guest's memberships end with its connection: one member_left per group
                # it was still in when it quit or dropped, with no group_left reply.
                ended = 1 if notice == "member_left" and conn.fate != "live" else 0
                if not replied <= seen <= replied + unknown + ended:
                    self.problem(
                        "acknowledged vs routed", f"{key} {group}: {replied} {reply} replies, {seen} {notice}"
                    )

    def check_privates(self) -> None:
        received: dict[str, list[Key]] = defaultdict(list)
        for key, conn in self.conns.items():
            last: dict[Key, int] = {}
            for event in conn.events:
                if event.type != "private" or "re" in event.fields:
                    continue
                _, sender, gen, to, seq = event["text"].split(":")
                if event["sender"] != sender or to != key[0]:
                    self.problem("misrouted or out of order", f"{key} got a private {event.fields}")
                received[event["text"]].append(key)
                pair = (sender, int(gen))
                if int(seq) <= last.get(pair, 0):
                    self.problem("misrouted or out of order", f"{key}: privates from {pair} out of order")
                last[pair] = int(seq)
        for key, conn in self.conns.items():
            for sent in conn.sent.values():
                if sent.kind != "private":
                    continue
                text, to = sent.fields["text"], sent.fields["to"]
                got = received.get(text, [])
                if len(got) > 1:
                    self.problem("duplicated", f"{text} received by {got}")
                candidates, offline, must = self._candidates(key, conn, sent, to)
                if any(r not in candidates for r in got):
                    self.problem("misrouted or out of order", f"{text} received by {got}, not {candidates}")
                if sent.reply is None:
                    continue
                if sent.reply.type == "private_sent":
                    if not candidates:
                        self.problem("acknowledged vs routed", f"{text}: private_sent but {to} was offline")
                    elif must and not got:
                        self.problem("lost", f"{text}: private_sent, never received by {candidates}")
                elif got:
                    self.problem("acknowledged vs routed", f"{text}: {sent.reply.type} but received by {got}")
                elif not offline:
                    self.problem("acknowledged vs routed", f"{text}: {sent.reply.fields} but {to} was online")

    def _candidates(self, key: Key, conn: Conn, sent: Sent, to: str) -> tuple[list[Key], bool, bool]:
        """(target connections online in the handling window, whether the target was
        offline at some point in it, whether a sole candidate must have received it)."""
        start, end = self.life(key)
        aligned = self.aligned.get(key, [])
        # Handled after the request went out and before its reply was queued (a handler
        # may await between deciding and replying), so the window runs from the last
        # routed event received before sending to the first received after the reply.
        before = [t for n, t in aligned if n < sent.mark]
        after = [t for n, t in aligned if sent.position is not None and n > sent.position]
        a = before[-1] if before else start
        b = after[0] if after else end
        candidates = [
            (to, gen) for gen, s, e in self.lives.get(to, []) if s <= b - 1 and e > a
        ]
        covered = sorted((max(s, a), min(e, b)) for _, s, e in self.lives.get(to, []) if s <= b - 1 and e > a)
        offline, position = False, a
        for s, e in covered:
            if s > position:
                offline = True
            position = max(position, e)
        offline = offline or position < b
        must = False
        if len(candidates) == 1 and not offline:
            target = self.conns.get(candidates[0])
            if target is not None:
                seen_after = any(t >= b for _, t in self.aligned.get(target.key, []))
                must = target.fate != "dropped" or seen_after
        return candidates, offline, must

    def report(self) -> str:
        lines = []
        for category, items in sorted(self.problems.items()):
            lines.append(f"{category}: {len(items)}")
            lines += [f"    {item}" for item in items[:6]]
        return "\n".join(lines)


@pytest.mark.slow
async def test_soak_a_hundred_clients_exact_delivery(key_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """100 clients, each taking 40 random steps (broadcasts, private and group messages,
    group joins and leaves, drops with and without requests in flight, quits, and
    reconnects under the same name), then every message is checked against the oracle
    of the module docstring."""
    public_key = load_public_key(key_pair[1])
    extra = ["--rate-limit", "0", "--max-per-ip", "0", *NO_ADDRESS_LIMITS, "--max-backlog", str(256 << 20)]
    async with running_server(key_pair[0], tmp_path / "server", *extra) as server:
        started = time.monotonic()
        observer = await _connect(server.port, public_key, OBSERVER, 1, asyncio.Semaphore(1))
        for group in GROUPS:
            assert (await observer.request("group_create", group=group)).type == "group_created"
        world = World(server.port, public_key, observer)
        last = await asyncio.gather(*(_actor(world, i) for i in range(CLIENTS)))
        live = [c for c in last if c.fate == "live"]
        await asyncio.gather(*(c.request("list") for c in live))
        await observer.request("list")
        elapsed = time.monotonic() - started

        checker = Checker(observer, world.conns)
        checker.replay()
        checker.check_streams()
        checker.check_replies()
        checker.check_privates()
        routed = sum(len(v) for v in checker.expected.values())
        summary = (
            f"{len(world.conns)} connections, {len(checker.timeline)} timeline entries, {routed} routed "
            f"deliveries, actions {dict(world.counter)}, {elapsed:.1f}s"
        )
        assert not checker.problems, f"{summary}\n{checker.report()}"
        assert world.counter["drop"] + world.counter["quit"] + world.counter["drop_in_flight"] >= 20, summary
        assert len(checker.timeline) > 1500, summary

        await assert_fresh_pair_chats(server, public_key)
        for conn in [*live, observer]:
            conn.abort()
            await conn.ended()
