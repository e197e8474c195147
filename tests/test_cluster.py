"""Several nodes as one service (README "Running a cluster"): what only a cluster can get
wrong, on three real nodes with a real Redis and PostgreSQL (cluster_world.py). The
commands themselves run across nodes in test_cluster_commands.py and
test_cluster_files.py."""

from __future__ import annotations

import asyncio

import pytest
from cluster_world import ClusterChat
from e2e_harness import USERNAME_PROMPT
from test_e2e_accounts import login_with_password, register

pytestmark = pytest.mark.cluster


async def test_a_name_is_taken_on_every_node_and_free_again_after_quit(cluster: ClusterChat) -> None:
    alice = await cluster.spawn("alice", node=0)
    await alice.expect("[Welcome alice]")
    for node, spelling in ((1, "ALICE"), (2, "alıce")):  # the second: a dotless ı
        other = await cluster.spawn(label=f"other{node}", node=node)
        await other.expect(USERNAME_PROMPT)
        other.send(spelling)
        await other.expect(f"[Username '{spelling}' is already in use. Please enter another name.]")
        await other.terminate()
    alice.send("/quit")
    await alice.wait_clean_exit()
    again = await cluster.spawn("alice", "again", node=2)
    await again.expect("[Welcome alice]")


async def test_list_and_presence_notices_once_each_across_nodes(cluster: ClusterChat) -> None:
    alice, bob, carol = await cluster.login("alice", "bob", "carol")
    await alice.expect("[bob joined]")
    await alice.expect("[carol joined]")
    await bob.expect("[carol joined]")
    for client in (alice, bob, carol):
        await client.sync("alice, bob, carol")
    carol.send("/quit")
    await carol.wait_clean_exit()
    await alice.expect("[carol exited]")
    await bob.expect("[carol exited]")
    await alice.sync("alice, bob")
    await bob.sync("alice, bob")
    for client, lines in ((alice, ["[bob joined]", "[carol joined]", "[carol exited]"]),
                          (bob, ["[carol joined]", "[carol exited]"])):  # fmt: skip
        notices = [line for line in client.out.lines if line.endswith(("joined]", "exited]"))]
        assert notices == lines, client.report()


async def test_one_group_name_is_created_once_when_two_nodes_race(cluster: ClusterChat) -> None:
    alice, bob = await cluster.login("alice", "bob")
    alice.send("/create race")
    bob.send("/create race")
    outcomes = sorted(
        await asyncio.gather(
            alice.expect_match(lambda s: "race" in s, "a reply about race"),
            bob.expect_match(lambda s: "race" in s, "a reply about race"),
        )
    )
    assert outcomes == ["Group 'race' already exists.", "Group race created and joined."]


async def test_offline_messages_history_and_search_across_nodes(cluster: ClusterChat) -> None:
    bob = await cluster.spawn("bob", node=1)
    await bob.expect("[Welcome bob]")
    await register(bob, "bob password 1")
    bob.send("/quit")
    await bob.wait_clean_exit()
    alice = await cluster.spawn("alice", node=0)
    await alice.expect("[Welcome alice]")
    alice.send("/msg bob kept for later")
    await alice.expect_prefix("[bob is offline;")
    alice.send("hello from node zero")
    carol = await cluster.spawn("carol", node=2)
    await carol.expect("[Welcome carol]")
    alice.send("a second broadcast")
    await carol.expect("[Broadcast from alice]: a second broadcast")
    carol.send("/history * 5")
    await carol.expect_match(lambda s: s.endswith("] alice: hello from node zero"), "the first in history")
    await carol.expect_match(lambda s: s.endswith("] alice: a second broadcast"), "the second in history")
    carol.send("/search second")
    await carol.expect_match(lambda s: s.endswith("] * alice: a second broadcast"), "the search hit")
    back = await login_with_password(cluster, "bob", "bob password 1")
    await back.expect_match(
        lambda s: s.startswith("Private message from alice (sent ") and s.endswith("): kept for later"),
        "the offline message",
    )
