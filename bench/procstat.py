"""CPU time and memory of processes, and of the whole machine.

psutil when installed (the ``bench`` extra); otherwise Linux ``/proc``, so that the smoke
test also runs with only the ``test`` extra installed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import psutil
except ImportError:  # pragma: no cover - exercised where psutil is absent
    psutil = None  # type: ignore[assignment]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def available() -> bool:
    """Whether process measurements work here (psutil, or Linux /proc)."""
    return psutil is not None or Path("/proc/self/stat").exists()


class Proc:
    """One process, by pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._ps = psutil.Process(pid) if psutil is not None else None

    def cpu(self) -> float:
        """User + system CPU seconds used so far (0 once the process is gone)."""
        if self._ps is not None:
            try:
                times = self._ps.cpu_times()
            except psutil.Error:
                return 0.0
            return times.user + times.system
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / _TICK

    def rss(self) -> int:
        """Resident set size in bytes."""
        if self._ps is not None:
            return int(self._ps.memory_info().rss)
        return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * _PAGE


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent busy so far (any process)."""
    if psutil is not None:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)
    with contextlib.suppress(OSError, ValueError):
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return (sum(values[:8]) - idle) / _TICK
    return 0.0


def physical_cores() -> int | None:
    return psutil.cpu_count(logical=False) if psutil is not None else None


def memory_total() -> int | None:
    if psutil is not None:
        return int(psutil.virtual_memory().total)
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None
