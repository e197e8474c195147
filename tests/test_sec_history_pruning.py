"""Review finding M12: history pruning cannot be dodged.

The review posted to ``big`` except when the next global row id was a multiple of 64
(then to ``decoy``), so ``big`` was never pruned: 630 rows against a limit of 10. The
real storage (SQLite file) is driven the same way here, with appends one at a time and
all at once (then they are committed in batches).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from chat.server.conversations import group_conversation
from chat.server.message_store import PRUNE_EVERY
from chat.server.storage import Storage

LIMIT = 10


@pytest.mark.parametrize("at_once", [False, True], ids=["one at a time", "all at once"])
async def test_interleaved_inserts_cannot_dodge_pruning(tmp_path: Path, at_once: bool) -> None:
    path = tmp_path / "chat.db"
    storage = Storage(str(path), history_limit=LIMIT)
    big, decoy = group_conversation("big"), group_conversation("decoy")
    await storage.open()
    try:
        to = [decoy if n % 64 == 0 else big for n in range(1, 701)]
        appends = [storage.messages.append(conversation, "mallory", "x") for conversation in to]
        if at_once:
            stored = await asyncio.gather(*appends)
        else:
            stored = [await append for append in appends]
        assert [m.id for m in stored] == list(range(1, 701))
        assert [m.seq for m in stored if m.conversation == decoy] == list(range(1, 11))
        kept = await storage.messages.history(big, 1000)
        assert [m.sender for m in kept] == ["mallory"] * LIMIT
        assert [m.seq for m in kept] == list(range(681, 691))
    finally:
        await storage.close()
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT conv, COUNT(*) FROM message GROUP BY conv"))
    assert rows[big] < LIMIT + PRUNE_EVERY, rows
    assert rows[decoy] <= LIMIT + PRUNE_EVERY, rows
