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
import contextlib
import hashlib
import itertools
import os
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from chat.client.commands import SendFile
from chat.client.downloads import PartFile, open_for_reading, open_with_default_program
from chat.client.file_policy import DownloadGate, DownloadLimits, risky_to_open
from chat.client.render import (
    file_aborted_line,
    file_asked_line,
    file_damaged_line,
    file_declined_line,
    file_not_opened_line,
    file_offer_error_line,
    file_open_offer_line,
    file_received_line,
    file_refused_line,
    file_result_line,
    progress_line,
)
from chat.client.transport import ClientError, ClientSession
from chat.protocol.envelope import Envelope
from chat.protocol.errors import EnvelopeError
from chat.protocol.limits import MAX_CHUNK_BYTES, MAX_FILE_NAME_CHARS
from chat.safe_text import printable

T = TypeVar("T")
DEFAULT_MAX_FILE_SIZE = 1 << 30
#: Ids of transfers not (yet) known whose early events are kept; more are dropped.
_MAX_EARLY = 256
#: Received files remembered for ``/open``; older ones are forgotten.
_MAX_OPENABLE = 100


class RateMeter:
    """Bytes per second over the last few seconds, from (time, total bytes) samples."""

    def __init__(self, span: float = 3.0) -> None:
        self._span = span
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now: float, total: int) -> float:
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._span:
            self._samples.popleft()
        then, before = self._samples[0]
        return (total - before) / (now - then) if now > then else 0.0


@dataclass
class Outgoing:
    """A file this client sends; ``feed`` takes the server's events about it."""

    name: str
    target: str
    group: bool
    size: int
    fd: int
    id: str | None = None
    window: int | None = None
    acked: int = 0
    sent: int = 0
    result: Envelope | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    meter: RateMeter = field(default_factory=RateMeter)

    def feed(self, event: Envelope) -> None:
        if event.type == "file_go":
            self.window = event["window"]
        elif event.type == "file_ack":
            self.acked = max(self.acked, event["received"])
        elif event.type == "file_result":
            self.result = event
        self.wake.set()

    async def changed(self) -> None:
        """Wait for the next event fed (callers re-check their condition after)."""
        await self.wake.wait()
        self.wake.clear()


@dataclass
class Incoming:
    """A file offered to this client; its events queue up for its task."""

    id: str
    sender: str
    name: str
    size: int
    group: str | None
    events: asyncio.Queue[Envelope] = field(default_factory=asyncio.Queue)
    received: int = 0
    meter: RateMeter = field(default_factory=RateMeter)
    #: With ``--ask-files``: the number the user answers with, and the answer to come.
    number: int = 0
    decision: asyncio.Future[bool] | None = None


