"""Shared plumbing: the measured server process, load-generator workers, statistics and
the description of the machine."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.procstat import Proc, machine_busy_seconds, memory_total, physical_cores

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on ws://[^\s]*:(\d+)")


# --- statistics -----------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def latency_summary(samples_ms: list[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/max of latency samples in milliseconds."""
    values = sorted(samples_ms)
    return {
        "samples": len(values),
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": values[-1] if values else None,
    }


# --- the machine ----------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def snapshot(rev: str, directory: Path) -> tuple[Path, str]:
    """A copy of ``chat/`` as of git revision ``rev`` (and of the current ``bench/``) to run
    servers from, so that a run measures a known version while chat/ is being edited.
    Returns the directory and the short commit id."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True,
                            timeout=10, check=True).stdout.strip()
    tree = directory / commit
    if not (tree / "chat").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "chat"], cwd=REPO, capture_output=True,
                                 timeout=60, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True, timeout=60)
    shutil.rmtree(tree / "bench", ignore_errors=True)
    shutil.copytree(REPO / "bench", tree / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    return tree, commit


def _code_version() -> str | None:
    """The commit measured, marked dirty when chat/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "chat"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{' + uncommitted changes in chat/' if dirty else ''}" if head else None


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and the versions of the packages that matter."""
    packages = {}
    for name in ("websockets", "cryptography", "uvloop", "psutil", "py-spy", "pyinstrument"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    with contextlib.suppress(Exception):
        from cryptography.hazmat.backends.openssl.backend import backend

        packages["openssl"] = backend.openssl_version_text()
    return {
        "code": _code_version(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "memory_gib": round((memory_total() or 0) / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": packages,
    }


# --- the server under test --------------------------------------------------------------


@dataclass
class ServerProcess:
    """A chat server or baseline relay started through ``bench.serve`` in its own process."""

    kind: str  # "chat", "baseline" or "node"
    args: list[str] = field(default_factory=list)
    uvloop: bool = False
    log_path: Path | None = None
    wrapper_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: Directory holding the ``chat`` package to run (default: this checkout).
    tree: Path = REPO
    #: A program to run instead of ``python -m bench.serve KIND`` (the Node relay).
    program: list[str] | None = None
    port: int = 0
    popen: subprocess.Popen[str] | None = None
    proc: Proc | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        if self.program is not None:
            command = [*self.program, *self.args]
        else:
            command = [sys.executable, "-m", "bench.serve", *self.wrapper_args]
            if self.uvloop:
                command.append("--uvloop")
            command += [self.kind, *self.args]
        log = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        path = os.pathsep.join(filter(None, [str(self.tree), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path, **self.env)
        self.popen = subprocess.Popen(
            command, cwd=self.tree, env=env, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1
        )
        if log is not subprocess.DEVNULL:
            log.close()
        deadline = time.monotonic() + timeout
        assert self.popen.stdout is not None
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline()
            if not line:
                code = self.popen.wait()
                raise RuntimeError(f"{self.kind} server exited early (code {code}); see {self.log_path}")
            found = _LISTENING.search(line)
            if found:
                self.port = int(found.group(1))
                break
        else:
            self.stop()
            raise RuntimeError(f"{self.kind} server did not start within {timeout} s")
        self.proc = Proc(self.popen.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def cpu(self) -> float:
        assert self.proc is not None
        return self.proc.cpu()

    def rss(self) -> int:
        assert self.proc is not None
        return self.proc.rss()

    def reset_peak_rss(self) -> bool:
        """Reset the kernel's peak-RSS mark (Linux); False where unsupported."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def peak_rss(self) -> int | None:
        """Peak RSS since start or the last reset (Linux VmHWM), else None."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    def minor_faults(self) -> int | None:
        """Minor page faults so far (Linux /proc/PID/stat), else None."""
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            return int(stat.rsplit(")", 1)[1].split()[7])
        return None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM if hasattr(signal, "SIGTERM") else signal.SIGINT)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()

    def wait_idle(self, threshold: float = 0.05, interval: float = 0.25, timeout: float = 300.0) -> float:
        """Wait until the server uses less than ``threshold`` of a core over ``interval``;
        returns the seconds waited."""
        return wait_idle(self.cpu, threshold, interval, timeout)


def wait_idle(cpu: Callable[[], float], threshold: float, interval: float, timeout: float) -> float:
    """Wait until ``cpu()`` (CPU seconds so far) grows by less than ``threshold`` of a core
    over ``interval``; returns the seconds waited."""
    start = time.monotonic()
    last = cpu()
    while time.monotonic() - start < timeout:
        time.sleep(interval)
        now = cpu()
        if (now - last) / interval < threshold:
            break
        last = now
    return time.monotonic() - start


# --- load-generator workers ---------------------------------------------------------------


class WorkerError(RuntimeError):
    """A load generator failed; the message carries its traceback."""


def _worker_entry(conn: Connection, role: str, params: dict[str, Any]) -> None:
    """Runs in the child process."""
    from bench import loadgen

    try:
        loadgen.run_role(conn, role, params)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", {"traceback": traceback.format_exc()}))
        raise
    finally:
        conn.close()


#: glibc: keep 16 MiB of slack at the heap top, so that churning 256 KiB buffers does not
#: fault fresh pages in for every file chunk (a load generator must be cheap).
GENERATOR_ENV = {"MALLOC_TOP_PAD_": str(16 * 2**20)}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Worker:
    """One load-generator process, driven by commands over a pipe."""

    _context = multiprocessing.get_context("spawn")

    def __init__(self, role: str, params: dict[str, Any]) -> None:
        self.role = role
        self.conn, child = self._context.Pipe()
        self.process = self._context.Process(target=_worker_entry, args=(child, role, params), daemon=True)
        with _environment(GENERATOR_ENV):
            self.process.start()
        child.close()
        self.proc = Proc(self.process.pid)

    def send(self, command: str, **args: Any) -> None:
        self.conn.send((command, args))

    def recv(self, timeout: float = 600.0) -> dict[str, Any]:
        """The worker's next reply; raises WorkerError on its failure or silence."""
        if not self.conn.poll(timeout):
            raise WorkerError(f"{self.role} worker gave no answer within {timeout} s")
        try:
            kind, data = self.conn.recv()
        except EOFError:
            raise WorkerError(f"{self.role} worker died (exit code {self.process.exitcode})") from None
        if kind == "error":
            raise WorkerError(f"{self.role} worker failed:\n{data['traceback']}")
        return data

    def cpu(self) -> float:
        return self.proc.cpu()

    def stop(self, timeout: float = 20.0) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.send("stop")
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def recv_all(workers: list[Worker], timeout: float = 600.0) -> list[dict[str, Any]]:
    """One reply from each worker, in order."""
    return [w.recv(timeout) for w in workers]


