"""``/healthz`` and ``/metrics`` on the server's own port (README "Health and metrics"):
what they say, and that they say nothing about who is online or what anyone wrote."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from e2e_harness import HOST
from local_chat import LocalServer
from session_helpers import login, reply


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers["content-length"]))
    writer.close()
    return status, headers, body


async def test_health_and_metrics(server: LocalServer, key_pair: tuple[Path, Path]) -> None:
    status, headers, body = await get(server.port, "/healthz")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == {
        "status": "ok", "database": "ok", "redis": "not configured", "users": 0, "connections": 0
    }  # fmt: skip
    ann = await login(server.port, key_pair[1], "ann")
    bob = await login(server.port, key_pair[1], "bob")
    assert (await reply(ann, "broadcast", text="secret words")).type == "ok"
    assert (await reply(ann, "private", to="bob", text="more secret words")).type == "private_sent"
    status, _, body = await get(server.port, "/healthz")
    report = json.loads(body)
    assert (status, report["users"], report["connections"]) == (200, 2, 2)
    status, headers, body = await get(server.port, "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}  # fmt: skip
    assert samples["chat_users_online"] == 2 and samples["chat_connections"] == 2
    assert samples['chat_messages_total{kind="broadcast"}'] == 1
    assert samples['chat_messages_total{kind="private"}'] == 1
    assert samples["chat_logins_total"] == 2 and samples["chat_sessions_lingering"] == 0
    assert "secret" not in text and "ann" not in text and "bob" not in text
    await ann.close()
    await bob.close()


async def test_health_says_when_the_database_fails(server: LocalServer) -> None:
    storage = server.chat_server.services.storage
    await storage._run(storage._conn().close)  # as if the disk were gone (on its own thread)
    try:
        status, _, body = await get(server.port, "/healthz")
    finally:
        await storage._run(storage._open)  # back, for the server's own stop
    report = json.loads(body)
    assert (status, report["status"], report["database"]) == (503, "failing", "failing: ProgrammingError")
