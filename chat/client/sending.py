"""Sending a file (PROTOCOL.md section 7): check it, offer it, wait for ``file_go``,
then read, hash and send chunks within the window (chat/protocol/flow.py), ``file_end``,
and report the ``file_result``. The file is read a chunk ahead in a thread; it is never
held in memory whole."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

from chat.client import own_lines
from chat.client.commands import SendFile
from chat.client.downloads import open_for_reading
from chat.client.file_lines import file_offer_error_line, file_result_line
from chat.client.transfer_base import Outgoing, TransferBase, offered_name, start_in_thread
from chat.protocol.envelope import Envelope
from chat.protocol.errors import EnvelopeError
from chat.protocol.limits import MAX_CHUNK_BYTES


class Sending(TransferBase):
    """The sending half of a session's transfers."""

    async def send_file(self, request: SendFile) -> list[str]:
        """Check the file and offer it; the transfer then runs in its own task.

        Returns the lines to show when nothing was sent (the file cannot be sent)."""
        path = Path(os.path.expanduser(request.path))
        name = offered_name(path)
        try:
            fd, size = await asyncio.to_thread(open_for_reading, path)
        except FileNotFoundError:
            return [own_lines.cannot_send_file(request.path, "no such file")]
        except PermissionError:
            return [own_lines.cannot_send_file(request.path, "permission denied")]
        except ValueError as exc:
            return [own_lines.cannot_send_file(request.path, str(exc))]
        except OSError as exc:
            return [own_lines.cannot_send_file(request.path, str(exc.strerror or exc))]
        if size > self.max_file_size:
            os.close(fd)
            return [own_lines.file_too_large(name, self.max_file_size)]
        out = Outgoing(name, request.target, request.group, size, fd)
        target: dict[str, Any] = {"group": request.target} if request.group else {"to": request.target}
        try:
            await self._pace()
            offered = await self._session.start_request(
                "file_offer", claim=True, name=name, size=size, **target
            )
        except EnvelopeError as exc:  # cannot happen: parse() and offered_name() check sizes
            os.close(fd)
            return [own_lines.cannot_send_file(name, str(exc))]
        except BaseException:
            os.close(fd)
            raise
        self._pending_offers.append(out)
        self._spawn(self._run_outgoing(out, offered))
        return []

    async def _run_outgoing(self, out: Outgoing, offered: asyncio.Future[Envelope]) -> None:
        try:
            reply = await offered
            if reply.type != "file_offered":
                for line in file_offer_error_line(out.name, reply):
                    self._emit(line)
                return
            out.id = reply["id"]
            self._outgoing[out.id] = out
            for event in self._early.pop(out.id, []):
                out.feed(event)
            self._pending_offers.remove(out)
            while out.flow is None and out.result is None:
                await out.changed()
            out.meter.update(asyncio.get_running_loop().time(), 0)
            if out.result is None and not await self._send_data(out):
                return
            while out.result is None:
                await out.changed()
            delivered, failed = out.result["delivered"], out.result["failed"]
            self._emit(file_result_line(out.name, out.target, out.group, delivered, failed))
        finally:
            os.close(out.fd)
            if out in self._pending_offers:
                self._pending_offers.remove(out)
            if out.id is not None:
                self._outgoing.pop(out.id, None)

    async def _send_data(self, out: Outgoing) -> bool:
        """Stream the file within the window, then ``file_end``. False if the transfer
        ended here (cancelled, and the reason shown)."""
        assert out.id is not None and out.flow is not None
        flow = out.flow
        if flow.window <= 0 and out.size > 0:
            await self._cancel_sending(out, "the server allows no data in flight")
            return False
        chunk = max(1, min(MAX_CHUNK_BYTES, flow.window))
        hasher = hashlib.sha256()

        def read(count: int) -> bytes:
            """Read and hash the next ``count`` bytes (in a thread; in order)."""
            parts = []
            while count:
                part = os.read(out.fd, count)
                if not part:
                    break
                parts.append(part)
                count -= len(part)
            data = b"".join(parts)
            hasher.update(data)
            return data

        sent = 0
        reading: asyncio.Future[bytes] | None = None
        try:
            if out.size:
                reading = start_in_thread(read, min(chunk, out.size))
            while sent < out.size:
                assert reading is not None
                expected = min(chunk, out.size - sent)
                try:
                    data = await asyncio.shield(reading)
                except OSError as exc:
                    await self._cancel_sending(out, f"could not read it ({exc.strerror or exc})")
                    return False
                finally:
                    if reading.done():
                        reading = None
                if len(data) != expected:
                    await self._cancel_sending(out, "the file changed while it was being sent")
                    return False
                if sent + expected < out.size:  # read ahead while this chunk goes out
                    reading = start_in_thread(read, min(chunk, out.size - sent - expected))
                while not flow.fits(sent, expected) and out.result is None:
                    await out.changed()
                if out.result is not None:
                    return True  # every recipient has failed or gone: nothing more to send
                await self._session.send_unanswered("file_chunk", body=data, id=out.id, offset=sent)
                flow.chunk(sent, expected)
                sent += expected
        finally:
            if reading is not None:
                # The reading thread must be done with the descriptor before it is closed.
                with contextlib.suppress(BaseException):
                    await reading
        await self._pace()
        reply = await self._session.request("file_end", claim=True, id=out.id, sha256=hasher.hexdigest())
        if reply.type == "error" and out.result is None:
            detail = reply.get("detail") or reply.get("code")
            self._emit(own_lines.cannot_send_file(out.name, str(detail)))
            return False
        return True

    async def _cancel_sending(self, out: Outgoing, reason: str) -> None:
        self._emit(own_lines.cannot_send_file(out.name, reason))
        await self._pace()
        detail = f"the sender cancelled it: {reason}"[:500]
        await self._session.request("file_cancel", claim=True, id=out.id, detail=detail)

