"""Helpers for the terminal client tests (no tests here): the client in a real
pseudo-terminal (pexpect), and other users as in-process sessions.

The pseudo-terminal is read without blocking the event loop (the server's output pumps
and the in-process peers keep running), and matched on its text with escape sequences
removed, so redrawing and colours do not get in the way.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest
from e2e_harness import HOST, child_env

from chat.client.transport import ClientSession, open_session
from chat.keys import load_public_key
from chat.protocol.envelope import Envelope

TIMEOUT = 10.0
#: CSI sequences (colours, cursor moves, erasing), OSC titles, and two-character escapes.
ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]"
)
UP = "\x1b[A"


def plain(text: str) -> str:
    return ESCAPES.sub("", text)


class Terminal:
    """``python -m chat.client ...`` on a 24x100 pseudo-terminal."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.raw = ""
        #: Where the next ``expect`` starts looking, in ``text``.
        self.position = 0
        self.eof = False

    @classmethod
    def spawn(cls, args: list[str], *, cwd: Path, config_dir: Path, colour: bool = False) -> Terminal:
        cwd.mkdir(parents=True, exist_ok=True)
        env = child_env()
        if colour:
            env.pop("NO_COLOR", None)
        env.update(CHAT_CONFIG_DIR=str(config_dir), PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")
        child = pexpect.spawn(
            sys.executable,
            ["-m", "chat.client", *args],
            env=env,
            cwd=str(cwd),
            encoding="utf-8",
            codec_errors="replace",
            dimensions=(24, 100),
        )
        return cls(child)

    def _pull(self) -> None:
        while not self.eof:
            try:
                self.raw += self.child.read_nonblocking(65536, timeout=0)
            except pexpect.TIMEOUT:
                return
            except pexpect.EOF:
                self.eof = True

    @property
    def text(self) -> str:
        self._pull()
        return plain(self.raw)

    def send(self, keys: str) -> None:
        self.child.send(keys)

    async def expect(self, fragment: str, timeout: float = TIMEOUT) -> None:
        """Wait until ``fragment`` appears after what earlier expectations matched."""
        await self.expect_re(re.escape(fragment), timeout, what=repr(fragment))

    async def expect_re(
        self, pattern: str, timeout: float = TIMEOUT, what: str | None = None
    ) -> re.Match[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        compiled = re.compile(pattern)
        while True:
            match = compiled.search(self.text, self.position)
            if match is not None:
                self.position = match.end()
                return match
            if self.eof or loop.time() > deadline:
                state = "exited" if self.eof else "still running"
                pytest.fail(
                    f"the terminal client never showed {what or pattern!r} ({state}); its screen text "
                    f"since the last match:\n{self.text[self.position :][-3000:]}"
                )
            await asyncio.sleep(0.05)

    async def wait_exit(self, timeout: float = TIMEOUT) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.child.isalive():
            self._pull()
            if loop.time() > deadline:
                pytest.fail(f"the terminal client did not exit; screen text:\n{self.text[-3000:]}")
            await asyncio.sleep(0.05)
        self._pull()
        self.child.close()
        status = self.child.exitstatus
        assert status is not None, f"killed by signal {self.child.signalstatus}"
        return status

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close()


class Peer:
    """Another user: an in-process session with everything it received."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.events: list[Envelope] = []
        self._seen = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def login(cls, port: int, public_pem: Path, name: str, password: str | None = None) -> Peer:
        session = await open_session(HOST, port, load_public_key(public_pem))
        peer = cls(session)
        fields: dict[str, Any] = {"name": name}
        if password is not None:
            fields["password"] = password
        await peer.request("login", **fields)
        await peer.wait_for(lambda e: e.type == "welcome", f"welcome {name}")
        return peer

    async def _read(self) -> None:
        try:
            while True:
                self.events.append(await self.session.recv())
                self._changed.set()
        finally:
            self._changed.set()

    async def request(self, kind: str, **fields: Any) -> int:
        return await self.session.send(kind, **fields)

    async def wait_for(self, predicate: Any, what: str, timeout: float = TIMEOUT) -> Envelope:
        """The first event not yet matched by a wait_for that satisfies ``predicate``."""

        async def poll() -> Envelope:
            while True:
                for index in range(self._seen, len(self.events)):
                    if predicate(self.events[index]):
                        self._seen = index + 1
                        return self.events[index]
                if self._reader.done():
                    raise AssertionError(f"the session ended while waiting for {what}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            got = [(e.type, e.fields) for e in self.events[-10:]]
            raise AssertionError(f"timed out waiting for {what}; last events: {got}") from None

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.session.close()
