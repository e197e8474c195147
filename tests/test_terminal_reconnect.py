"""A lost connection (README "Connect a client"): on a terminal the client says so, reconnects with
backoff, logs back in and says when it is back; lines typed meanwhile are sent then. In
line mode a lost connection still ends the client (exit 5, one line on stderr)."""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from e2e_harness import HOST, ServerProcess, child_env
from tcp_proxy import TcpProxy
from test_terminal_support import Peer, Terminal

from chat.client.reconnect import MAX_DELAY, backoff_delays, loss_reason, worth_retrying
from chat.client.transport import EXIT_BAD_SERVER_KEY, EXIT_CANNOT_CONNECT, ClientError, Disconnected

StartServer = Callable[..., Awaitable[ServerProcess]]


@pytest_asyncio.fixture
async def start_server(key_pair: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[StartServer]:
    """Start servers the test stops and restarts itself."""
    started: list[ServerProcess] = []

    async def start(*extra: str) -> ServerProcess:
        process = await ServerProcess.start(key_pair[0], tmp_path / f"server{len(started)}", *extra)
        started.append(process)
        return process

    yield start
    for process in started:
        await process.stop()


async def test_reconnects_after_a_server_restart_and_sends_what_was_typed(
    start_server: StartServer, key_pair: tuple[Path, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = str(tmp_path / "chat.db")
    server = await start_server("--db", db)
    # jojo is registered, so a private message to him is kept while he is away.
    jojo = await Peer.login(server.port, key_pair[1], "jojo")
    await jojo.request("register", password="jojo-secret")
    await jojo.wait_for(lambda e: e.type == "registered", "registered")
    sophia = Terminal.spawn(
        [HOST, str(key_pair[1]), "--port", str(server.port), "--username", "sophia"],
        cwd=tmp_path / "sophia",
        config_dir=tmp_path / "config",
    )
    request.addfinalizer(sophia.close)
    await sophia.expect("[Welcome sophia]")
    # sophia registers too: logging back in then needs the password (kept in memory).
    sophia.send("/register\r")
    for prompt in ("Password:", "Repeat password:"):
        await sophia.expect(prompt)
        sophia.send("sophia-secret\r")
    await sophia.expect("[Name 'sophia' is now registered.]")
    assert "sophia-secret" not in sophia.text
    await jojo.close()

    await server.stop()
    await sophia.expect("Connection lost: server shutting down. Reconnecting in 1 s...")
    await sophia.expect("sophia (reconnecting)>")
    sophia.send("/msg jojo typed while the server was down\r")
    await sophia.expect("(not connected: will send when reconnected)")

    # The same port (a later --port wins over the harness's --port 0), the same database.
    await start_server("--db", db, "--port", str(server.port))
    await sophia.expect("Reconnected as sophia.", timeout=15)
    jojo = await Peer.login(server.port, key_pair[1], "jojo", password="jojo-secret")
    held = await jojo.wait_for(lambda e: e.type == "private", "the line typed while disconnected")
    assert (held["sender"], held["text"]) == ("sophia", "typed while the server was down")
    sophia.send("back again\r")
    event = await jojo.wait_for(lambda e: e.type == "broadcast", "sophia's broadcast")
    assert (event["sender"], event["text"]) == ("sophia", "back again")
    await jojo.close()
    sophia.send("/quit\r")
    assert await sophia.wait_exit() == 0


@pytest.mark.slow
async def test_logging_back_in_takes_over_the_old_session_at_once(
    start_server: StartServer, key_pair: tuple[Path, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The network drops the client's side only: the server still holds the dead
    connection (until its keepalive), but the client's resume token lets it take its
    session over at once, and nobody sees it leave or come back."""
    keepalive = ("--ping-interval", "20", "--ping-timeout", "20")
    server = await start_server("--db", ":memory:", *keepalive)
    network = TcpProxy(server.port)
    await network.start()
    try:
        jojo = await Peer.login(server.port, key_pair[1], "jojo")
        sophia = Terminal.spawn(
            [HOST, str(key_pair[1]), "--port", str(network.port), "--username", "sophia"],
            cwd=tmp_path / "sophia",
            config_dir=tmp_path / "config",
        )
        request.addfinalizer(sophia.close)
        await sophia.expect("[Welcome sophia]")
        await network.black_hole(0)  # the client's side dropped, the server's left silent
        await sophia.expect("Connection lost: the connection was cut. Reconnecting in 1 s...")
        # Sent while she is away (to the connection the server still holds): replayed to
        # her once she is back, with the time it was sent.
        rid = await jojo.request("broadcast", text="while you were away")
        await jojo.wait_for(lambda e: e.get("re") == rid and e.type == "ok", "the ok")
        await sophia.expect("Reconnected as sophia.", timeout=5)
        stamp = r"\(sent \d{4}-\d\d-\d\d \d\d:\d\d\)"
        await sophia.expect_re(r"\[Broadcast from jojo\]: while you were away " + stamp)
        sophia.send("still here\r")
        try:
            event = await jojo.wait_for(lambda e: e.type == "broadcast", "sophia's broadcast")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nsophia's terminal:\n{sophia.text[-3000:]}") from None
        assert (event["sender"], event["text"]) == ("sophia", "still here")
        presence = [e for e in jojo.events if e.type in ("user_joined", "user_exited")]
        assert [(e.type, e["names"]) for e in presence] == [("user_joined", ["sophia"])]
        await jojo.close()
    finally:
        await network.close()


async def test_line_mode_does_not_reconnect(
    start_server: StartServer, key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    server = await start_server()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chat.client", HOST, str(key_pair[1]), "--port", str(server.port),
        "--username", "bot", cwd=tmp_path, env=child_env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"[Welcome bot]\n"
    await server.stop()
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 5
    assert out == b"Server is shutting down.\n"
    assert err.decode().splitlines() == ["Disconnected by the server: server shutting down"]


def test_backoff_doubles_up_to_fifteen_seconds_with_jitter() -> None:
    assert [round(d, 6) for d in _take(backoff_delays(rand=lambda: 0.5), 8)] == [1, 2, 4, 8, 15, 15, 15, 15]
    low = _take(backoff_delays(rand=lambda: 0.0), 7)
    high = _take(backoff_delays(rand=lambda: 0.999999), 7)
    assert low[0] == pytest.approx(0.8) and high[0] == pytest.approx(1.2, abs=1e-5)
    assert max(high) <= MAX_DELAY and low[-1] == pytest.approx(12)


def test_which_losses_are_worth_a_reconnection() -> None:
    assert worth_retrying(Disconnected("Disconnected by the server: connection lost"))
    assert worth_retrying(Disconnected("x", 1001, "server shutting down"))
    assert worth_retrying(Disconnected("x", 1013, "too many connections"))
    assert worth_retrying(ClientError("Cannot connect: connection refused", EXIT_CANNOT_CONNECT))
    assert not worth_retrying(Disconnected("x", 1008, "sending too fast"))
    assert not worth_retrying(Disconnected("Disconnected: invalid message", 1002, "invalid message"))
    assert not worth_retrying(ClientError("The server's key does not match", EXIT_BAD_SERVER_KEY))
    assert loss_reason(Disconnected("x", 1001, "server shutting down")) == "server shutting down"
    cut = Disconnected("Disconnected by the server: connection lost")
    assert loss_reason(cut) == "the connection was cut"


def _take(delays: Iterator[float], count: int) -> list[float]:
    return list(itertools.islice(delays, count))
