"""Review findings L3 and L4: local files.

L3: a ``keys/public.pem`` planted in the client's working directory does not override the
key pinned for that server. L4: the server's database and a new key directory are
private to their user.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from e2e_harness import HOST, ServerProcess
from test_tofu import EXIT_BAD_SERVER_KEY, FILE_NAME, fp, line_client, other_key_pair

from chat.client.known_servers import KnownServers
from chat.keys import generate_private_key, load_public_key, write_key_pair

__all__ = ["other_key_pair"]  # a fixture shared with test_tofu (start_server: conftest.py)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


async def test_planted_key_file_does_not_override_the_pin(
    start_server: Callable[..., Awaitable[ServerProcess]], key_pair: tuple[Path, Path],
    other_key_pair: tuple[Path, Path], tmp_path: Path,
) -> None:  # fmt: skip
    """The review's scenario: the real key is pinned for host:port; a rogue server there,
    and the attacker's public.pem at keys/public.pem where the victim runs the client."""
    config_dir = tmp_path / "config"
    rogue = await start_server(other_key_pair[0])
    KnownServers(config_dir / FILE_NAME).pin(HOST, rogue.port, load_public_key(key_pair[1]))
    cwd = tmp_path / "victim"
    (cwd / "keys").mkdir(parents=True)
    (cwd / "keys" / "public.pem").write_bytes(other_key_pair[1].read_bytes())
    args = [HOST, "--port", str(rogue.port), "--username", "victim"]
    code, out, err = await line_client(args, cwd=cwd, config_dir=config_dir, stdin="hello\n/quit\n")
    assert (code, out) == (EXIT_BAD_SERVER_KEY, "")
    assert len(err.splitlines()) == 1, err
    assert err.startswith("WARNING: keys/public.pem in the working directory has the fingerprint")
    assert fp(other_key_pair[1]) in err and fp(key_pair[1]) in err and str(config_dir / FILE_NAME) in err
    await rogue.stop()
    assert not any("login" in line for line in rogue.err.lines), "the name never reached the rogue"
    # Named explicitly, the file is the user's choice.
    rogue = await start_server(other_key_pair[0], "--port", str(rogue.port))
    args = [HOST, "keys/public.pem", "--port", str(rogue.port), "--username", "victim"]
    code, out, err = await line_client(args, cwd=cwd, config_dir=config_dir, stdin="/quit\n")
    assert (code, out) == (0, "[Welcome victim]\n"), err


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
async def test_database_files_are_private(key_pair: tuple[Path, Path], tmp_path: Path) -> None:
    cwd = tmp_path / "server"
    db = cwd / "chat.db"
    old = os.umask(0o022)  # the usual umask, which made chat.db world-readable
    try:
        server = await ServerProcess.start(key_pair[0], cwd)
        try:
            assert _mode(db) == 0o600
            assert _mode(cwd / "chat.db-wal") == 0o600
        finally:
            assert await server.stop() == []
        os.chmod(db, 0o644)  # a database made by an older server
        server = await ServerProcess.start(key_pair[0], cwd)
        try:
            assert _mode(db) == 0o600
        finally:
            assert await server.stop() == []
    finally:
        os.umask(old)


@posix_only
def test_new_key_directory_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        private_pem, _ = write_key_pair(tmp_path / "new" / "keys", generate_private_key(2048))
    finally:
        os.umask(old)
    assert _mode(private_pem.parent) == 0o700
    assert _mode(private_pem) == 0o600
