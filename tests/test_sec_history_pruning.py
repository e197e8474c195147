"""Review finding M12: history pruning cannot be dodged.

The review posted to ``big`` except when the next global row id was a multiple of 64
(then to ``decoy``), so ``big`` was never pruned: 630 rows against a limit of 10. The
real storage (SQLite file) is driven the same way here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chat.server.storage import PRUNE_EVERY, Storage

LIMIT = 10


async def test_interleaved_inserts_cannot_dodge_pruning(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    storage = Storage(str(path), history_limit=LIMIT)
    await storage.open()
    try:
        next_id = 1
        for _ in range(700):
            group = "decoy" if next_id % 64 == 0 else "big"
            await storage.append_history(group, "mallory", "x")
            next_id += 1
        kept = await storage.history("big", 1000)
        assert [m.sender for m in kept] == ["mallory"] * LIMIT
    finally:
        await storage.close()
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT group_key, COUNT(*) FROM group_message GROUP BY group_key"))
    assert rows["big"] < LIMIT + PRUNE_EVERY, rows
    assert rows["decoy"] <= LIMIT + PRUNE_EVERY, rows
