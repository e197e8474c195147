"""A client given several servers (README "Running a cluster"): the list is parsed
strictly, the first server that answers is used, a lost connection moves on to the next,
and a node with another key is refused as a single server would be."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_harness import HOST
from local_chat import LocalChat, LocalClient, LocalServer
from services import free_port

from chat.client.app import main as client_main
from chat.client.servers import parse_servers
from chat.keys import generate_private_key, write_key_pair


def test_the_list_is_parsed_with_default_ports_and_ipv6_brackets() -> None:
    assert parse_servers("a", 8767) == [("a", 8767)]
    assert parse_servers("a:1,b , [::1]:3,[fe80::1],::1", 9) == [
        ("a", 1), ("b", 9), ("::1", 3), ("fe80::1", 9), ("::1", 9)
    ]  # fmt: skip
    for bad, reason in [("a,,b", "an empty entry"), ("a:0", "from 1 to 65535"), ("a:x", "from 1 to 65535"),
                        ("[::1", "closing ']'"), ("[::1]x", "':PORT'"), (":5", "no host"),
                        ("wss://a:1", r"without a scheme \(for wss:// add --tls\)"),
                        ("ws://127.0.0.1:1", "without a scheme, e.g."), ("a b", "not a host"),
                        ("a/b", "not a host"), ("u@a", "not a host")]:  # fmt: skip
        with pytest.raises(ValueError, match=reason):
            parse_servers(bad, 8767)


def test_a_malformed_list_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert client_main(["a:1,,b", str(tmp_path / "none.pem")]) == 2
    assert "SERVER_HOST: the list of servers has an empty entry" in capsys.readouterr().err


def _client(chat: LocalChat, servers: str, name: str, *options: str) -> LocalClient:
    client = LocalClient(name, [servers, str(chat.public_pem), "--username", name, *options])
    client.server = chat.server
    chat.clients.append(client)
    return client


async def test_the_first_server_that_answers_then_the_next_after_a_loss(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    first = await LocalServer.start(key_pair[0], tmp_path / "one")
    second = await LocalServer.start(key_pair[0], tmp_path / "two")
    chat = LocalChat(first, key_pair[1], tmp_path)
    try:
        down = free_port()  # nothing listens there
        servers = f"{HOST}:{down},{HOST}:{first.port},{HOST}:{second.port}"
        alice = _client(chat, servers, "alice", "--reconnect")
        await alice.expect("[Welcome alice]")
        watcher = _client(chat, f"{HOST}:{second.port}", "watcher")
        await watcher.expect("[Welcome watcher]")
        await first.stop()  # alice's server goes away: she moves on to the next one
        await alice.expect("[Connection lost; reconnecting...]", timeout=10)
        await alice.expect("[Reconnected as alice.]", timeout=20)
        await watcher.expect("[alice joined]")
        alice.send("/list")
        await alice.expect("watcher, alice")
    finally:
        await chat.shutdown()
        await first.stop()
        await second.stop()


async def test_a_node_with_another_key_is_refused_and_no_other_is_tried(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    other_private, _ = write_key_pair(tmp_path / "other", generate_private_key(2048))
    impostor = await LocalServer.start(other_private, tmp_path / "impostor")
    honest = await LocalServer.start(key_pair[0], tmp_path / "honest")
    chat = LocalChat(honest, key_pair[1], tmp_path)
    try:
        client = _client(chat, f"{HOST}:{impostor.port},{HOST}:{honest.port}", "alice")
        assert await client.wait_exit(10) == 4
        at = f"ws://{HOST}:{impostor.port}"
        refused = f"The server at {at} answered that it does not hold {chat.public_pem}"
        assert [line for line in client.err.lines if line.startswith(refused)], client.report()
        assert not any("Welcome" in line for line in client.out.lines)
    finally:
        await chat.shutdown()
        await impostor.stop()
        await honest.stop()
