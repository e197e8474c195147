"""End-to-end harness: the real server and real line-mode clients as child processes.

Everything runs on 127.0.0.1 with real handshakes. Output pipes are read continuously by
background tasks so a chatty process never blocks on a full pipe; every line is kept so a
failing expectation can show exactly what each process printed.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
#: Default time to wait for an expected line (generous; tests are fast when things work).
TIMEOUT = 5.0
#: Prompts are printed without a newline; the next output may follow on the same line.
PROMPTS = ("Enter your username: ", "Repeat password: ", "New password: ", "Password: ")
USERNAME_PROMPT = PROMPTS[0]
STARTED = re.compile(r"WebSocket server started and listening on (wss?)://([^\s:]+):(\d+)\s*$")


def child_env() -> dict[str, str]:
    """Environment for child processes: unbuffered output, this repo importable, no colours."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env["NO_COLOR"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class OutputLog:
    """Lines read from one pipe, with prompts split off as lines of their own.

    ``expect`` consumes the first not yet consumed occurrence of a line, so expecting
    the same line twice needs it printed twice, and lines may be expected in any order.
    """

    def __init__(self, split_prompts: bool) -> None:
        self.lines: list[str] = []
        self.consumed: set[int] = set()
        self.eof = False
        self._split_prompts = split_prompts
        self._buffer = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._changed = asyncio.Event()

    def feed(self, data: bytes) -> None:
        self._buffer += self._decoder.decode(data, final=not data)
        while True:
            if self._split_prompts:
                prompt = next((p for p in PROMPTS if self._buffer.startswith(p)), None)
                if prompt is not None:
                    self._add(prompt)
                    self._buffer = self._buffer[len(prompt) :]
                    continue
            newline = self._buffer.find("\n")
            if newline < 0:
                break
            self._add(self._buffer[:newline].rstrip("\r"))
            self._buffer = self._buffer[newline + 1 :]
        if not data:
            if self._buffer:
                self._add(self._buffer)
                self._buffer = ""
            self.eof = True
            self._changed.set()

    def _add(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()

    def find(self, predicate: Callable[[str], bool]) -> int | None:
        for index, line in enumerate(self.lines):
            if index not in self.consumed and predicate(line):
                return index
        return None

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str | None:
        """Consume and return the first unconsumed line matching, or None on timeout/EOF."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            index = self.find(predicate)
            if index is not None:
                self.consumed.add(index)
                return self.lines[index]
            remaining = deadline - loop.time()
            if remaining <= 0 or self.eof:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def render(self, last: int = 60) -> str:
        start = max(0, len(self.lines) - last)
        shown = [
            f"  {'  ' if i in self.consumed else '> '}{self.lines[i]!r}"
            for i in range(start, len(self.lines))
        ]
        if self._buffer:
            shown.append(f"  (partial) {self._buffer!r}")
        return "\n".join(shown) or "  (nothing)"


async def _pump(stream: asyncio.StreamReader, log: OutputLog) -> None:
    while True:
        data = await stream.read(65536)
        log.feed(data)
        if not data:
            return


class Process:
    """A child process whose stdout and stderr are collected continuously."""

    def __init__(self, label: str, proc: asyncio.subprocess.Process, split_prompts: bool) -> None:
        self.label = label
        self.proc = proc
        self.out = OutputLog(split_prompts)
        self.err = OutputLog(split_prompts=False)
        assert proc.stdout is not None and proc.stderr is not None
        self._pumps = [
            asyncio.create_task(_pump(proc.stdout, self.out)),
            asyncio.create_task(_pump(proc.stderr, self.err)),
        ]

    @classmethod
    async def spawn(cls, label: str, args: Sequence[str], cwd: Path, split_prompts: bool) -> Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=cwd,
            env=child_env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(label, proc, split_prompts)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def report(self) -> str:
        return (
            f"--- {self.label} (pid {self.proc.pid}, returncode {self.proc.returncode}) stdout"
            f" ('>' = not consumed by an expectation):\n{self.out.render()}\n"
            f"--- {self.label} stderr:\n{self.err.render(30)}"
        )

    async def wait_exit(self, timeout: float) -> int | None:
        """Wait for the process to exit and its pipes to drain; None if it did not exit."""
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._pumps), 2)
        return self.proc.returncode

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.wait_exit(5)

    async def terminate(self, timeout: float = 5) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            if await self.wait_exit(timeout) is None:
                await self.kill()
        for pump in self._pumps:
            pump.cancel()


class ServerProcess(Process):
    """``python -m chat.server PRIVATE_PEM --host 127.0.0.1 --port 0``."""

    host: str
    port: int
    #: Whether it serves TLS (wss://).
    tls: bool

    @classmethod
    async def start(cls, private_pem: Path, cwd: Path, *extra: str, port: int = 0) -> ServerProcess:
        cwd.mkdir(parents=True, exist_ok=True)
        args = ["-m", "chat.server", str(private_pem), "--host", HOST, "--port", str(port), *extra]
        server = await cls.spawn("server", args, cwd, split_prompts=False)
        assert isinstance(server, ServerProcess)
        line = await server.out.wait_for(lambda s: STARTED.search(s) is not None, timeout=15)
        if line is None:
            await server.terminate()
            pytest.fail(f"the server did not print its listening line\n{server.report()}")
        match = STARTED.search(line)
        assert match is not None
        server.tls, server.host, server.port = match.group(1) == "wss", match.group(2), int(match.group(3))
        assert server.host == HOST, line
        assert server.port > 0 and port in (0, server.port), line
        return server

    def problems(self) -> list[str]:
        """What is wrong with the server so far: it died, or printed a traceback."""
        found = []
        if self.proc.returncode is not None:
            found.append(f"the server exited unexpectedly with code {self.proc.returncode}")
        if any("Traceback" in line for line in self.err.lines + self.out.lines):
            found.append("the server printed a Traceback")
        return found

    async def stop(self) -> list[str]:
        """Terminate; return the problems seen (a death before stop, a traceback)."""
        problems = [p for p in self.problems() if "exited" in p]
        await self.terminate()
        if any("Traceback" in line for line in self.err.lines + self.out.lines):
            problems.append("the server printed a Traceback")
        return problems


class LineExpectations:
    """What a test checks of a line-mode client's output, whether the client runs as a
    process (``LineClient``) or as a task of the test (local_chat.py). A subclass
    provides ``out``, ``send``, ``drain``, ``report`` and ``wait_exit``."""

    label: str
    out: OutputLog
    err: OutputLog
    server: Any = None
    name: str | None = None
    #: The client's working directory (relative paths it is given are relative to it).
    cwd: Path

    def send(self, line: str) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        """Let what was sent reach the client."""

    def report(self) -> str:
        raise NotImplementedError

    async def wait_exit(self, timeout: float) -> int | None:
        raise NotImplementedError

    def _fail(self, message: str) -> None:
        extra = f"\n{self.server.report()}" if self.server is not None else ""
        pytest.fail(f"{self.label}: {message}\n{self.report()}{extra}", pytrace=True)

    async def expect(self, line: str, timeout: float = TIMEOUT) -> str:
        """Wait until exactly ``line`` is printed (each printed line satisfies one expect)."""
        await self.drain()
        found = await self.out.wait_for(lambda s: s == line, timeout)
        if found is None:
            self._fail(f"expected the line {line!r} within {timeout}s")
        return line

    async def expect_prefix(self, prefix: str, timeout: float = TIMEOUT) -> str:
        """Wait for a line starting with ``prefix``; return the whole line."""
        await self.drain()
        found = await self.out.wait_for(lambda s: s.startswith(prefix), timeout)
        if found is None:
            self._fail(f"expected a line starting with {prefix!r} within {timeout}s")
        assert found is not None
        return found

    async def expect_match(
        self, predicate: Callable[[str], bool], what: str, timeout: float = TIMEOUT
    ) -> str:
        """Wait for a line satisfying ``predicate`` (described by ``what``)."""
        await self.drain()
        found = await self.out.wait_for(predicate, timeout)
        if found is None:
            self._fail(f"expected {what} within {timeout}s")
        assert found is not None
        return found

    async def assert_no_line(self, line: str, within: float = 0.0) -> None:
        """After ``within`` seconds, no unconsumed line may equal ``line``.

        Prefer calling this after a positive sync point (with ``within=0``)."""
        await self.assert_no_match(lambda s: s == line, repr(line), within)

    async def assert_no_match(self, predicate: Callable[[str], bool], what: str, within: float = 0.0) -> None:
        if within:
            await asyncio.sleep(within)
        index = self.out.find(predicate)
        if index is not None:
            self._fail(f"unexpected line {self.out.lines[index]!r} (must not see {what})")

    async def sync(self, online: str) -> None:
        """A round trip through the server: ``/list`` answered with ``online``.

        The server handles one connection's requests in order, so everything this client
        sent before has been handled (and anything it caused for this client delivered)."""
        self.send("/list")
        await self.expect(online)

    async def wait_clean_exit(self, timeout: float = TIMEOUT) -> None:
        """The client must exit by itself with code 0 and without a traceback."""
        code = await self.wait_exit(timeout)
        if code is None:
            self._fail(f"did not exit within {timeout}s")
        if code != 0:
            self._fail(f"exited with code {code}, expected 0")
        if any("Traceback" in line for line in self.err.lines):
            self._fail("printed a Traceback")


class LineClient(Process, LineExpectations):
    """``python -m chat.client 127.0.0.1 PUB --port P [--username NAME]`` in line mode."""

    def send(self, line: str) -> None:
        """Write one line to the client's stdin."""
        assert self.proc.stdin is not None
        if self.proc.stdin.is_closing():
            pytest.fail(f"{self.label}: stdin already closed, cannot send {line!r}")
        self.proc.stdin.write(line.encode("utf-8") + b"\n")

    async def drain(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.drain()

    async def close(self, timeout: float = TIMEOUT) -> None:
        """End of input; the client must exit with code 0 and no traceback."""
        assert self.proc.stdin is not None
        await self.drain()
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        await self.wait_clean_exit(timeout)


C = TypeVar("C", bound="LineExpectations")


class ChatWorld(Generic[C]):
    """What every test world does the same, whether its server and clients are processes
    (``Chat``) or tasks of the test (local_chat.LocalChat): log clients in, stop them."""

    clients: list[C]

    async def spawn(self, username: str | None = None, label: str | None = None, *options: str) -> C:
        raise NotImplementedError

    async def login(self, *names: str) -> list[C]:
        """Start one client per name (all at once) and log them in in this order: each
        gets its ``[Welcome <name>]`` before the next one logs in."""
        clients = await asyncio.gather(*(self.spawn(label=name) for name in names))
        for client, name in zip(clients, names, strict=True):
            await client.expect(USERNAME_PROMPT)
            client.send(name)
            client.name = name
            await client.expect(f"[Welcome {name}]")
        return list(clients)

    async def login_one(self, name: str) -> C:
        (client,) = await self.login(name)
        return client

    async def shutdown(self) -> None:
        await asyncio.gather(*(client.terminate() for client in self.clients))


class Chat(ChatWorld[LineClient]):
    """One test's world: a running server and the line-mode clients started against it."""

    def __init__(self, server: ServerProcess, public_pem: Path, tmp_path: Path) -> None:
        self.server = server
        self.public_pem = public_pem
        self.tmp_path = tmp_path
        self.clients: list[LineClient] = []
        self._count = 0

    async def spawn(
        self,
        username: str | None = None,
        label: str | None = None,
        *options: str,
        kind: type[LineClient] = LineClient,
    ) -> LineClient:
        """Start a client with ``options`` in a directory of its own (``cwd``); with
        ``username`` it logs in via ``--username``."""
        self._count += 1
        label = label or username or f"client{self._count}"
        cwd = self.tmp_path / f"client-{self._count}-{label}"
        cwd.mkdir(parents=True)
        args = ["-m", "chat.client", HOST, str(self.public_pem), "--port", str(self.server.port)]
        if username is not None:
            args += ["--username", username]
        client = await kind.spawn(label, [*args, *options], cwd, split_prompts=True)
        assert isinstance(client, kind)
        client.server = self.server
        client.name = username
        client.cwd = cwd
        self.clients.append(client)
        return client
