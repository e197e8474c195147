"""``chat-server --workers N``: N server processes on one address and port (README
"Running a cluster", "Workers on one machine").

One Python process uses one core. On Linux each worker binds the same port with
``SO_REUSEPORT`` and the kernel spreads new connections over them; the workers are nodes
of one cluster (the same Redis and PostgreSQL), so a user on one reaches a user on
another exactly as across machines. This process serves nobody itself: it starts the
workers, prints their start lines once, starts a worker again when one dies (after a
pause that grows while they keep dying) and passes SIGTERM and SIGINT on to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from chat.server.config import ServerConfig

log = logging.getLogger("chat.server.workers")

#: The hidden option that makes a server process a worker of the process with this pid.
WORKER_OPTION = "--worker-of"
#: The last of the start lines a server prints (``__main__.serve``).
LAST_START_LINE = "Clients on the LAN connect with:"
#: Pause before starting a worker again: doubled after each death, up to the maximum,
#: and back to the first once a worker has run for ``STEADY_S``.
FIRST_RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 30.0
STEADY_S = 60.0
#: glibc prctl(): have the kernel send a signal to this process when its parent dies.
PR_SET_PDEATHSIG = 1


def refusal(config: ServerConfig) -> str | None:
    """Why this configuration cannot run ``config.workers`` workers, or None."""
    if config.workers < 1:
        return "--workers must be at least 1"
    if config.workers == 1:
        return None
    if config.redis_url is None:
        return (
            "--workers needs --redis and --db postgresql://...: the workers are nodes of one "
            'service (README "Running a cluster")'
        )
    if config.port == 0:
        return "--workers needs a fixed --port: with port 0 each worker would listen on a port of its own"
    if not sys.platform.startswith("linux"):
        return (
            "--workers needs Linux's SO_REUSEPORT to share one port; elsewhere start one node per "
            'port and put a proxy in front of them (README "Running a cluster")'
        )
    return None


def worker_argv(argv: list[str], private_pem: str | None) -> list[str]:
    """The command line of one worker: this one, for one process, as worker of this one
    (with the key this process loaded or made, when the command line names none)."""
    key = [private_pem] if private_pem is not None else []
    return [*argv, *key, "--workers", "1", WORKER_OPTION, str(os.getpid())]


def become_worker(parent: int) -> None:
    """In a worker: die with the supervisor, even if it is killed with SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before prctl() took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Worker:
    """One slot: the process running in it now, and how it has been dying."""

    number: int
    process: asyncio.subprocess.Process | None = None
    delay: float = FIRST_RESTART_DELAY_S
    started_at: float = 0.0
    drains: set[asyncio.Task[None]] = field(default_factory=set)


class Supervisor:
    """Starts ``count`` workers with ``argv`` and keeps them running until told to stop."""

    def __init__(self, argv: list[str], count: int, close_timeout: float) -> None:
        self.argv = argv
        self.workers = [Worker(n) for n in range(1, count + 1)]
        #: Time for a worker to shut down after SIGTERM (it closes connections within
        #: twice its close timeout) before it is killed.
        self.stop_timeout = 4 * close_timeout + 10.0
        self.stopping = asyncio.Event()

    async def run(self) -> int:
        """Start every worker; the exit status (that of a worker that could not start)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stopping.set)
        starting = asyncio.create_task(self._start_all())
        told_to_stop = asyncio.create_task(self.stopping.wait())
        either: set[asyncio.Task[Any]] = {starting, told_to_stop}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await self._stop_all()
            return 0
        told_to_stop.cancel()
        starts = starting.result()
        failed = [status for status in starts if isinstance(status, int)]
        started = [lines for lines in starts if not isinstance(lines, int)]
        if failed:
            await self._stop_all()
            return failed[0] or 1
        for line in started[0]:
            print(line, flush=True)
        pids = ", ".join(str(w.process.pid) for w in self.workers if w.process)
        print(f"Workers: {len(self.workers)} server processes share the port (pids {pids})", flush=True)
        keepers = [asyncio.create_task(self._keep(worker)) for worker in self.workers]
        await self.stopping.wait()
        for keeper in keepers:
            keeper.cancel()
        await self._stop_all()
        return 0

    async def _start_all(self) -> list[list[str] | int]:
        return await asyncio.gather(*(self._start(worker) for worker in self.workers))

    async def _start(self, worker: Worker) -> list[str] | int:
        """Start a process in ``worker``'s slot: its start lines, or its exit status if it
        ended before it was listening."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chat.server", *self.argv,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        worker.process = process
        worker.started_at = asyncio.get_running_loop().time()
        assert process.stdout is not None
        lines: list[str] = []
        while True:
            raw = await process.stdout.readline()
            if not raw:
                return await process.wait()
            lines.append(raw.decode(errors="replace").rstrip("\n"))
            if lines[-1].startswith(LAST_START_LINE):
                break
        drain = asyncio.create_task(self._drain(process.stdout))  # nothing more is printed
        worker.drains.add(drain)
        drain.add_done_callback(worker.drains.discard)
        return lines

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        while await stream.read(4096):
            pass

    async def _keep(self, worker: Worker) -> None:
        """Start the worker again whenever it dies, pausing longer while it keeps dying."""
        loop = asyncio.get_running_loop()
        while True:
            assert worker.process is not None
            status = await worker.process.wait()
            if loop.time() - worker.started_at >= STEADY_S:
                worker.delay = FIRST_RESTART_DELAY_S
            log.warning(
                "worker %d (pid %d) exited with status %d; starting another in %.1f s",
                worker.number,
                worker.process.pid,
                status,
                worker.delay,
            )
            await asyncio.sleep(worker.delay)
            worker.delay = min(MAX_RESTART_DELAY_S, worker.delay * 2)
            started = await self._start(worker)
            if not isinstance(started, int):
                log.info("worker %d started again (pid %d)", worker.number, worker.process.pid)

    async def _stop_all(self) -> None:
        """SIGTERM to every worker; SIGKILL to those still running after the timeout."""
        running = [w.process for w in self.workers if w.process and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        try:
            async with asyncio.timeout(self.stop_timeout):
                await asyncio.gather(*(process.wait() for process in running))
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.warning("worker pid %d did not stop in time: killed", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(process.wait() for process in running))


def supervise(argv: list[str], private_pem: str | None, config: ServerConfig) -> int:
    """Run ``config.workers`` workers of this command line until SIGTERM or SIGINT."""
    supervisor = Supervisor(worker_argv(argv, private_pem), config.workers, config.close_timeout)
    return asyncio.run(supervisor.run())
