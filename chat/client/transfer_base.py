"""What the file-transfer tasks of one client session share: their state, the events of
each transfer, and the plumbing (paced answers, tasks, threads). Sending is in
sending.py, receiving in receiving.py, and transfers.py puts them together."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from chat.client import own_lines
from chat.client.config import ClientConfig
from chat.client.file_policy import DownloadGate
from chat.client.transport import ClientError, ClientSession
from chat.protocol.envelope import Envelope
from chat.protocol.flow import FlowError, ReceiveWindow, SendWindow
from chat.protocol.limits import MAX_FILE_NAME_CHARS

T = TypeVar("T")
#: Ids of transfers not (yet) known whose early events are kept; more are dropped.
MAX_EARLY = 256
#: Received files remembered for ``/open``; older ones are forgotten.
MAX_OPENABLE = 100


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
    #: Flow control, from ``file_go {window}`` on.
    flow: SendWindow | None = None
    result: Envelope | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    meter: RateMeter = field(default_factory=RateMeter)

    def feed(self, event: Envelope) -> None:
        if event.type == "file_go":
            self.flow = SendWindow(self.size, event["window"])
        elif event.type == "file_ack" and self.flow is not None:
            with contextlib.suppress(FlowError):  # an ack beyond what was sent means nothing
                self.flow.acknowledge(event["received"])
        elif event.type == "file_result":
            self.result = event
        self.wake.set()

    @property
    def acked(self) -> int:
        return self.flow.acked if self.flow is not None else 0

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
    flow: ReceiveWindow = field(init=False)
    meter: RateMeter = field(default_factory=RateMeter)
    #: With ``--ask-files``: the number the user answers with, and the answer to come.
    number: int = 0
    decision: asyncio.Future[bool] | None = None
    #: Set when the client declines it for the user (leaving): why, as the user reads it.
    refusal: str | None = None

    def __post_init__(self) -> None:
        self.flow = ReceiveWindow(self.size)

    @property
    def received(self) -> int:
        return self.flow.received


class TransferBase:
    """The state every transfer task of one session uses."""

    def __init__(
        self,
        session: ClientSession,
        *,
        emit: Callable[[str], None],
        pace: Callable[[], Awaitable[None]],
        config: ClientConfig,
        download_gate: DownloadGate | None = None,
        numbers: Iterator[int] | None = None,
        openable: dict[int, Path] | None = None,
    ) -> None:
        """``download_gate`` bounds what others make this client download; it outlives a
        reconnect (one quota per client process). So do ``numbers`` (the numbers offers
        and received files are answered and opened by: a number typed for an offer the
        lost connection ended never names a new one) and ``openable`` (received files
        waiting for /open)."""
        self._session = session
        self._emit = emit
        self._pace = pace
        self.download_dir = config.download_dir
        self.max_file_size = config.max_file_size
        self.open_files = config.open_files
        self._outgoing: dict[str, Outgoing] = {}
        self._pending_offers: list[Outgoing] = []
        self._incoming: dict[str, Incoming] = {}
        self._early: dict[str, list[Envelope]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True
        self._gate = download_gate or DownloadGate(config.download_limits)
        self.ask_files = config.ask_files
        self._numbers = numbers if numbers is not None else itertools.count(1)
        #: Offers waiting for /accept or /decline, and saved files waiting for /open.
        self._asked: dict[int, Incoming] = {}
        self._openable = openable if openable is not None else {}

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
            self._emit(own_lines.transfer_failed(error))


def start_in_thread(func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    return asyncio.ensure_future(asyncio.to_thread(func, *args))


async def in_thread(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a thread. If the caller is cancelled meanwhile, the thread is
    still waited for: it may be using a descriptor that the caller closes next."""
    future = start_in_thread(func, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise


def offered_name(path: Path) -> str:
    """The name a file is offered under: its base name, as valid text, within limits."""
    name = path.name or "file"
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(name) > MAX_FILE_NAME_CHARS:
        _, dot, extension = name.rpartition(".")
        keep = dot + extension if dot and len(extension) < 32 else ""
        name = name[: MAX_FILE_NAME_CHARS - len(keep)] + keep
    return name
