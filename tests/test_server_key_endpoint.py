"""GET /server-key.pem serves the server's public key for trust on first use."""

from __future__ import annotations

import asyncio
from pathlib import Path

from e2e_harness import ServerProcess


async def http_get(port: int, path: str) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body


async def test_public_key_is_served_exactly(server: ServerProcess, key_pair: tuple[Path, Path]) -> None:
    status, body = await http_get(server.port, "/server-key.pem")
    assert status == "HTTP/1.1 200 OK"
    assert body == key_pair[1].read_bytes()


async def test_other_plain_http_requests_are_not_found(server: ServerProcess) -> None:
    for path in ("/private.pem", "/keys/private.pem", "/../keys/private.pem", "/chat.db", "/index.html/x"):
        status, body = await http_get(server.port, path)
        assert (status, body) == ("HTTP/1.1 404 Not Found", b"Not found.\n"), path
