"""The web client's files on the server's port, and the Origin check on the WebSocket
upgrade (README "Web client and TLS", PROTOCOL.md section 1.1), on a real server."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from pathlib import Path

from e2e_harness import HOST, ServerProcess

import chat.web
from chat.server.__main__ import web_client_lines
from chat.server.web import is_loopback

WEB = Path(chat.web.__file__).parent
FILES = sorted(p.name for p in WEB.iterdir() if p.suffix in {".html", ".js", ".css", ".svg"})


def policy(socket: str) -> str:
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            f"connect-src 'self' {socket}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


async def request(
    port: int, head: str, *, tls: bool = False, host: str | None = None
) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 request (``head``: its first line and any more header lines): the
    status line, the headers (lower-case names) and the body."""
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(HOST, port, ssl=context)
    host = host or f"{HOST}:{port}"
    writer.write(f"{head}\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    top = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = top.decode().strip().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    body = b""
    if " 101 " not in lines[0]:  # an upgraded connection stays open: its answer is the head
        body = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return lines[0], headers, body


def upgrade(origin: str | None) -> str:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET / HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
             "Sec-WebSocket-Version: 13"]  # fmt: skip
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return "\r\n".join(lines)


async def test_every_file_of_the_page_is_served_with_its_type_and_policy(
    server_process: ServerProcess,
) -> None:
    port = server_process.port
    assert "index.html" in FILES and "app.js" in FILES and "style.css" in FILES
    types = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}  # fmt: skip
    for name in FILES:
        status, headers, body = await request(port, f"GET /{name} HTTP/1.1")
        assert status == "HTTP/1.1 200 OK", name
        assert body == (WEB / name).read_bytes(), name
        assert headers["content-type"] == types[Path(name).suffix], name
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-cache"
        assert headers["referrer-policy"] == "no-referrer"
        if name.endswith(".html"):
            assert headers["content-security-policy"] == policy(f"ws://{HOST}:{port}"), name
    status, headers, body = await request(port, "GET / HTTP/1.1")
    assert (status, body) == ("HTTP/1.1 200 OK", (WEB / "index.html").read_bytes())
    etag = headers["etag"]
    status, _, body = await request(port, f"GET /app.js HTTP/1.1\r\nIf-None-Match: {etag}")
    assert status == "HTTP/1.1 200 OK"  # another file's tag
    status, headers, _ = await request(port, "GET /app.js HTTP/1.1")
    status, _, body = await request(port, f"GET /app.js HTTP/1.1\r\nIf-None-Match: {headers['etag']}")
    assert (status, body) == ("HTTP/1.1 304 Not Modified", b"")


async def test_nothing_but_the_pages_files_is_served(server_process: ServerProcess) -> None:
    for path in ("/%2e%2e/keys/private.pem", "/..%2fkeys%2fprivate.pem", "//etc/passwd", "/chat",
                 "/web", "/__init__.py", "/index.html/", "/.index.html", "/INDEX.HTML",
                 "/index.html%00.js"):  # fmt: skip
        status, _, body = await request(server_process.port, f"GET {path} HTTP/1.1")
        assert (status, body) == ("HTTP/1.1 404 Not Found", b"Not found.\n"), path


async def test_over_plain_http_another_name_gets_the_page_explaining_tls(
    server_process: ServerProcess,
) -> None:
    port = server_process.port
    needs_tls = (WEB / "needs-tls.html").read_bytes()
    assert b"chat-server --tls" in needs_tls and b"<script" not in needs_tls
    for host in (f"chat.example:{port}", f"192.0.2.7:{port}", "chat.example"):
        _, headers, body = await request(port, "GET / HTTP/1.1", host=host)
        assert body == needs_tls, host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"LOCALHOST:{port}",
                 f"127.0.0.2:{port}", f"chat.localhost:{port}"):
        _, _, body = await request(port, "GET / HTTP/1.1", host=host)
        assert body == (WEB / "index.html").read_bytes(), host
    _, headers, _ = await request(port, "GET / HTTP/1.1", host='evil.example"; script-src *')
    assert "script-src *" not in headers["content-security-policy"]  # a Host that could inject


