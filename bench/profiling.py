"""Sampling profiles of the server with py-spy, summarised by function.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``); the
summary gives each function's self share (the innermost frame) and inclusive share (on
the stack at all) of the samples. Idle samples (waiting in the selector) are not recorded,
and time in C code (OpenSSL, the socket send) counts as self time of the Python caller.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    """Path of the py-spy executable (next to this Python, or on PATH)."""
    import sys

    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class PySpy:
    """``with PySpy(pid, path):`` samples ``pid`` while the block runs, into ``path``."""

    def __init__(self, pid: int, path: Path, rate: int = 250) -> None:
        self.path = path
        self.command = [
            py_spy() or "py-spy", "record", "--pid", str(pid), "--output", str(path), "--format", "raw",
            "--rate", str(rate), "--nonblocking",
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.error: str | None = None

    def __enter__(self) -> PySpy:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            _, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        if self.process.returncode != 0 or not self.path.exists():
            self.error = err.decode(errors="replace").strip()[-500:] or f"exit {self.process.returncode}"


def _short(frame: str) -> str:
    """``func (path/to/pkg/mod.py:123)`` -> ``func (pkg/mod.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = file.replace("\\", "/").split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


#: Buckets of innermost frames (``function (pkg/module.py)`` prefixes), first match wins.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("RSA/X25519 handshake crypto", ("ServerHandshake.", "X25519", "_exchange (", "KeySchedule.")),
    ("socket send (syscall)", ("_SelectorSocketTransport.write (", "UVStream.write", "socket.send")),
    ("socket receive (syscall)", ("_SelectorSocketTransport._read_ready", "socket.recv")),
    ("record seal/open (AES-GCM)", ("RecordSealer.", "RecordOpener.", "SecureChannel.", "_nonce (")),
    ("envelope encode/decode (JSON)", ("encode (protocol", "decode (protocol", "_validate (", "JSON",
                                       "Str.check", "encode_event", "decode_request", "Int.check",
                                       "_unique_object")),
    ("websockets send path", ("Connection.send", "send_context", "_AsyncGeneratorContextManager",
                              "asynccontextmanager", "Frame.serialize", "Protocol.send_", "Connection.drain",
                              "data_to_send", "is_closing", "_asyncgen_", "broadcast (asyncio/connection")),
    ("websockets receive path", ("Frame.parse", "StreamReader.", "Protocol.receive_data", "Protocol.parse",
                                 "ServerProtocol.parse", "Connection.data_received", "Assembler.",
                                 "Connection.recv", "SimpleQueue.", "Connection.__aiter__")),
    ("queue + writer-task wake-ups", ("Queue.", "Handle._run", "call_soon", "_call_soon", "create_future",
                                      "ClientConnection._write_loop", "Event.", "_run_once", "create_task",
                                      "_LoopBoundMixin", "Future.")),
    ("hub/handlers/connection logic", ("ClientConnection.", "LocalHub.", "Context.", "TransferRelay.",
                                       "broadcast (server", "private (server", "handle (server",
                                       "key (server", "Transfer.", "TokenBucket.")),
    ("event loop select", ("EpollSelector.select", "select (", "poll (")),
]


def categorise(self_shares: dict[str, float]) -> list[tuple[str, float]]:
    """Self time grouped into the buckets of CATEGORIES (and 'other')."""
    totals: dict[str, float] = {}
    for frame, share in self_shares.items():
        bucket = next((name for name, prefixes in CATEGORIES if frame.startswith(prefixes)), "other")
        totals[bucket] = totals.get(bucket, 0.0) + share
    return sorted(((k, round(v, 3)) for k, v in totals.items()), key=lambda kv: -kv[1])


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from a raw py-spy profile."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "categories": categorise({f: c / total for f, c in self_counts.items()}),
        "self": [(f, round(c / total, 4)) for f, c in self_counts.most_common(top)],
        "inclusive": [(f, round(c / total, 4)) for f, c in incl_counts.most_common(top * 2)],
    }
