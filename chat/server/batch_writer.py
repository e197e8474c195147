"""Messages stored in batches, for both databases (message_store.py, pg_messages.py):
what is submitted while a batch is being committed goes into the next one, and each
caller gets its own message back once its batch is committed.

A message submitted when nothing is being written goes at the end of the event loop's
turn, with whatever else that turn submitted, so latency does not pay for throughput;
under load the batches grow by themselves, and one commit (one transaction) serves many
messages. A database that can commit without waiting (SQLite, whose thread is idle) does
it there and then, on the loop's thread: handing a lone message to a thread and back
costs more CPU than its commit (BENCHMARKS.md, "Where the server's time goes")."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chat.server.conversations import Message


@dataclass(frozen=True)
class Pending:
    """A message to store."""

    conversation: str
    sender: str
    recipient: str
    text: str
    sent_at: float
    sender_key: str
    client_id: str | None

    def stored(self, message_id: int, seq: int) -> Message:
        return Message(
            message_id, self.conversation, seq, self.sender, self.recipient, self.text, self.sent_at
        )


#: Stores a batch, in order; returns its messages in the same order.
StoreBatch = Callable[[list[Pending]], Awaitable[list[Message]]]
#: Stores a batch at once on the calling thread; None when that would have to wait.
StoreNow = Callable[[list[Pending]], "list[Message] | None"]


class BatchWriter:
    """One writer at a time calls ``store`` with what waits (``max_batch`` at most)."""

    def __init__(
        self, store: StoreBatch, max_batch: int | None = None, store_now: StoreNow | None = None
    ) -> None:
        self._store = store
        self._store_now = store_now
        self._max_batch = max_batch
        self._queue: list[tuple[Pending, asyncio.Future[Message]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: The end-of-turn attempt to store what this turn submitted (``store_now``).
        self._turn_end: asyncio.Handle | None = None

    async def submit(self, item: Pending) -> Message:
        """Store ``item``; its message once committed. A caller that gives up does not
        take the message out of its batch (it is stored all the same)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        self._queue.append((item, future))
        if self._writer is None and self._turn_end is None:
            if self._store_now is not None:
                self._turn_end = loop.call_soon(self._write_now)
            else:
                self._writer = loop.create_task(self._write())
        return await asyncio.shield(future)

    def _write_now(self) -> None:
        """At the end of the turn: store what waits on this thread if the database can
        take it at once, else hand it to the writer task."""
        self._turn_end = None
        assert self._store_now is not None
        if self._writer is not None or not self._queue:
            return
        batch = self._queue[: self._max_batch or len(self._queue)]
        try:
            messages = self._store_now([item for item, _ in batch])
        except Exception as exc:  # nothing of the batch is acknowledged
            del self._queue[: len(batch)]
            _settle(batch, exc)
        else:
            if messages is not None:
                del self._queue[: len(batch)]
                _settle(batch, messages)
        if self._queue:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        batch: list[tuple[Pending, asyncio.Future[Message]]] = []
        try:
            while self._queue:
                cut = self._max_batch or len(self._queue)
                batch, self._queue = self._queue[:cut], self._queue[cut:]
                try:
                    _settle(batch, await self._store([item for item, _ in batch]))
                except Exception as exc:  # nothing of the batch is acknowledged
                    _settle(batch, exc)
                batch = []
        finally:
            self._writer = None
            for _, future in [*batch, *self._queue]:
                if not future.done():  # the writer was cancelled (shutdown)
                    future.cancel()
            self._queue = []

    def close(self) -> None:
        """Stop writing: what still waits is not stored, and its callers are told so."""
        if self._turn_end is not None:
            self._turn_end.cancel()
            self._turn_end = None
            for _, future in self._queue:
                future.cancel()
            self._queue = []
        if self._writer is not None:
            self._writer.cancel()


def _settle(batch: list[tuple[Pending, asyncio.Future[Message]]], outcome: list[Message] | Exception) -> None:
    """Tell each caller of ``batch`` its message, or the error that stored none of them."""
    assert isinstance(outcome, Exception) or len(outcome) == len(batch)
    for index, (_, future) in enumerate(batch):
        if not future.done():
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome[index])
