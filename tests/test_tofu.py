"""Trust on first use (README "Connect a client"): with no PUBLIC_PEM and no keys/public.pem, the
client fetches the server's key, asks on a terminal, pins it per host:port, and refuses a
key that changed. Line mode refuses an unknown key unless --accept-new-key is given;
--fingerprint pins a fingerprint given out of band."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from e2e_harness import HOST, ServerProcess, child_env
from test_terminal_support import Terminal

from chat.client.known_servers import FILE_NAME, KnownServers
from chat.keys import fingerprint, generate_private_key, load_public_key, write_key_pair

EXIT_USAGE, EXIT_BAD_SERVER_KEY = 2, 4


@pytest.fixture(scope="module")
def other_key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A second server key: the server's key "changed"."""
    return write_key_pair(tmp_path_factory.mktemp("other-keys"), generate_private_key(2048))


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "config"


def fp(public_pem: Path) -> str:
    return fingerprint(load_public_key(public_pem))


def pins(config_dir: Path) -> list[str]:
    path = config_dir / FILE_NAME
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


async def line_client(
    args: list[str], *, cwd: Path, config_dir: Path, stdin: str = "", extra_env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run a line-mode client to the end: (exit code, stdout, stderr)."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = child_env()
    env["CHAT_CONFIG_DIR"] = str(config_dir)
    env.update(extra_env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chat.client", *args,
        cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_terminal_asks_pins_then_refuses_a_changed_key(
    start_server: Callable[..., Awaitable[ServerProcess]], key_pair: tuple[Path, Path],
    other_key_pair: tuple[Path, Path], tmp_path: Path, config_dir: Path, request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    server = await start_server(key_pair[0])
    args = [HOST, "--port", str(server.port), "--username", "sophia"]
    first = Terminal.spawn(args, cwd=tmp_path / "client", config_dir=config_dir)
    request.addfinalizer(first.close)
    await first.expect(f"is not known yet (not in {config_dir / FILE_NAME})")
    await first.expect(f"Its key fingerprint is {fp(key_pair[1])}.")
    await first.expect("Trust this server? (yes/no)")
    first.send("yes\r")
    await first.expect(f"Pinned the key {fp(key_pair[1])} of {HOST}:{server.port}")
    await first.expect("[Welcome sophia]")
    assert [line.split()[:2] for line in pins(config_dir)] == [[f"{HOST}:{server.port}", fp(key_pair[1])]]
    first.send("/quit\r")
    assert await first.wait_exit() == 0

    # A second run against the same server: the pin is used without a question.
    again = Terminal.spawn(args, cwd=tmp_path / "client", config_dir=config_dir)
    request.addfinalizer(again.close)
    await again.expect("[Welcome sophia]")
    assert "Trust this server?" not in again.text
    again.send("/quit\r")
    assert await again.wait_exit() == 0

    # Another server (another key) on the same host and port: refused, with the way out.
    await server.stop()
    # The harness starts servers with --port 0; a later --port wins (argparse).
    await start_server(other_key_pair[0], "--port", str(server.port))
    third = Terminal.spawn(args, cwd=tmp_path / "client", config_dir=config_dir)
    request.addfinalizer(third.close)
    assert await third.wait_exit() == EXIT_BAD_SERVER_KEY
    text = " ".join(third.text.split())
    assert f"WARNING: the key of the chat server at {HOST}:{server.port} has CHANGED" in text
    assert fp(key_pair[1]) in text and fp(other_key_pair[1]) in text
    assert f"remove the line for {HOST}:{server.port} from {config_dir / FILE_NAME}" in text
    assert f"--fingerprint {fp(other_key_pair[1])}" in text
    assert "[Welcome" not in text


async def test_terminal_answer_other_than_yes_does_not_connect(
    server: ServerProcess, tmp_path: Path, config_dir: Path, request: pytest.FixtureRequest
) -> None:
    args = [HOST, "--port", str(server.port)]
    client = Terminal.spawn(args, cwd=tmp_path / "client", config_dir=config_dir)
    request.addfinalizer(client.close)
    await client.expect("Trust this server? (yes/no)")
    client.send("no\r")
    assert await client.wait_exit() == EXIT_BAD_SERVER_KEY
    await client.expect(f"Not trusted: not connecting to {HOST}:{server.port}.")
    assert pins(config_dir) == []


async def test_line_mode_refuses_an_unknown_key_unless_accept_new_key(
    server: ServerProcess, key_pair: tuple[Path, Path], tmp_path: Path, config_dir: Path
) -> None:
    args = [HOST, "--port", str(server.port), "--username", "bot"]
    code, out, err = await line_client(args, cwd=tmp_path / "c", config_dir=config_dir, stdin="hi\n")
    assert (code, out) == (EXIT_BAD_SERVER_KEY, "")
    assert len(err.splitlines()) == 1, err
    assert fp(key_pair[1]) in err and "--accept-new-key" in err and "verify the fingerprint" in err
    assert pins(config_dir) == []

    code, out, err = await line_client(
        [*args, "--accept-new-key"], cwd=tmp_path / "c", config_dir=config_dir, stdin="/quit\n"
    )
    assert (code, out) == (0, "[Welcome bot]\n"), err  # stdout: the events only
    assert f"Pinned the key {fp(key_pair[1])}" in err
    assert [line.split()[:2] for line in pins(config_dir)] == [[f"{HOST}:{server.port}", fp(key_pair[1])]]

    # Pinned now: no option needed.
    code, out, _ = await line_client(args, cwd=tmp_path / "c", config_dir=config_dir, stdin="/quit\n")
    assert (code, out) == (0, "[Welcome bot]\n")


async def test_line_mode_refuses_a_changed_key_in_one_line(
    start_server: Callable[..., Awaitable[ServerProcess]], key_pair: tuple[Path, Path],
    other_key_pair: tuple[Path, Path], tmp_path: Path, config_dir: Path,
) -> None:  # fmt: skip
    impostor = await start_server(other_key_pair[0])
    KnownServers(config_dir / FILE_NAME).pin(HOST, impostor.port, load_public_key(key_pair[1]))
    args = [HOST, "--port", str(impostor.port), "--username", "bot", "--accept-new-key"]
    code, out, err = await line_client(args, cwd=tmp_path / "c", config_dir=config_dir, stdin="/quit\n")
    assert (code, out) == (EXIT_BAD_SERVER_KEY, "")
    assert len(err.splitlines()) == 1, err
    assert "has CHANGED" in err and fp(other_key_pair[1]) in err and str(config_dir / FILE_NAME) in err
    # The way out it names: pin the new key with --fingerprint (after checking it).
    args += ["--fingerprint", fp(other_key_pair[1])]
    code, out, err = await line_client(args, cwd=tmp_path / "c", config_dir=config_dir, stdin="/quit\n")
    assert (code, out) == (0, "[Welcome bot]\n"), err
    new_pin = [f"{HOST}:{impostor.port}", fp(other_key_pair[1])]
    assert [line.split()[:2] for line in pins(config_dir)] == [new_pin]


async def test_fingerprint_option_pins_a_key_given_out_of_band(
    server: ServerProcess, key_pair: tuple[Path, Path], other_key_pair: tuple[Path, Path],
    tmp_path: Path, config_dir: Path,
) -> None:  # fmt: skip
    args = [HOST, "--port", str(server.port), "--username", "bot"]
    wrong = fp(other_key_pair[1])
    code, out, err = await line_client([*args, "--fingerprint", wrong], cwd=tmp_path / "c",
                                       config_dir=config_dir, stdin="/quit\n")  # fmt: skip
    assert (code, out) == (EXIT_BAD_SERVER_KEY, "")
    assert fp(key_pair[1]) in err and wrong in err and len(err.splitlines()) == 1
    assert pins(config_dir) == []

    right = fp(key_pair[1])
    code, out, err = await line_client([*args, "--fingerprint", right], cwd=tmp_path / "c",
                                       config_dir=config_dir, stdin="/quit\n")  # fmt: skip
    assert (code, out) == (0, "[Welcome bot]\n"), err
    assert [line.split()[:2] for line in pins(config_dir)] == [[f"{HOST}:{server.port}", right]]


async def test_key_file_still_wins_and_an_unreadable_one_is_a_usage_error(
    server: ServerProcess, key_pair: tuple[Path, Path], tmp_path: Path, config_dir: Path
) -> None:
    code, _, err = await line_client([HOST, str(tmp_path / "missing.pem"), "--port", str(server.port)],
                                     cwd=tmp_path / "c", config_dir=config_dir)  # fmt: skip
    assert code == EXIT_USAGE and "missing.pem" in err
    # keys/public.pem in the working directory is used when no PUBLIC_PEM is given.
    keys = tmp_path / "c" / "keys"
    keys.mkdir(parents=True)
    (keys / "public.pem").write_bytes(key_pair[1].read_bytes())
    args = [HOST, "--port", str(server.port), "--username", "bot"]
    code, out, err = await line_client(args, cwd=tmp_path / "c", config_dir=config_dir, stdin="/quit\n")
    assert (code, out) == (0, "[Welcome bot]\n"), err
    assert pins(config_dir) == []
