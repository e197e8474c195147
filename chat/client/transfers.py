"""File transfers on the client: sending and receiving (PROTOCOL.md section 7).

Every transfer runs as its own task, so chat goes on while files move. The receive loop
hands each file event to :meth:`TransferManager.dispatch`, synchronously and in arrival
order; the tasks do the waiting, the disk work (in threads, a chunk at a time: no file is
ever held in memory whole) and the answering.

Sending: check the file, ``file_offer``, wait for ``file_go {window}``, then read,
hash and send chunks while ``sent - acked <= window`` (``acked`` being what the slowest
recipient has stored, from ``file_ack``), ``file_end {sha256}``, and report the
``file_result``. Receiving: accept (unless over ``--max-file-size`` or a bound of
file_policy.py; with ``--ask-files`` only on ``/accept``), write each chunk to a
temporary file (created at the first chunk, so an idle offer holds no descriptor) and
acknowledge it once written, check size and SHA-256 on
``file_end``, move the file into place under a safe name and say ``file_done`` (or
``file_failed``, deleting the temporary file). The lines shown are in render.py.
"""

from __future__ import annotations

import asyncio

from chat.client import own_lines
from chat.client.file_lines import file_aborted_line, progress_line
from chat.client.receiving import LEAVING, Receiving
from chat.client.sending import Sending
from chat.client.transfer_base import MAX_EARLY, offered_name
from chat.protocol.envelope import Envelope

__all__ = ["TransferManager", "offered_name"]


class TransferManager(Sending, Receiving):
    """Every file transfer of one client session."""

    @property
    def active(self) -> int:
        """Transfers (and their answers) still running."""
        return len(self._tasks)

    def stop_accepting(self) -> None:
        """From now on, offers are declined (the client is leaving), and so are those
        still waiting for /accept or /decline: nobody is left to answer them."""
        self._accepting = False
        for incoming in self._asked.values():
            if incoming.decision is not None and not incoming.decision.done():
                incoming.refusal = LEAVING
                incoming.decision.set_result(False)
        self._asked.clear()

    async def wait_finished(self) -> None:
        """Return once every transfer has ended (sent, received, failed or aborted)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self, reason: str | None = None) -> None:
        """Stop everything now, deleting temporary files; with ``reason`` (the connection
        was lost), say which transfers it interrupted."""
        self._accepting = False
        if reason is not None:
            for incoming in self._incoming.values():
                self._emit(file_aborted_line(incoming.name, incoming.sender, reason))
            for out in [*self._outgoing.values(), *self._pending_offers]:
                self._emit(own_lines.file_not_sent(out.name, reason))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def status_lines(self) -> list[str]:
        """One progress line per running transfer (for the terminal's status bar)."""
        now = asyncio.get_running_loop().time()
        lines = []
        for out in [*self._pending_offers, *self._outgoing.values()]:
            label = own_lines.sending_progress(out.name, out.target, out.group)
            if out.flow is None:
                lines.append(f"{label}: waiting for an answer")
            else:
                rate = out.meter.update(now, out.acked)
                lines.append(progress_line(label, out.acked, out.size, rate))
        for incoming in self._incoming.values():
            rate = incoming.meter.update(now, incoming.received)
            label = own_lines.receiving_progress(incoming.name, incoming.sender)
            lines.append(progress_line(label, incoming.received, incoming.size, rate))
        return lines

    # --- events from the server ---------------------------------------------------------

    def dispatch(self, event: Envelope) -> bool:
        """Take a file event (True) or leave it to the caller to show (False)."""
        kind = event.type
        if kind == "file_incoming":
            self._offered(event)
        elif kind in ("file_chunk", "file_end", "file_aborted"):
            incoming = self._incoming.get(event["id"])
            if incoming is not None:
                incoming.events.put_nowait(event)
        elif kind in ("file_go", "file_ack", "file_result"):
            out = self._outgoing.get(event["id"])
            if out is not None:
                out.feed(event)
            else:
                # The offer's reply may still be on its way to its task.
                self._early.setdefault(event["id"], []).append(event)
                while len(self._early) > MAX_EARLY:
                    del self._early[next(iter(self._early))]
        else:
            return False
        return True

