"""cluster_directory.py: what a node knows of the other nodes' users (where they are,
their names where the key differs) and what it costs per user, which is what keeps a
node's memory growing with its own users (BENCHMARKS.md, scenario 7)."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any, cast

import pytest

from chat.server import cluster_directory
from chat.server.cluster_directory import Directory, Entry
from chat.server.hub import Outbox


def outbox() -> Outbox:
    return cast(Outbox, object())


def test_other_nodes_users_are_found_by_key_with_their_names() -> None:
    directory = Directory()
    directory.add_remote("alice", "Alice", "node-a")
    directory.add_remote("bob", "bob", "node-b")
    assert (directory.node_of("alice"), directory.name_of("alice")) == ("node-a", "Alice")
    assert (directory.node_of("bob"), directory.name_of("bob")) == ("node-b", "bob")
    assert directory.of_node("node-a") == [("alice", "Alice")]
    assert directory.remote_nodes() == {"node-a", "node-b"}
    directory.add_remote("alice", "Alice", "node-b")  # taken over on node-b
    assert directory.node_of("alice") == "node-b"
    assert directory.remote_nodes() == {"node-b"}  # node-a holds nobody now
    assert sorted(directory.of_node("node-b")) == [("alice", "Alice"), ("bob", "bob")]
    directory.remove("bob")
    assert directory.node_of("bob") is None and not directory.is_remote("bob")


def test_a_user_moving_here_or_away_is_known_once() -> None:
    directory = Directory()
    mine = outbox()
    directory.add_remote("carol", "Carol", "node-a")
    directory.add_local("carol", Entry("Carol", 7, mine))
    assert directory.local("carol") is mine and not directory.is_remote("carol")
    assert directory.remote_nodes() == set()
    directory.add_remote("carol", "Carol", "node-b")
    assert directory.local("carol") is None and directory.node_of("carol") == "node-b"
    assert directory.outboxes() == []


def test_node_numbers_are_reused_once_a_node_holds_nobody() -> None:
    directory = Directory()
    for n in range(100):  # nodes restarting over and over, each with a new id
        directory.add_remote(f"u{n}", f"u{n}", f"node-{n}")
        directory.remove(f"u{n}")
    directory.add_remote("last", "last", "node-last")
    state: Any = directory
    assert len(state._nodes) == 1 and state._index == {"node-last": 0}


def test_a_user_found_in_redis_is_routed_until_its_join_frame_and_not_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory = Directory()
    directory.expect("dana", "Dana", "node-c")
    assert directory.route("dana") == "node-c"
    assert directory.node_of("dana") is None  # not known from a frame: not announced, not left
    directory.add_remote("dana", "Dana", "node-c")  # the join frame
    assert directory.route("dana") == "node-c" and directory.node_of("dana") == "node-c"
    directory.expect("erin", "Erin", "node-c")
    now = cluster_directory.time.monotonic()
    monkeypatch.setattr(cluster_directory.time, "monotonic", lambda: now + cluster_directory.EXPECTED_FOR)
    assert directory.route("erin") is None
    for n in range(cluster_directory.EXPECTED_MAX + 10):
        directory.expect(f"x{n}", f"x{n}", "node-c")
    assert len(cast(Any, directory)._expected) == cluster_directory.EXPECTED_MAX


def test_another_nodes_user_costs_little_memory() -> None:
    """About 25 bytes each (a row of the in-memory table: its key, its node's number, a
    name where it is not the key); a dict entry with its key string took 110, a full
    entry with name, node, order and skeleton 460."""
    users = 10_000
    directory = Directory()
    table = cast(Any, directory)._remote

    def table_bytes() -> int:
        pages, size = (table.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        return int(pages * size)

    order = list(range(users))
    random.Random(7).shuffle(order)  # joins come in any order of keys
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0], table_bytes()
        for n in order:  # the strings made here, as decoding a frame makes them
            k = f"user-{n:05d}"
            name = f"User-{n:05d}" if n % 2 else k  # half of them capitalised
            directory.add_remote(k, name, ("node-a", "node-b")[n % 2])
        python = tracemalloc.get_traced_memory()[0] - before[0]
    finally:
        tracemalloc.stop()
    per_user = (python + table_bytes() - before[1]) / users
    assert per_user < 40, per_user
    assert directory.name_of("user-00001") == "User-00001" and directory.name_of("user-00002") == "user-00002"
