"""cluster_order.py: a node delivers each conversation's stored messages in sequence
order whatever order pub/sub brings them in, reads a gap from the database, and never
lets a message overtake one still on its way (a client takes a number below the last it
showed for a repeat, so overtaking loses the message).

The database here is a list of the messages stored, read through the same
(conversation, start, end) call the node makes; the read can be held open to let events
arrive while it is on its way, as they do under load."""

from __future__ import annotations

import asyncio
import time

from chat.server.cluster_order import GAP_WAIT, DeliveryLedger
from chat.server.conversations import Message

CONV = "*"


class Stored:
    """The messages of one conversation as the database holds them; reads wait for
    ``gate`` when it is set."""

    def __init__(self, count: int) -> None:
        now = time.time()
        self.messages = [Message(100 + n, CONV, n, f"user{n}", "", f"text {n}", now)
                         for n in range(1, count + 1)]  # fmt: skip
        self.gate: asyncio.Event | None = None
        self.reads: list[tuple[int, int]] = []

    async def fetch(self, conversation: str, start: int, end: int) -> list[Message]:
        self.reads.append((start, end))
        if self.gate is not None:
            await self.gate.wait()
        return [m for m in self.messages if m.conversation == conversation and start <= m.seq < end]


def ledger_for(stored: Stored, shown: list[int]) -> DeliveryLedger:
    return DeliveryLedger(stored.fetch, lambda message: shown.append(message.seq))


def arrive(ledger: DeliveryLedger, stored: Stored, seq: int, shown: list[int]) -> None:
    """Message ``seq`` arrives from another node (pub/sub)."""
    ledger.submit(CONV, seq, 100 + seq, lambda: shown.append(seq))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_message_arriving_above_a_gap_waits_while_the_first_read_is_on_its_way() -> None:
    stored, shown = Stored(6), []
    ledger = ledger_for(stored, shown)
    stored.gate = asyncio.Event()
    arrive(ledger, stored, 3, shown)  # first sight: a look at the database for 1 and 2
    await settle()
    arrive(ledger, stored, 1, shown)
    arrive(ledger, stored, 2, shown)  # the gap closes before the read returns
    arrive(ledger, stored, 6, shown)  # 4 and 5 are still on their way
    stored.gate.set()
    await settle()
    assert shown == [1, 2, 3]  # 6 waits: it must not overtake 4 and 5
    arrive(ledger, stored, 4, shown)
    arrive(ledger, stored, 5, shown)
    assert shown == [1, 2, 3, 4, 5, 6]
    ledger.close()


async def test_a_gap_read_from_the_database_is_merged_with_what_arrived_meanwhile() -> None:
    stored, shown = Stored(5), []
    ledger = ledger_for(stored, shown)
    stored.gate = asyncio.Event()
    arrive(ledger, stored, 5, shown)  # first sight: read 1 to 4
    await settle()
    arrive(ledger, stored, 2, shown)  # arrives, waits for 1
    stored.gate.set()
    await settle()
    assert shown == [1, 2, 3, 4, 5]  # 1, 3 and 4 from the database, 2 in its place
    arrive(ledger, stored, 1, shown)  # late copies are not shown again
    arrive(ledger, stored, 3, shown)
    arrive(ledger, stored, 4, shown)
    assert shown == [1, 2, 3, 4, 5]
    ledger.close()


async def test_a_message_lost_by_pub_sub_is_read_after_the_wait() -> None:
    stored, shown = Stored(4), []
    ledger = ledger_for(stored, shown)
    arrive(ledger, stored, 1, shown)
    await asyncio.sleep(GAP_WAIT * 3)  # first sight: the look at the database is done
    for seq in (2, 4):  # 3 never arrives
        arrive(ledger, stored, seq, shown)
    await settle()
    assert shown == [1, 2]
    await asyncio.sleep(GAP_WAIT * 3)
    assert shown == [1, 2, 3, 4]
    assert stored.reads[-1] == (3, 4)
    ledger.close()


async def test_the_reply_to_a_sender_comes_in_its_turn_and_a_read_does_not_repeat_it() -> None:
    stored, shown = Stored(3), []
    ledger = ledger_for(stored, shown)
    arrive(ledger, stored, 1, shown)
    await asyncio.sleep(GAP_WAIT * 3)  # first sight: the look at the database is done
    ledger.in_turn(CONV, 3, 103, lambda: shown.append(-3))  # this node's own, after 2
    assert shown == [1]
    arrive(ledger, stored, 2, shown)
    assert shown == [1, 2, -3]
    ledger.close()