class TransferManager:
    """Every file transfer of one client session."""

    def __init__(
        self,
        session: ClientSession,
        *,
        emit: Callable[[str], None],
        pace: Callable[[], Awaitable[None]],
        download_dir: Path,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        open_files: bool = False,
        download_gate: DownloadGate | None = None,
        ask_files: bool = False,
    ) -> None:
        """``download_gate`` bounds what others make this client download; it outlives a
        reconnect (one quota per client process)."""
        self._session = session
        self._emit = emit
        self._pace = pace
        self.download_dir = download_dir
        self.max_file_size = max_file_size
        self.open_files = open_files
        self._outgoing: dict[str, Outgoing] = {}
        self._pending_offers: list[Outgoing] = []
        self._incoming: dict[str, Incoming] = {}
        self._early: dict[str, list[Envelope]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True
        self._gate = download_gate or DownloadGate(DownloadLimits())
        self.ask_files = ask_files
        self._numbers = itertools.count(1)
        #: Offers waiting for /accept or /decline, and saved files waiting for /open.
        self._asked: dict[int, Incoming] = {}
        self._openable: dict[int, Path] = {}

    # --- what the client asks --------------------------------------------------------

    @property
    def active(self) -> int:
        """Transfers (and their answers) still running."""
        return len(self._tasks)

    async def send_file(self, request: SendFile) -> list[str]:
        """Check the file and offer it; the transfer then runs in its own task.

        Returns the lines to show when nothing was sent (the file cannot be sent)."""
        path = Path(os.path.expanduser(request.path))
        name = offered_name(path)
        try:
            fd, size = await asyncio.to_thread(open_for_reading, path)
        except FileNotFoundError:
            return [f"Cannot send {request.path}: no such file."]
        except PermissionError:
            return [f"Cannot send {request.path}: permission denied."]
        except ValueError as exc:
            return [f"Cannot send {request.path}: {exc}."]
        except OSError as exc:
            return [f"Cannot send {request.path}: {exc.strerror or exc}."]
        if size > self.max_file_size:
            os.close(fd)
            limit = self.max_file_size
            return [f"File {printable(name)} is too large: this client sends at most {limit} bytes."]
        out = Outgoing(name, request.target, request.group, size, fd)
        target: dict[str, Any] = {"group": request.target} if request.group else {"to": request.target}
        try:
            await self._pace()
            offered = await self._session.start_request(
                "file_offer", claim=True, name=name, size=size, **target
            )
        except EnvelopeError as exc:  # cannot happen: parse() and offered_name() check sizes
            os.close(fd)
            return [f"Cannot send {name}: {exc}."]
        except BaseException:
            os.close(fd)
            raise
        self._pending_offers.append(out)
        self._spawn(self._run_outgoing(out, offered))
        return []

    def stop_accepting(self) -> None:
        """From now on, offers are declined (the client is leaving)."""
        self._accepting = False

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
                self._emit(f"File {printable(out.name)} was not sent: {reason}.")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def status_lines(self) -> list[str]:
        """One progress line per running transfer (for the terminal's status bar)."""
        now = asyncio.get_running_loop().time()
        lines = []
        for out in [*self._pending_offers, *self._outgoing.values()]:
            label = f"Sending {printable(out.name)} to {'group ' if out.group else ''}{out.target}"
            if out.window is None:
                lines.append(f"{label}: waiting for an answer")
            else:
                rate = out.meter.update(now, out.acked)
                lines.append(progress_line(label, out.acked, out.size, rate))
        for incoming in self._incoming.values():
            rate = incoming.meter.update(now, incoming.received)
            label = f"Receiving {printable(incoming.name)} from {incoming.sender}"
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
                while len(self._early) > _MAX_EARLY:
                    del self._early[next(iter(self._early))]
        else:
            return False
        return True

    def _offered(self, event: Envelope) -> None:
        transfer_id, sender, name, size = event["id"], event["sender"], event["name"], event["size"]
        if not self._accepting:
            self._emit(file_refused_line(name, sender, "this client is exiting"))
            self._spawn(self._answer("file_decline", id=transfer_id, detail="declined: they are leaving"))
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
            return ["No file offer is waiting for an answer."]
        key = min(self._asked) if number is None else number
        incoming = self._asked.pop(key, None)
        if incoming is None or incoming.decision is None:
            return [f"No file offer numbered {number} is waiting; the waiting ones: "
                    + ", ".join(str(n) for n in sorted(self._asked)) + "."]  # fmt: skip
        incoming.decision.set_result(accept)
        return []

    async def open_received(self, number: int | None) -> list[str]:
        """``/open``: open a file received with ``--open`` (the latest without a number)."""
        if not self._openable:
            return ["No received file is waiting to be opened (see --open)."]
        key = max(self._openable) if number is None else number
        path = self._openable.pop(key, None)
        if path is None:
            return [f"No received file numbered {number} is waiting to be opened."]
        if await _in_thread(risky_to_open, path):
            return [file_not_opened_line(path.name)]
        problem = await open_with_default_program(path)
        return [] if problem is None else [f"Could not open '{printable(path.name)}': {problem}."]

    # --- sending ----------------------------------------------------------------------

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
            while out.window is None and out.result is None:
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
        assert out.id is not None and out.window is not None
        if out.window <= 0 and out.size > 0:
            await self._cancel_sending(out, "the server allows no data in flight")
            return False
        chunk = max(1, min(MAX_CHUNK_BYTES, out.window))
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
                reading = _start_in_thread(read, min(chunk, out.size))
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
                    reading = _start_in_thread(read, min(chunk, out.size - sent - expected))
                while sent + expected - out.acked > out.window and out.result is None:
                    await out.changed()
                if out.result is not None:
                    return True  # every recipient has failed or gone: nothing more to send
                await self._session.send_unanswered("file_chunk", body=data, id=out.id, offset=sent)
                sent += expected
                out.sent = sent
        finally:
            if reading is not None:
                # The reading thread must be done with the descriptor before it is closed.
                with contextlib.suppress(BaseException):
                    await reading
        await self._pace()
        reply = await self._session.request("file_end", claim=True, id=out.id, sha256=hasher.hexdigest())
        if reply.type == "error" and out.result is None:
            detail = reply.get("detail") or reply.get("code")
            self._emit(f"Cannot send {printable(out.name)}: {printable(str(detail)).rstrip('.')}.")
            return False
        return True

    async def _cancel_sending(self, out: Outgoing, reason: str) -> None:
        self._emit(f"Cannot send {printable(out.name)}: {reason}.")
        await self._pace()
        detail = f"the sender cancelled it: {reason}"[:500]
        await self._session.request("file_cancel", claim=True, id=out.id, detail=detail)

    # --- receiving --------------------------------------------------------------------

    async def _run_incoming(self, incoming: Incoming) -> None:
        box: list[PartFile] = []  # the temporary file, once the first data arrives
        stored = False
        try:
            if incoming.decision is not None and not await self._decided(incoming):
                return
            try:
                await _in_thread(PartFile.prepare, self.download_dir)
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
                if event["offset"] != incoming.received or incoming.received + len(data) > incoming.size:
                    await self._failed(incoming, "the data arrived out of order")
                    return False
                try:
                    await _in_thread(store, data)
                except OSError as exc:
                    await self._failed(incoming, f"could not write it ({exc.strerror or exc})")
                    return False
                incoming.received += len(data)
                await self._session.send_unanswered("file_ack", id=incoming.id, received=incoming.received)
            elif event.type == "file_end":
                try:
                    if not box:
                        box.append(await _in_thread(PartFile.create, self.download_dir))
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
            saved = await _in_thread(part.commit, incoming.name)
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
        if await _in_thread(risky_to_open, path):
            self._emit(file_not_opened_line(path.name))
            return
        number = next(self._numbers)
        self._openable[number] = path
        while len(self._openable) > _MAX_OPENABLE:
            del self._openable[min(self._openable)]
        self._emit(file_open_offer_line(path.name, number))

    # --- plumbing ---------------------------------------------------------------------

    async def _answer(self, kind: str, **fields: Any) -> None:
        """A paced request whose reply (``ok``, or an error) the receive loop shows."""
        await self._pace()
        await self._session.send(kind, **fields)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, ClientError):
            # A bug, not a transfer problem: say so rather than fail silently.
            self._emit(f"File transfer failed: internal error: {type(error).__name__}: {error}")


def _start_in_thread(func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    return asyncio.ensure_future(asyncio.to_thread(func, *args))


async def _in_thread(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a thread. If the caller is cancelled meanwhile, the thread is
    still waited for: it may be using a descriptor that the caller closes next."""
    future = _start_in_thread(func, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise


def _theirs(reason: str) -> str:
    """A refusal as the sender reads it ("your quota" becomes "their quota")."""
    return reason.replace("your ", "their ")


def offered_name(path: Path) -> str:
    """The name a file is offered under: its base name, as valid text, within limits."""
    name = path.name or "file"
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(name) > MAX_FILE_NAME_CHARS:
        _, dot, extension = name.rpartition(".")
        keep = dot + extension if dot and len(extension) < 32 else ""
        name = name[: MAX_FILE_NAME_CHARS - len(keep)] + keep
    return name
