"""Helpers for the file-transfer tests: clients with options, and a raw protocol peer.

``spawn_client`` starts a line-mode client like ``Chat.spawn`` but with extra options
(``--max-file-size``, ``--download-dir``) and remembers its download directory.
``RawPeer`` speaks the protocol directly through ``ClientSession``, to send what the
command line cannot produce (hostile file names, a wrong checksum).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import HOST, Chat, LineClient, LineExpectations, ServerProcess
from local_chat import LocalChat, LocalClient, LocalServer

from chat.client.transport import ClientSession, Disconnected, open_session
from chat.keys import load_public_key
from chat.protocol.envelope import Envelope

PART_SUFFIX = ".part"


class FileClient(LineExpectations):
    """What the file tests read of a line-mode client: its download directory."""

    downloads: Path

    def saved(self) -> dict[str, bytes]:
        """Every finished file in the download directory (temporary files excluded)."""
        if not self.downloads.exists():
            return {}
        return {p.name: p.read_bytes() for p in self.downloads.iterdir() if not p.name.endswith(PART_SUFFIX)}

    def part_files(self) -> list[Path]:
        if not self.downloads.exists():
            return []
        return [p for p in self.downloads.iterdir() if p.name.endswith(PART_SUFFIX)]


class LocalFileClient(LocalClient, FileClient):
    """A line-mode client task (local_chat.py)."""


class ProcessFileClient(LineClient, FileClient):
    """A line-mode client process (to stop it with a signal or measure it)."""


async def spawn_client(chat: LocalChat | Chat, username: str, *options: str) -> Any:
    """Start a line-mode client logged in as ``username`` with ``options`` (as a task
    or a process, as ``chat`` starts them) and wait for its welcome."""
    if isinstance(chat, LocalChat):
        client: FileClient = await chat.spawn(username, None, *options, kind=LocalFileClient)
    else:
        client = await chat.spawn(username, None, *options, kind=ProcessFileClient)
    client.downloads = client.cwd / "downloads"
    for index, option in enumerate(options):
        if option == "--download-dir":
            client.downloads = client.cwd / options[index + 1]
    await client.expect(f"[Welcome {username}]")
    return client


@contextlib.asynccontextmanager
async def chat_with_server_options(
    key_pair: tuple[Path, Path], tmp_path: Path, *server_options: str, process: bool = False
) -> AsyncIterator[Any]:
    """Like the ``chat`` fixture (or, with ``process``, ``process_chat``), with options
    for the server."""
    world: LocalChat | Chat
    if process:
        server = await ServerProcess.start(key_pair[0], tmp_path / "server", *server_options)
        world = Chat(server, key_pair[1], tmp_path)
    else:
        local = await LocalServer.start(key_pair[0], tmp_path / "server", *server_options)
        world = LocalChat(local, key_pair[1], tmp_path)
    try:
        yield world
    finally:
        await world.shutdown()
        problems = await world.server.stop()
    if problems:
        pytest.fail("; ".join(problems) + "\n" + world.server.report())


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def sparse_file(path: Path, size: int) -> None:
    """A large file that costs nothing to create (it reads as zeros)."""
    with path.open("wb") as handle:
        handle.truncate(size)


async def wait_until(condition: Any, timeout: float = 10.0, interval: float = 0.005) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


class RawPeer:
    """A logged-in protocol peer: events are collected by a background task."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.events: list[Envelope] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def login(cls, chat: Chat, name: str) -> RawPeer:
        session = await open_session(HOST, chat.server.port, load_public_key(chat.public_pem))
        peer = cls(session)
        welcome = await peer.session.request("login", name=name)
        assert welcome.type == "welcome", welcome
        return peer

    async def _read(self) -> None:
        with contextlib.suppress(Disconnected):
            while True:
                self.events.append(await self.session.recv())
                self._changed.set()

    async def wait_for(self, kind: str, timeout: float = 5.0, **fields: Any) -> Envelope:
        """The first event of type ``kind`` with these field values (kept, not consumed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event in self.events:
                if event.type == kind and all(event.get(k) == v for k, v in fields.items()):
                    return event
            remaining = deadline - loop.time()
            if remaining <= 0:
                pytest.fail(f"no {kind} {fields} within {timeout}s; got {self.events}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def send_file(self, to: str, name: str, data: bytes, *, sha256: str | None = None) -> Envelope:
        """Offer ``data`` as ``name``, stream it in 64 KiB chunks within the window, end it
        with ``sha256`` (the right one unless given) and return the ``file_result``."""
        offered = await self.session.request("file_offer", name=name, size=len(data), to=to)
        assert offered.type == "file_offered", offered
        transfer = offered["id"]
        go = await self.wait_for("file_go", id=transfer)
        sent = 0
        while sent < len(data):
            chunk = data[sent : sent + 65536]
            acks = [e["received"] for e in self.events if e.type == "file_ack" and e["id"] == transfer]
            acked = max([0, *acks])
            if sent + len(chunk) - acked > go["window"]:
                await asyncio.sleep(0.01)
                continue
            await self.session.send_unanswered("file_chunk", body=chunk, id=transfer, offset=sent)
            sent += len(chunk)
        digest = sha256 or hashlib.sha256(data).hexdigest()
        assert (await self.session.request("file_end", id=transfer, sha256=digest)).type == "ok"
        return await self.wait_for("file_result", timeout=10, id=transfer)

    async def close(self) -> None:
        await self.session.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


def stand_in_opener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a real program named ``xdg-open`` first on PATH that records each file it is
    asked to open; returns the file it records into (absent until something is opened)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opened = tmp_path / "opened.txt"
    opener = bin_dir / "xdg-open"
    opener.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {opened}\n')
    opener.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return opened
