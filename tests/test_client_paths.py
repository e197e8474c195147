"""Client paths a user meets rarely, each with its exact line (docs/messages.md): a name
too long to send, passwords typed differently, files that are not files, a server that
is not a chat server, a host that does not resolve. Real server and line-mode clients
(tests/local_chat.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from e2e_harness import HOST, USERNAME_PROMPT
from local_chat import LocalChat, LocalClient

from chat.client.transport import EXIT_CANNOT_CONNECT
from chat.protocol.envelope import MAX_LOGIN_NAME_CHARS


async def test_a_name_too_long_to_send_is_refused_by_the_client(chat: LocalChat) -> None:
    """Longer than a login request carries: the client says why, without sending it,
    and asks again (the server refuses shorter names that are still too long itself)."""
    client = await chat.spawn(label="long")
    await client.expect(USERNAME_PROMPT)
    name = "n" * (MAX_LOGIN_NAME_CHARS + 1)
    client.send(name)
    await client.expect(f"[Invalid username '{name}': use 1-32 characters.]")
    await client.expect(USERNAME_PROMPT)
    client.send("short")
    await client.expect("[Welcome short]")
    refused = [line for line in chat.server.err.lines if "login refused" in line]
    assert refused == [], "the long name was sent"


async def test_passwords_typed_differently_change_nothing(chat: LocalChat) -> None:
    ann = await chat.login_one("ann")
    ann.send("/register")
    await ann.expect("Password: ")
    ann.send("first password")
    await ann.expect("Repeat password: ")
    ann.send("other password")
    await ann.expect("Passwords do not match; nothing was changed.")
    ann.send("/passwd")
    await ann.expect("Password: ")
    ann.send("anything at all")
    await ann.expect("New password: ")
    ann.send("new password 1")
    await ann.expect("Repeat password: ")
    ann.send("new password 2")
    await ann.expect("Passwords do not match; nothing was changed.")
    await ann.sync("ann")
    await ann.assert_no_match(lambda line: "registered" in line, "a registration")


async def test_files_that_are_not_files(chat: LocalChat, tmp_path: Path) -> None:
    """A directory, a FIFO and a missing path each get one line; nothing is offered."""
    alice, bob = await chat.login("alice", "bob")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    alice.send(f"/file bob {tmp_path}")
    await alice.expect(f"Cannot send {tmp_path}: it is a directory, not a file.")
    alice.send(f"/file bob {fifo}")
    await alice.expect(f"Cannot send {fifo}: it is not a regular file.")
    alice.send(f"/file bob {tmp_path / 'missing'}")
    await alice.expect(f"Cannot send {tmp_path / 'missing'}: no such file.")
    await bob.sync("alice, bob")
    await bob.assert_no_match(lambda line: "file" in line.lower(), "an offer")


async def _ended(client: LocalClient) -> tuple[int | None, list[str]]:
    return await client.wait_exit(15), client.err.lines


async def test_a_web_server_that_is_not_a_chat_server(chat: LocalChat) -> None:
    async def not_chat(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    web = await asyncio.start_server(not_chat, HOST, 0)
    port = web.sockets[0].getsockname()[1]
    try:
        client = LocalClient("web", [HOST, str(chat.public_pem), "--port", str(port), "--username", "x"])
        code, errors = await _ended(client)
    finally:
        web.close()
        await web.wait_closed()
    assert code == EXIT_CANNOT_CONNECT
    uri = f"ws://{HOST}:{port}"
    assert errors == [f"Cannot connect to the server at {uri}: not a chat server (HTTP status 404)"]


async def test_a_host_name_that_does_not_resolve(chat: LocalChat) -> None:
    client = LocalClient("nowhere", ["nowhere.invalid", str(chat.public_pem), "--username", "x"])
    code, errors = await _ended(client)
    assert code == EXIT_CANNOT_CONNECT
    assert len(errors) == 1
    prefix = "Cannot connect to the server at ws://nowhere.invalid:8767: cannot resolve the host name"
    assert errors[0].startswith(prefix), errors