async def test_a_websocket_from_another_sites_page_is_refused(server_process: ServerProcess) -> None:
    port = server_process.port
    refused = ("HTTP/1.1 403 Forbidden", b"WebSocket connections from other sites are refused.\n")
    for origin in ("http://evil.example", f"http://{HOST}:{port + 1}", f"https://{HOST}:{port}", "null",
                   f"http://localhost:{port}", "http://127.0.0.1"):  # fmt: skip
        status, _, body = await request(port, upgrade(origin))
        assert (status, body) == refused, origin
    for origin in (f"http://{HOST}:{port}/", f"http://user@{HOST}:{port}", f"http://{HOST}:{port}?x",
                   f"http://{HOST}:{port}#x"):  # more than scheme://host:port: no browser's origin
        status, _, body = await request(port, upgrade(origin))
        assert (status, body) == refused, origin
    for origin in (f"http://{HOST}:{port}", f"HTTP://{HOST}:{port}", None):  # its own page; no browser
        status, _, _ = await request(port, upgrade(origin))
        assert status == "HTTP/1.1 101 Switching Protocols", origin
    status, _, _ = await request(port, upgrade(f"http://localhost:{port}"), host=f"localhost:{port}")
    assert status == "HTTP/1.1 101 Switching Protocols"
    # Over plain http the page runs on loopback names only: another name whose page sends
    # its own origin and Host is a site pointed at this address (DNS rebinding).
    for name in ("evil.example", "192.168.1.20"):
        status, _, body = await request(port, upgrade(f"http://{name}:{port}"), host=f"{name}:{port}")
        assert (status, body) == refused, name


async def test_the_start_lines_say_where_the_web_client_is(server_process: ServerProcess) -> None:
    port = server_process.port
    assert await server_process.out.wait_for(lambda s: s.startswith("Clients on the LAN"), 15) is not None
    assert f"Web client: http://{HOST}:{port}/" in server_process.out.lines
    assert "(browsers on other machines need TLS: start the server with --tls)" in server_process.out.lines


async def test_over_tls_the_page_connects_with_wss(own_private_pem: Path, tmp_path: Path) -> None:
    tls = True
    server = await ServerProcess.start(own_private_pem, tmp_path / "server", "--tls")
    try:
        port = server.port
        status, headers, body = await request(port, "GET / HTTP/1.1", tls=tls, host=f"chat.example:{port}")
        assert (status, body) == ("HTTP/1.1 200 OK", (WEB / "index.html").read_bytes())
        assert headers["content-security-policy"] == policy(f"wss://chat.example:{port}")
        status, _, _ = await request(port, "GET /needs-tls.html HTTP/1.1", tls=tls)
        assert status == "HTTP/1.1 404 Not Found"
        status, _, _ = await request(port, upgrade(f"http://{HOST}:{port}"), tls=tls)  # another origin
        assert status == "HTTP/1.1 403 Forbidden"
        status, _, _ = await request(port, upgrade(f"https://{HOST}:{port}"), tls=tls)
        assert status == "HTTP/1.1 101 Switching Protocols"
        assert await server.out.wait_for(lambda s: s == f"Web client: https://{HOST}:{port}/", 15) is not None
    finally:
        assert await server.stop() == []


def test_pip_install_ships_every_file_of_the_page() -> None:
    """pyproject's package data names every kind of file in chat/web (a non-editable
    install carries only what it names)."""
    import fnmatch
    import tomllib

    config = tomllib.loads((WEB.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["chat.web"]
    shipped = [p.name for p in WEB.iterdir() if p.is_file() and p.suffix != ".py"]
    assert shipped and all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in shipped)


def test_loopback_names_and_the_web_client_lines_for_one_address() -> None:
    """The names browsers count as this machine (a secure context over http), and what
    the start lines say when the server listens on one LAN address only."""
    for name in ("localhost", "chat.localhost", "127.0.0.1", "127.8.9.10", "[::1]", "::1"):
        assert is_loopback(name), name
    for name in ("", "evil.example", "localhost.evil.example", "192.168.1.5", "[fe80::1]", "0.0.0.0"):
        assert not is_loopback(name), name
    assert web_client_lines("192.168.1.5", 8767, False) == [
        "Web client: http://192.168.1.5:8767/",
        "(browsers need TLS for this address: start the server with --tls)",
    ]
    assert web_client_lines("0.0.0.0", 8767, False) == [
        "Web client: http://localhost:8767/",
        "(browsers on other machines need TLS: start the server with --tls)",
    ]
    assert web_client_lines("192.168.1.5", 8767, True) == ["Web client: https://192.168.1.5:8767/"]
