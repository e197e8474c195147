"""Receiving a file (PROTOCOL.md section 7): accept it (automatically within the bounds
of file_policy.py, or on ``/accept`` with ``--ask-files``), write each chunk to a
temporary file created when the first data arrives and acknowledge it once written,
check size and SHA-256 on ``file_end``, move the file into place under a safe name and
say ``file_done`` (or ``file_failed``, deleting the temporary file)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from chat.client.downloads import PartFile, open_with_default_program
from chat.client.file_lines import (
    file_aborted_line,
    file_asked_line,
    file_damaged_line,
    file_declined_line,
    file_not_opened_line,
    file_open_failed_line,
    file_open_offer_line,
    file_received_line,
    file_refused_line,
    no_offer_waiting_line,
    nothing_to_open_line,
)
from chat.client.file_policy import risky_to_open
from chat.client.transfer_base import MAX_OPENABLE, Incoming, TransferBase, in_thread
from chat.protocol.envelope import Envelope
from chat.protocol.flow import FlowError

#: Offers declined because the client is exiting: why, for the user and for the sender.
LEAVING = "this client is exiting"
LEFT = "declined: they are leaving"


class Receiving(TransferBase):
    """The receiving half of a session's transfers."""

    def _offered(self, event: Envelope) -> None:
        transfer_id, sender, name, size = event["id"], event["sender"], event["name"], event["size"]
        if not self._accepting:
            self._emit(file_refused_line(name, sender, LEAVING))
            self._spawn(self._answer("file_decline", id=transfer_id, detail=LEFT))
        elif size > self.max_file_size:
            limit = self.max_file_size
            self._emit(file_refused_line(name, sender, f"larger than your limit of {limit} bytes"))
            detail = f"declined: larger than their limit of {limit} bytes"
            self._spawn(self._answer("file_decline", id=transfer_id, detail=detail))
        elif (reason := self._gate.refusal(sender, size, len(self._incoming))) is not None:
            self._emit(file_refused_line(name, sender, reason))
            self._spawn(self._answer("file_decline", id=transfer_id, detail=f"declined: {_theirs(reason)}"))
        else:
            incoming = Incoming(transfer_id, sender, name, size, event.get("group"))
            self._incoming[transfer_id] = incoming
            if self.ask_files:
                incoming.number = next(self._numbers)
                incoming.decision = asyncio.get_running_loop().create_future()
                self._asked[incoming.number] = incoming
                self._emit(file_asked_line(name, sender, size, incoming.number, incoming.group))
            self._spawn(self._run_incoming(incoming))

    # --- what the user answers --------------------------------------------------------

    def answer_offer(self, accept: bool, number: int | None) -> list[str]:
        """``/accept`` or ``/decline`` an offer (the oldest waiting one without a number);
        lines to show if there is nothing to answer."""
        if not self._asked:
            return [no_offer_waiting_line(number, [])]
        key = min(self._asked) if number is None else number
        incoming = self._asked.pop(key, None)
        if incoming is None or incoming.decision is None:
            return [no_offer_waiting_line(number, list(self._asked))]
        incoming.decision.set_result(accept)
        return []

    async def open_received(self, number: int | None) -> list[str]:
        """``/open``: open a file received with ``--open`` (the latest without a number)."""
        if not self._openable:
            return [nothing_to_open_line(None)]
        key = max(self._openable) if number is None else number
        path = self._openable.pop(key, None)
        if path is None:
            return [nothing_to_open_line(number)]
        if await in_thread(risky_to_open, path):  # again: it may have changed since
            return [file_not_opened_line(path.name)]
        problem = await open_with_default_program(path)
        return [] if problem is None else [file_open_failed_line(path.name, problem)]

    async def _run_incoming(self, incoming: Incoming) -> None:
        box: list[PartFile] = []  # the temporary file, once the first data arrives
        stored = False
        try:
            if incoming.decision is not None and not await self._decided(incoming):
                return
            try:
                await in_thread(PartFile.prepare, self.download_dir)
            except OSError as exc:
                reason = f"cannot write to the download directory ({exc.strerror or exc})"
                self._emit(file_refused_line(incoming.name, incoming.sender, reason))
                await self._answer("file_decline", id=incoming.id, detail="declined: they cannot store files")
                return
            await self._answer("file_accept", id=incoming.id)
            incoming.meter.update(asyncio.get_running_loop().time(), 0)
            stored = await self._receive(incoming, box)
        finally:
            for part in box:
                part.discard()  # does nothing once committed
            if not stored:
                self._gate.give_back(incoming.size)
            self._incoming.pop(incoming.id, None)
            self._asked.pop(incoming.number, None)

    async def _decided(self, incoming: Incoming) -> bool:
        """Wait for the user's /accept (True) or /decline, or the offer's end."""
        assert incoming.decision is not None
        ended = asyncio.ensure_future(incoming.events.get())
        either: set[asyncio.Future[Any]] = {incoming.decision, ended}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if not incoming.decision.done():
            event = ended.result()
            detail = event["detail"] if event.type == "file_aborted" else "the offer ended"
            self._emit(file_aborted_line(incoming.name, incoming.sender, detail))
            return False
        if not incoming.decision.result():
            if incoming.refusal is not None:
                self._emit(file_refused_line(incoming.name, incoming.sender, incoming.refusal))
                await self._answer("file_decline", id=incoming.id, detail=LEFT)
            else:
                self._emit(file_declined_line(incoming.name, incoming.sender))
                await self._answer("file_decline", id=incoming.id, detail="declined: they said no")
            return False
        return True

    async def _receive(self, incoming: Incoming, box: list[PartFile]) -> bool:
        """Store the file's chunks; True once it is saved. ``box`` holds the temporary
        file, created when the first chunk (or an empty file's end) arrives."""
        hasher = hashlib.sha256()

        def store(data: bytes) -> None:
            if not box:
                box.append(PartFile.create(self.download_dir))
            box[0].write(data)
            hasher.update(data)

        while True:
            event = await incoming.events.get()
            if event.type == "file_aborted":
                self._emit(file_aborted_line(incoming.name, incoming.sender, event["detail"]))
                return False
            if event.type == "file_chunk":
                data = event.body
                try:
                    incoming.flow.chunk(event["offset"], len(data))
                except FlowError as exc:
                    await self._failed(incoming, str(exc))
                    return False
                try:
                    await in_thread(store, data)
                except OSError as exc:
                    await self._failed(incoming, f"could not write it ({exc.strerror or exc})")
                    return False
                await self._session.send_unanswered("file_ack", id=incoming.id, received=incoming.received)
            elif event.type == "file_end":
                try:
                    if not box:
                        box.append(await in_thread(PartFile.create, self.download_dir))
                except OSError as exc:
                    await self._failed(incoming, f"could not write it ({exc.strerror or exc})")
                    return False
                return await self._finish(incoming, box[0], hasher.hexdigest(), event["sha256"])

    async def _finish(self, incoming: Incoming, part: PartFile, digest: str, expected: str) -> bool:
        if incoming.received != incoming.size:
            problem = f"{incoming.received} of {incoming.size} bytes arrived"
            await self._failed(incoming, problem)
            return False
        if digest != expected:
            await self._failed(incoming, "the data did not match its SHA-256 checksum")
            return False
        try:
            saved = await in_thread(part.commit, incoming.name)
        except OSError as exc:
            await self._failed(incoming, f"could not save it ({exc.strerror or exc})")
            return False
        await self._answer("file_done", id=incoming.id)
        self._emit(file_received_line(saved.name, incoming.sender, incoming.group))
        if self.open_files:
            await self._offer_to_open(saved)
        return True

    async def _failed(self, incoming: Incoming, problem: str) -> None:
        """The file cannot be stored: tell the sender and the user (the caller deletes
        what arrived)."""
        self._emit(file_damaged_line(incoming.name, incoming.sender, problem))
        await self._answer("file_failed", id=incoming.id, detail=problem)

    async def _offer_to_open(self, path: Path) -> None:
        """``--open``: never a program, script or launcher; anything else on ``/open``."""
        if await in_thread(risky_to_open, path):
            self._emit(file_not_opened_line(path.name))
            return
        number = next(self._numbers)
        self._openable[number] = path
        while len(self._openable) > MAX_OPENABLE:
            del self._openable[min(self._openable)]
        self._emit(file_open_offer_line(path.name, number))


def _theirs(reason: str) -> str:
    """A refusal as the sender reads it ("your quota" becomes "their quota")."""
    return reason.replace("your ", "their ")
