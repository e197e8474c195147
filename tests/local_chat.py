"""The real server and real line-mode clients as tasks of the test's event loop.

They talk WebSocket over 127.0.0.1 with real handshakes, exactly as the processes of
e2e_harness.py do, and run the same code: the server is ``ChatServer`` configured from
the same command line (``chat.server.__main__``), each client is the line mode of
``chat.client.app`` reading lines from a queue instead of stdin and printing into an
``OutputLog`` instead of stdout. What is left out is only the interpreter start (about
half a second per process on two cores), so most scenarios run here; what needs a
process (exit codes of ``main``, signals, a killed client, stdin itself) stays in
e2e_harness.py.

The server's log goes through the server's own formatter into ``LocalServer.err``; a
logged traceback fails the test, as a traceback on a server process's stderr does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import traceback
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_harness import HOST, TIMEOUT, ChatWorld, LineExpectations, OutputLog

from chat.client.app import build_parser as client_parser
from chat.client.app import run_line_mode, trusted_key
from chat.client.transport import ClientError
from chat.keys import load_private_key
from chat.safe_text import printable
from chat.server.__main__ import build_parser as server_parser
from chat.server.__main__ import config_from_args
from chat.server.app import ChatServer
from chat.server.config import is_postgres_url
from chat.server.logs import FORMAT, SafeFormatter


@functools.cache
def _private_key(path: Path) -> rsa.RSAPrivateKey:
    """Keys are loaded once per test session (RSA key checks take milliseconds)."""
    return load_private_key(path)


class _LogToOutput(logging.Handler):
    def __init__(self, log: OutputLog) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(SafeFormatter(FORMAT))
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.feed((self.format(record) + "\n").encode("utf-8"))


class LocalServer:
    """``ChatServer`` started on 127.0.0.1, port 0, from ``chat-server``'s options;
    a relative ``--db`` is relative to ``cwd`` (the process's working directory)."""

    label = "server"

    def __init__(self, server: ChatServer) -> None:
        self.chat_server = server
        self.host = HOST
        self.port = 0
        self.out = OutputLog(split_prompts=False)
        self.err = OutputLog(split_prompts=False)
        self._handler = _LogToOutput(self.err)
        self._levels: dict[str, int] = {}
        self._stopped = False

    @classmethod
    async def start(cls, private_pem: Path, cwd: Path, *extra: str) -> LocalServer:
        cwd.mkdir(parents=True, exist_ok=True)
        args = server_parser().parse_args([str(private_pem), "--host", HOST, "--port", "0", *extra])
        if args.db_path != ":memory:" and not is_postgres_url(args.db_path):
            args.db_path = str(cwd / args.db_path)
        local = cls(ChatServer(_private_key(private_pem), config_from_args(args)))
        local._attach()
        try:
            local.port = await local.chat_server.start()
        except BaseException:
            local._detach()
            raise
        return local

    def _attach(self) -> None:
        """Log as the server process does: INFO and up, websockets' own only from WARNING."""
        for name, level in (("", logging.INFO), ("websockets", logging.WARNING)):
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(level)
        logging.getLogger().addHandler(self._handler)

    def _detach(self) -> None:
        logging.getLogger().removeHandler(self._handler)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)

    @property
    def returncode(self) -> int | None:
        """None while serving (as for a running process), 0 once stopped."""
        return 0 if self._stopped else None

    def problems(self) -> list[str]:
        if any("Traceback" in line for line in self.err.lines):
            return ["the server logged a Traceback"]
        return []

    async def stop(self) -> list[str]:
        """Stop as on SIGTERM; return the problems seen (a logged traceback)."""
        if not self._stopped:
            self._stopped = True
            try:
                await self.chat_server.stop()
            finally:
                self._detach()
        return self.problems()

    def report(self) -> str:
        return f"--- server (in this process, port {self.port}) log:\n{self.err.render(30)}"


