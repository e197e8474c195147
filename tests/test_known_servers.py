"""Pinned server keys (trust on first use) and fetching a server's key over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_harness import ServerProcess

from chat.client.known_servers import KnownServers, config_dir, fetch_server_key
from chat.keys import fingerprint, generate_private_key, load_public_key


@pytest.fixture(scope="module")
def two_keys():  # type: ignore[no-untyped-def]
    return generate_private_key(2048).public_key(), generate_private_key(2048).public_key()


def test_pin_lookup_and_replace(tmp_path: Path, two_keys) -> None:  # type: ignore[no-untyped-def]
    first, second = two_keys
    store = KnownServers(tmp_path / "cfg" / "known_servers")
    assert store.lookup("chat.lan", 8767) is None
    store.pin("chat.lan", 8767, first)
    store.pin("::1", 9000, second)
    assert fingerprint(store.lookup("chat.lan", 8767)) == fingerprint(first)
    assert store.lookup("chat.lan", 8768) is None
    assert fingerprint(store.lookup("::1", 9000)) == fingerprint(second)
    store.pin("chat.lan", 8767, second)
    assert fingerprint(store.lookup("chat.lan", 8767)) == fingerprint(second)
    lines = (tmp_path / "cfg" / "known_servers").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["[::1]:9000", "chat.lan:8767"]


def test_damaged_lines_are_ignored(tmp_path: Path, two_keys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "known_servers"
    store = KnownServers(path)
    store.pin("a", 1, two_keys[0])
    good = path.read_text()
    _, fp, der = good.split()
    path.write_text(f"garbage\nb:2 {fp} !!!\nb:3 SHA256:wrong {der}\n{good}")
    assert store.lookup("b", 2) is None
    assert store.lookup("b", 3) is None, "a pin whose key does not match its fingerprint is not trusted"
    assert fingerprint(store.lookup("a", 1)) == fingerprint(two_keys[0])


def test_config_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHAT_CONFIG_DIR", str(tmp_path))
    assert config_dir() == tmp_path


async def test_fetch_server_key(server: ServerProcess, key_pair: tuple[Path, Path]) -> None:
    key = await fetch_server_key("127.0.0.1", server.port)
    assert fingerprint(key) == fingerprint(load_public_key(key_pair[1]))


async def test_fetch_from_nothing_fails_cleanly(unused_tcp_port: int) -> None:
    with pytest.raises(OSError):
        await fetch_server_key("127.0.0.1", unused_tcp_port, timeout=2)