def stop_all(workers: list[Worker]) -> None:
    for worker in workers:
        worker.stop()


@dataclass
class CpuWindow:
    """CPU used by the server and by the load generators between start() and stop()."""

    server: ServerProcess
    workers: list[Worker]
    wall: float = 0.0
    server_cpu: float = 0.0
    worker_cpu: list[float] = field(default_factory=list)

    machine_busy: float = 0.0

    def start(self) -> CpuWindow:
        self._t = time.perf_counter()
        self._s = self.server.cpu()
        self._w = [w.cpu() for w in self.workers]
        self._m = machine_busy_seconds()
        return self

    def stop(self) -> CpuWindow:
        self.wall = time.perf_counter() - self._t
        self.server_cpu = self.server.cpu() - self._s
        self.worker_cpu = [w.cpu() - c for w, c in zip(self.workers, self._w, strict=True)]
        self.machine_busy = machine_busy_seconds() - self._m
        return self

    def summary(self) -> dict[str, Any]:
        """Utilisations as fractions of one core, and which side was the limit."""
        wall = self.wall or 1e-9
        server_util = self.server_cpu / wall
        worker_util = [c / wall for c in self.worker_cpu]
        other_util = max(0.0, self.machine_busy / wall - server_util - sum(worker_util))
        return {
            "wall_s": round(self.wall, 3),
            "server_cpu_s": round(self.server_cpu, 4),
            "server_util": round(server_util, 3),
            "gen_util": [round(u, 3) for u in worker_util],
            "gen_util_total": round(sum(worker_util), 3),
            "other_util": round(other_util, 3),
            "limit": limit_of(server_util, worker_util, other_util),
        }


def limit_of(server_util: float, worker_util: list[float], other_util: float = 0.0) -> str:
    """Name what bounded a run: the server, a load generator, the machine, or nothing.

    ``other_util`` is CPU used by processes outside the benchmark (and the kernel's
    network stack, which is charged to no process) during the window."""
    cores = os.cpu_count() or 1
    if server_util >= 0.9:
        return "server"
    if any(u >= 0.9 for u in worker_util):
        return "load generator"
    if server_util + sum(worker_util) + other_util >= 0.9 * cores:
        return "machine (all cores busy)"
    return "round trip (neither saturated)"


def wait_quiet(ours: list[Proc], max_other: float = 0.25, interval: float = 0.5,
               timeout: float = 30.0) -> float:
    """Wait (at most ``timeout`` s) until processes other than ``ours`` use less than
    ``max_other`` of a core; the machine may be shared. Returns the last reading."""
    if timeout <= 0:
        return 0.0
    deadline = time.monotonic() + timeout
    other = 0.0
    while True:
        busy, mine = machine_busy_seconds(), sum(p.cpu() for p in ours)
        time.sleep(interval)
        other = (machine_busy_seconds() - busy - (sum(p.cpu() for p in ours) - mine)) / interval
        if other < max_other or time.monotonic() > deadline:
            return max(0.0, other)


def sleep_until(deadline: float) -> None:
    """Sleep until time.time() reaches ``deadline``."""
    delay = deadline - time.time()
    if delay > 0:
        time.sleep(delay)
