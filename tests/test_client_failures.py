"""Client failures end with one clear line on stderr and a distinct exit code:
server unreachable (3), wrong server key (4), protocol version mismatch (4)."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from pathlib import Path

from e2e_harness import ServerProcess, child_env
from websockets.asyncio.server import ServerConnection, serve

from chat.keys import generate_private_key, write_key_pair
from chat.protocol.errors import HandshakeErrorCode
from chat.protocol.handshake import MSG_HANDSHAKE_ERROR


async def run_client(port: int, public_pem: Path, cwd: Path) -> tuple[int, list[str], str]:
    """Run the line-mode client to its end; (exit code, stderr lines, stdout)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chat.client", "127.0.0.1", str(public_pem), "--port", str(port),
        "--username", "someone",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=cwd, env=child_env(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode is not None
    return process.returncode, err.decode().splitlines(), out.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_server(key_pair: tuple[Path, Path], tmp_path: Path) -> None:
    port = free_port()
    code, err, out = await run_client(port, key_pair[1], tmp_path)
    assert code == 3
    assert err == [f"Cannot connect to the server at ws://127.0.0.1:{port}: connection refused"]
    assert out == ""


async def test_wrong_server_key(server: ServerProcess, tmp_path: Path) -> None:
    _, other_public = write_key_pair(tmp_path / "other", generate_private_key(2048))
    code, err, out = await run_client(server.port, other_public, tmp_path)
    assert code == 4
    assert len(err) == 1
    port = server.port
    assert err[0].startswith(
        f"The server at ws://127.0.0.1:{port} answered that it does not hold {other_public} "
        "(fingerprint SHA256:"
    )
    assert "(an unauthenticated answer): refusing to connect." in err[0]
    assert "changed" not in err[0].split("refusing")[0], "an unauthenticated answer proves no key change"
    assert out == ""


async def test_protocol_version_mismatch(key_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """A (future) server that speaks version 2 answers the ClientHello with a HandshakeError."""

    async def version_two(websocket: ServerConnection) -> None:
        await websocket.recv()
        reason = b"this server speaks protocol version 2"
        await websocket.send(
            struct.pack(">BBHH", MSG_HANDSHAKE_ERROR, HandshakeErrorCode.VERSION_MISMATCH, 2, len(reason))
            + reason
        )
        await websocket.close()

    async with serve(version_two, "127.0.0.1", 0) as fake:
        port = fake.sockets[0].getsockname()[1]
        code, err, out = await run_client(port, key_pair[1], tmp_path)
    assert code == 4
    assert err == ["Protocol version mismatch: the server speaks version 2, this client speaks 1."]
    assert out == ""
