"""collector.py: after start-up the server's process stops scanning what start-up made and
spaces young collections out, so bursts of short-lived objects (a broadcast's frame
lists) no longer force full collections, and reference cycles are still freed. Each case
runs in a fresh interpreter: the test process keeps its own collector settings."""

from __future__ import annotations

import subprocess
import sys

WORKLOAD = """
import gc, sys
if sys.argv[1] == "settled":
    from chat.server.collector import settle_after_start
    settle_after_start()
keep = [[i] for i in range(50_000)]  # what a server holds for long: its connections
full = gc.get_stats()[2]["collections"]
for turn in range(2_000):  # a broadcast's turn: a list of frames per recipient, freed at its end
    frames = [[turn] for _ in range(1_000)]
    del frames
full = gc.get_stats()[2]["collections"] - full
collected = sum(g["collected"] for g in gc.get_stats())
for n in range(100_000):  # garbage only the collector can free: pairs that refer to each other
    a, b = [n], [n]
    a.append(b)
    b.append(a)
del a, b
collected = sum(g["collected"] for g in gc.get_stats()) - collected
print(full, collected, gc.get_freeze_count() > 0)
"""


def run(mode: str) -> tuple[int, int, bool]:
    done = subprocess.run(
        [sys.executable, "-c", WORKLOAD, mode], capture_output=True, text=True, timeout=120, check=True
    )
    full, collected, frozen = done.stdout.split()
    return int(full), int(collected), frozen == "True"


def test_bursts_of_short_lived_objects_no_longer_force_full_collections() -> None:
    default_full, _, default_frozen = run("default")
    settled_full, _, settled_frozen = run("settled")
    assert default_full >= 5 and not default_frozen  # CPython's defaults: full scans
    assert settled_full == 0 and settled_frozen


def test_reference_cycles_are_still_collected_after_settling() -> None:
    _, collected, _ = run("settled")
    # All but those made since the last young collection (fewer than its threshold).
    assert collected >= 2 * 100_000 - 20_000, collected