class _QueuedLines:
    """The client's input: lines put by the test; None is the end of input. A prompt is
    printed into the output as line mode prints it on stdout."""

    def __init__(self, out: OutputLog) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.closed = False
        self._out = out
        self._eof = False

    async def read_line(self, prompt: str = "") -> str | None:
        if prompt:
            self._out.feed(prompt.encode("utf-8"))
        if self._eof:
            return None
        line = await self.queue.get()
        self._eof = line is None
        return line

    async def read_secret(self, prompt: str) -> str | None:
        return await self.read_line(prompt)

    def show_status(self, lines: list[str]) -> None:
        """Line mode shows no progress."""

    def show_identity(self, name: str, online: bool) -> None:
        """Line mode has no prompt."""


class _LoggedOutput:
    """Line mode's stdout: each line made printable, then collected."""

    def __init__(self, out: OutputLog) -> None:
        self._out = out

    def show(self, line: str, kind: str = "") -> None:
        self._out.feed((printable(line) + "\n").encode("utf-8"))


class LocalClient(LineExpectations):
    """``chat-client`` in line mode with ``argv``, as a task; ``returncode`` is what
    ``main`` would return once it ended."""

    def __init__(self, label: str, argv: list[str]) -> None:
        self.label = label
        self.out = OutputLog(split_prompts=True)
        self.err = OutputLog(split_prompts=False)
        self._lines = _QueuedLines(self.out)
        self.task = asyncio.create_task(self._main(argv), name=f"client {label}")

    async def _main(self, argv: list[str]) -> int:
        try:
            args = client_parser().parse_args(argv)
            return await run_line_mode(args, trusted_key(args), self._lines, _LoggedOutput(self.out))
        except ClientError as exc:
            self.err.feed((exc.message + "\n").encode("utf-8"))
            return exc.exit_code
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 2
        except Exception:
            self.err.feed(traceback.format_exc().encode("utf-8"))
            return 1
        finally:
            self.out.feed(b"")
            self.err.feed(b"")

    @property
    def returncode(self) -> int | None:
        if not self.task.done() or self.task.cancelled():
            return None
        return self.task.result()

    def send(self, line: str) -> None:
        if self._lines.closed:
            pytest.fail(f"{self.label}: input already closed, cannot send {line!r}")
        self._lines.queue.put_nowait(line)

    async def close(self, timeout: float = TIMEOUT) -> None:
        """End of input; the client must end with code 0 and no traceback."""
        if not self._lines.closed:
            self._lines.closed = True
            self._lines.queue.put_nowait(None)
        await self.wait_clean_exit(timeout)

    async def wait_exit(self, timeout: float) -> int | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return self.returncode

    async def terminate(self, timeout: float = 5) -> None:
        """As SIGTERM does: the client is cancelled and cleans up."""
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self.task, timeout)

    def report(self) -> str:
        return (
            f"--- {self.label} (task, returncode {self.returncode}) output"
            f" ('>' = not consumed by an expectation):\n{self.out.render()}\n"
            f"--- {self.label} errors:\n{self.err.render(30)}"
        )


class LocalChat(ChatWorld[LocalClient]):
    """One test's world: a server and line-mode clients, all in this event loop. The
    same interface as e2e_harness.Chat."""

    def __init__(self, server: LocalServer, public_pem: Path, tmp_path: Path) -> None:
        self.server = server
        self.public_pem = public_pem
        self.tmp_path = tmp_path
        self.clients: list[LocalClient] = []
        self._count = 0

    async def spawn(
        self,
        username: str | None = None,
        label: str | None = None,
        *options: str,
        kind: type[LocalClient] = LocalClient,
    ) -> LocalClient:
        """Start a client with ``options``; with ``username`` it logs in via
        ``--username``. It has a directory of its own (``cwd``) as a process would: its
        downloads go to ``cwd/downloads``, or to ``--download-dir`` taken relative to it."""
        self._count += 1
        label = label or username or f"client{self._count}"
        cwd = self.tmp_path / f"client-{self._count}-{label}"
        cwd.mkdir(parents=True)
        options = tuple(
            str(cwd / option) if index and options[index - 1] == "--download-dir" else option
            for index, option in enumerate(options)
        )
        argv = [HOST, str(self.public_pem), "--port", str(self.server.port)]
        argv += ["--download-dir", str(cwd / "downloads")]
        if username is not None:
            argv += ["--username", username]
        client = kind(label, [*argv, *options])
        client.server = self.server
        client.name = username
        client.cwd = cwd
        self.clients.append(client)
        return client
