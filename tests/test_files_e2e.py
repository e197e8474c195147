"""File transfer end to end (README "Files", PROTOCOL.md section 7).

A real server and line-mode clients on 127.0.0.1 (tasks of the test, local_chat.py; client
processes where one is killed or paused with a signal), real files in tmp_path. Saved
files are compared byte for byte; hostile names and a wrong checksum come from a raw
protocol peer (``RawPeer``), since the command line cannot produce them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from pathlib import Path

import pytest
from e2e_harness import Chat
from files_helpers import (
    RawPeer,
    chat_with_server_options,
    random_file,
    sparse_file,
    spawn_client,
    stand_in_opener,
    wait_until,
)

MIB = 1024 * 1024


async def test_small_and_non_ascii_files_arrive_intact(chat: Chat, tmp_path: Path) -> None:
    """0-byte, 1-byte and non-ASCII-named files; the sender's input ends right after
    its commands and it still waits for every result before exiting 0."""
    bob = await spawn_client(chat, "bob")
    alice = await spawn_client(chat, "alice")
    files = {"empty.txt": b"", "one.bin": b"\x00", "résumé 数据 ✓.txt": "naïve café\n".encode()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        alice.send(f"/file bob {tmp_path / name}")
    await alice.close(timeout=15)
    for name in files:
        await alice.expect(f"File {name} sent to bob successfully.")
        await bob.expect(f"You received file '{name}' from alice.")
    assert bob.saved() == files
    assert bob.part_files() == []


async def test_five_mib_file_byte_for_byte(chat: Chat, tmp_path: Path) -> None:
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob")
    data = random_file(tmp_path / "big.bin", 5 * MIB + 123)
    alice.send(f"/file bob {tmp_path / 'big.bin'}")
    await bob.expect("You received file 'big.bin' from alice.", timeout=20)
    await alice.expect("File big.bin sent to bob successfully.", timeout=20)
    saved = bob.saved()["big.bin"]
    assert len(saved) == len(data) and hashlib.sha256(saved).digest() == hashlib.sha256(data).digest()
    assert saved == data


async def test_name_collisions_never_overwrite(chat: Chat, tmp_path: Path) -> None:
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob", "--download-dir", "inbox")
    first, second = tmp_path / "one" / "example.txt", tmp_path / "two" / "example.txt"
    for path, text in ((first, b"first"), (second, b"second")):
        path.parent.mkdir()
        path.write_bytes(text)
    alice.send(f"/file bob {first}")
    await alice.expect("File example.txt sent to bob successfully.")
    alice.send(f"/file bob {second}")
    await alice.expect("File example.txt sent to bob successfully.")
    await bob.expect("You received file 'example.txt' from alice.")
    await bob.expect("You received file 'example (1).txt' from alice.")
    assert bob.saved() == {"example.txt": b"first", "example (1).txt": b"second"}


async def test_hostile_names_are_saved_safely_inside_the_download_dir(chat: Chat, tmp_path: Path) -> None:
    bob = await spawn_client(chat, "bob")
    mallory = await RawPeer.login(chat, "mallory")
    hostile = {
        "../escape.txt": "escape.txt",
        "../../../../../../tmp/abs.txt": "abs.txt",
        str(tmp_path / "absolute.txt"): "absolute.txt",
        "..\\..\\windows.txt": "windows.txt",
        "..": "file",
        ".bashrc": "bashrc",
        "CON.txt": "_CON.txt",
        "nul": "_nul",
        "bell\x07\x00.txt": "bell.txt",
        "a:b.txt": "a_b.txt",
    }
    try:
        for index, (offered, saved) in enumerate(hostile.items()):
            result = await mallory.send_file("bob", offered, f"data {index}".encode())
            assert result["delivered"] == ["bob"], result
            await bob.expect(f"You received file '{saved}' from mallory.")
    finally:
        await mallory.close()
    assert bob.saved() == {saved: f"data {i}".encode() for i, saved in enumerate(hostile.values())}
    assert not (tmp_path / "absolute.txt").exists()
    assert sorted(p.name for p in bob.downloads.parent.iterdir()) == ["downloads"]
    assert not (chat.tmp_path / "escape.txt").exists() and not Path("/tmp/abs.txt").exists()


async def test_altered_data_is_deleted_and_both_sides_told(chat: Chat) -> None:
    bob = await spawn_client(chat, "bob")
    mallory = await RawPeer.login(chat, "mallory")
    try:
        result = await mallory.send_file("bob", "report.pdf", os.urandom(200_000), sha256="0" * 64)
        assert result["delivered"] == []
        assert result["failed"] == [{"name": "bob", "detail": "the data did not match its SHA-256 checksum"}]
        await bob.expect(
            "File 'report.pdf' from mallory was not saved: the data did not match its SHA-256 checksum."
        )
        assert bob.saved() == {} and bob.part_files() == []
        # The next, intact, transfer is stored.
        assert (await mallory.send_file("bob", "report.pdf", b"fine"))["delivered"] == ["bob"]
        await bob.expect("You received file 'report.pdf' from mallory.")
    finally:
        await mallory.close()
    assert bob.saved() == {"report.pdf": b"fine"}


async def test_server_size_limit_refuses_before_any_data(key_pair: tuple[Path, Path], tmp_path: Path) -> None:
    async with chat_with_server_options(key_pair, tmp_path, "--max-file-size", "1000") as chat:
        alice = await spawn_client(chat, "alice")
        bob = await spawn_client(chat, "bob")
        random_file(tmp_path / "big.bin", 1001)
        random_file(tmp_path / "fits.bin", 1000)
        alice.send(f"/file bob {tmp_path / 'big.bin'}")
        await alice.expect("File big.bin is too large: the server accepts at most 1000 bytes.")
        alice.send(f"/file bob {tmp_path / 'fits.bin'}")
        await bob.expect("You received file 'fits.bin' from alice.")
        await bob.assert_no_match(lambda line: "big.bin" in line, "any line about big.bin")
        assert set(bob.saved()) == {"fits.bin"}


async def test_client_size_limits(chat: Chat, tmp_path: Path) -> None:
    """The recipient's --max-file-size declines (the sender is told why); the sender's
    own limit refuses locally, with nothing sent."""
    alice = await spawn_client(chat, "alice", "--max-file-size", "2K")
    bob = await spawn_client(chat, "bob", "--max-file-size", "1000")
    random_file(tmp_path / "big.bin", 1500)
    random_file(tmp_path / "huge.bin", 4096)
    alice.send(f"/file bob {tmp_path / 'big.bin'}")
    await bob.expect("Refused file 'big.bin' from alice: larger than your limit of 1000 bytes.")
    await alice.expect(
        "File big.bin could not be sent to bob: declined: larger than their limit of 1000 bytes."
    )
    alice.send(f"/file bob {tmp_path / 'huge.bin'}")
    await alice.expect("File huge.bin is too large: this client sends at most 2048 bytes.")
    alice.send(f"/file bob {tmp_path / 'missing.bin'}")
    await alice.expect(f"Cannot send {tmp_path / 'missing.bin'}: no such file.")
    alice.send(f"/file bob {tmp_path}")
    await alice.expect(f"Cannot send {tmp_path}: it is a directory, not a file.")
    alice.send(f"/file nobody {tmp_path / 'big.bin'}")
    await alice.expect("User 'nobody' is not online.")
    await bob.sync("alice, bob")
    await bob.assert_no_match(lambda line: "huge.bin" in line, "any line about huge.bin")
    assert bob.saved() == {} and bob.part_files() == []


async def test_group_of_three(chat: Chat, tmp_path: Path) -> None:
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob")
    carol = await spawn_client(chat, "carol", "--max-file-size", "10")
    alice.send("/create team bob,carol")
    await alice.expect("Group team created and joined.")
    await carol.expect("[You have been added to the team group]")
    data = random_file(tmp_path / "plan.txt", 10)
    alice.send(f"/groupfile team {tmp_path / 'plan.txt'}")
    await alice.expect("File plan.txt sent to group team successfully.")
    await bob.expect("[Receive plan.txt from Group team alice]")
    await carol.expect("[Receive plan.txt from Group team alice]")
    assert bob.saved() == carol.saved() == {"plan.txt": data}
    # One member over their limit: the sender learns who did not get it, and why.
    random_file(tmp_path / "big.txt", 11)
    alice.send(f"/groupfile team {tmp_path / 'big.txt'}")
    await alice.expect(
        "File big.txt was not delivered to: carol (declined: larger than their limit of 10 bytes)."
    )
    await bob.expect("[Receive big.txt from Group team alice]")
    await carol.expect("Refused file 'big.txt' from alice: larger than your limit of 10 bytes.")
    alice.send("/leave team")
    bob.send("/leave team")
    await bob.expect("[You have successfully left the team group.]")
    # carol's server has applied both leaves once she is told of them (across nodes too)
    await carol.expect("[alice has left the team group.]")
    await carol.expect("[bob has left the team group.]")
    carol.send(f"/groupfile team {tmp_path / 'plan.txt'}")
    await carol.expect("No other member of group team is online.")


async def test_recipient_disconnects_midway(process_chat: Chat, tmp_path: Path) -> None:
    chat = process_chat
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob")
    carol = await spawn_client(chat, "carol")
    sparse_file(tmp_path / "big.bin", 512 * MIB)
    alice.send(f"/file bob {tmp_path / 'big.bin'}")
    parts = bob.part_files
    assert await wait_until(lambda: any(p.stat().st_size > 0 for p in parts())), bob.report()
    await bob.kill()
    await alice.expect("File big.bin could not be sent to bob: disconnected.", timeout=10)
    await carol.expect("[bob exited]")
    # The server is fine and a later transfer works.
    data = random_file(tmp_path / "later.txt", 3000)
    alice.send(f"/file carol {tmp_path / 'later.txt'}")
    await alice.expect("File later.txt sent to carol successfully.")
    assert carol.saved() == {"later.txt": data}


async def test_sender_disconnects_midway(process_chat: Chat, tmp_path: Path) -> None:
    chat = process_chat
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob")
    sparse_file(tmp_path / "big.bin", 512 * MIB)
    alice.send(f"/file bob {tmp_path / 'big.bin'}")
    parts = bob.part_files
    assert await wait_until(lambda: any(p.stat().st_size > 0 for p in parts())), bob.report()
    await alice.kill()
    await bob.expect("Transfer of 'big.bin' from alice was aborted: the sender disconnected.", timeout=10)
    await bob.expect("[alice exited]")
    # The temporary file is deleted as the abort is shown (within moments of the line).
    assert await wait_until(lambda: bob.part_files() == [], timeout=5), bob.part_files()
    assert bob.saved() == {}
    # A later transfer works, and bob's client ends cleanly.
    carol = await spawn_client(chat, "carol")
    data = random_file(tmp_path / "later.txt", 3000)
    carol.send(f"/file bob {tmp_path / 'later.txt'}")
    await bob.expect("You received file 'later.txt' from carol.")
    await carol.expect("File later.txt sent to bob successfully.")
    assert bob.saved() == {"later.txt": data}
    await bob.close()


async def test_two_transfers_at_once_with_chat_in_between(chat: Chat, tmp_path: Path) -> None:
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob")
    carol = await spawn_client(chat, "carol")
    from_alice = random_file(tmp_path / "a.bin", 24 * MIB)
    from_carol = random_file(tmp_path / "c.bin", 24 * MIB)
    alice.send(f"/file bob {tmp_path / 'a.bin'}")
    carol.send(f"/file bob {tmp_path / 'c.bin'}")
    alice.send("hello while files move")
    carol.send("/msg bob private while files move")
    bob.send("/msg alice got it")
    await bob.expect("[Broadcast from alice]: hello while files move")
    await bob.expect("Private message from carol: private while files move")
    await alice.expect("Private message from bob: got it")
    # The chat lines came first: they were not stuck behind the file data.
    assert not any(line.startswith("You received file") for line in bob.out.lines), bob.report()
    await bob.expect("You received file 'a.bin' from alice.", timeout=20)
    await bob.expect("You received file 'c.bin' from carol.", timeout=20)
    await alice.expect("File a.bin sent to bob successfully.")
    await carol.expect("File c.bin sent to bob successfully.")
    assert bob.saved() == {"a.bin": from_alice, "c.bin": from_carol}


async def test_registered_member_back_online_gets_the_file(chat: Chat, tmp_path: Path) -> None:
    """A registered member keeps the membership across a reconnect, whatever spelling
    they log in with (``BOB``: shown as registered, ``bob``), and receives group files."""
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob")
    bob.send("/register")
    bob.send("bob's password")
    bob.send("bob's password")
    await bob.expect("[Name 'bob' is now registered.]")
    alice.send("/create team bob")
    await bob.expect("[You have been added to the team group]")
    await bob.close()
    password = tmp_path / "password"
    password.write_text("bob's password\n")
    upper = await spawn_client(chat, "bob", "--password-file", str(password))
    data = random_file(tmp_path / "notes.txt", 100)
    alice.send(f"/groupfile team {tmp_path / 'notes.txt'}")
    await alice.expect("File notes.txt sent to group team successfully.")
    await upper.expect("[Receive notes.txt from Group team alice]")
    assert upper.saved() == {"notes.txt": data}


async def test_unusable_download_dir_declines(chat: Chat, tmp_path: Path) -> None:
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob", "--download-dir", "taken")
    bob.downloads.write_bytes(b"a file, not a directory")
    random_file(tmp_path / "a.txt", 10)
    alice.send(f"/file bob {tmp_path / 'a.txt'}")
    await bob.expect(
        "Refused file 'a.txt' from alice: cannot write to the download directory (not a directory)."
    )
    await alice.expect("File a.txt could not be sent to bob: declined: they cannot store files.")


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="uses a stand-in xdg-open")
async def test_open_asks_first_and_never_opens_programs(
    chat: Chat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--open`` (review M10): a stored file is opened with ``xdg-open`` only when the
    user types ``/open``; a launcher, a script or an executable file is never opened;
    without ``--open`` nothing is offered."""
    opened = stand_in_opener(tmp_path, monkeypatch)
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob", "--open")
    carol = await spawn_client(chat, "carol")
    random_file(tmp_path / "pic.png", 10)
    (tmp_path / "evil.desktop").write_text("[Desktop Entry]\nExec=sh -c 'touch pwned'\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\ntouch pwned\n")
    alice.send(f"/file bob {tmp_path / 'pic.png'}")
    alice.send(f"/file carol {tmp_path / 'pic.png'}")
    await bob.expect("You received file 'pic.png' from alice.")
    await bob.expect("Type /open 1 to open 'pic.png'.")
    await carol.expect("You received file 'pic.png' from alice.")
    for name in ("evil.desktop", "run.sh"):
        alice.send(f"/file bob {tmp_path / name}")
        await bob.expect(f"You received file '{name}' from alice.")
        await bob.expect(f"Not opening '{name}': programs, scripts and launchers are never opened.")
    await asyncio.sleep(0.3)
    assert not opened.exists(), "nothing is opened before the user asks"
    bob.send("/open 1")
    assert await wait_until(opened.exists, timeout=5)
    bob.send("/open 1")
    await bob.expect("No received file is waiting to be opened (see --open).")
    await bob.close()
    await carol.close()
    assert opened.read_text().splitlines() == [str(bob.downloads / "pic.png")]


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="pauses a process with SIGSTOP")
async def test_acks_of_data_relayed_before_the_sender_left_are_not_rate_limited(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """A recipient that is behind when the sender disconnects still acknowledges the data
    already relayed to it (a window's worth: here 128 chunks, far over the rate limit's
    burst). Those late acks are flow-controlled traffic, not a flood: it stays connected."""
    async with chat_with_server_options(
        key_pair, tmp_path, "--transfer-window", str(32 * MIB), process=True
    ) as chat:
        alice = await spawn_client(chat, "alice")
        bob = await spawn_client(chat, "bob")
        sparse_file(tmp_path / "big.bin", 1024 * MIB)
        alice.send(f"/file bob {tmp_path / 'big.bin'}")
        assert await wait_until(lambda: any(p.stat().st_size > 0 for p in bob.part_files())), bob.report()
        bob.proc.send_signal(signal.SIGSTOP)  # fall behind: the server queues a full window
        try:
            await asyncio.sleep(0.5)
            await alice.kill()
        finally:
            bob.proc.send_signal(signal.SIGCONT)
        await bob.expect("Transfer of 'big.bin' from alice was aborted: the sender disconnected.", timeout=10)
        await bob.sync("bob")
        await bob.assert_no_line("[You are sending too fast; slow down.]")
        assert bob.part_files() == []
        await bob.close()
