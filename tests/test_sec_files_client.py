"""Review finding M10 on the client's side: what others can make a client download.

The review filled a victim's disk with auto-accepted files, held one descriptor per
accepted offer until the client ran out, and had files opened without any user action.
Real server and line-mode clients; the attacker is a raw protocol peer where it must
send what the command line cannot (offers with no data).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

import psutil
import pytest
from e2e_harness import HOST, Chat, ServerProcess
from files_helpers import (
    RawPeer,
    chat_with_server_options,
    random_file,
    spawn_client,
    stand_in_opener,
    wait_until,
)
from test_terminal_support import Peer, Terminal

from chat.client.app import build_parser
from chat.client.file_policy import DownloadGate, DownloadLimits, risky_content, risky_name, risky_to_open


async def _offer(peer: RawPeer, to: str, name: str, size: int) -> str:
    """Offer a file and return its transfer id (no data is sent)."""
    offered = await peer.session.request("file_offer", name=name, size=size, to=to)
    assert offered.type == "file_offered", offered
    return str(offered["id"])


async def _answer(peer: RawPeer, transfer: str) -> str:
    """``go`` if the recipient accepted, else the reason it declined."""
    async with asyncio.timeout(10):
        return await _first_answer(peer, transfer)


async def _first_answer(peer: RawPeer, transfer: str) -> str:
    while True:
        for event in peer.events:
            if event.get("id") != transfer:
                continue
            if event.type == "file_go":
                return "go"
            if event.type == "file_result":
                return str(event["failed"][0]["detail"])
        await asyncio.sleep(0.02)


def open_downloads(process: psutil.Process, downloads: Path) -> list[str]:
    """The files of the download directory that ``process`` holds open."""
    inside = os.path.realpath(downloads) + os.sep
    paths = (os.path.realpath(f.path) for f in process.open_files())
    return sorted(path for path in paths if path.startswith(inside))


async def test_the_download_quota_declines_what_would_pass_it(chat: Chat, tmp_path: Path) -> None:
    """Three files of 1,000 bytes against a quota of 2,500: two are stored, the third is
    declined and its sender told why; nothing else is written."""
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob", "--download-quota", "2500")
    for name in ("a.bin", "b.bin", "c.bin"):
        random_file(tmp_path / name, 1000)
    alice.send(f"/file bob {tmp_path / 'a.bin'}")
    await bob.expect("You received file 'a.bin' from alice.")
    alice.send(f"/file bob {tmp_path / 'b.bin'}")
    await bob.expect("You received file 'b.bin' from alice.")
    alice.send(f"/file bob {tmp_path / 'c.bin'}")
    await bob.expect("Refused file 'c.bin' from alice: it would pass your download quota of 2500 bytes.")
    await alice.expect(
        "File c.bin could not be sent to bob: declined: it would pass their download quota of 2500 bytes."
    )
    assert sorted(bob.saved()) == ["a.bin", "b.bin"]


async def test_offers_per_sender_are_rate_limited(chat: Chat, tmp_path: Path) -> None:
    """With --files-per-minute 3, a sender's fourth and fifth offers in a burst are
    declined; another sender's offer is still accepted."""
    bob = await spawn_client(chat, "bob", "--files-per-minute", "3")
    mallory = await RawPeer.login(chat, "mallory")
    ids = [await _offer(mallory, "bob", f"spam{i}.bin", 10) for i in range(5)]
    answers = [await _answer(mallory, transfer) for transfer in ids]
    assert answers == ["go"] * 3 + ["declined: mallory sent more than 3 files a minute"] * 2, answers
    await bob.expect("Refused file 'spam3.bin' from mallory: mallory sent more than 3 files a minute.")
    carol = await RawPeer.login(chat, "carol")
    assert await _answer(carol, await _offer(carol, "bob", "hello.txt", 10)) == "go"
    await mallory.close()
    await carol.close()


async def test_idle_offers_hold_no_descriptor_and_incoming_files_are_bounded(
    process_chat: Chat, tmp_path: Path
) -> None:
    """The review's descriptor exhaustion: accepted offers that never send data. The
    client creates a file only when data arrives, and past --max-incoming-files it
    declines further offers."""
    chat = process_chat
    bob = await spawn_client(chat, "bob", "--max-incoming-files", "4", "--files-per-minute", "0")
    process = psutil.Process(bob.proc.pid)
    before = process.num_fds()
    mallory = await RawPeer.login(chat, "mallory")
    ids = [await _offer(mallory, "bob", f"idle{i}.bin", 1000) for i in range(6)]
    answers = [await _answer(mallory, transfer) for transfer in ids]
    assert answers == ["go"] * 4 + ["declined: 4 files are arriving already"] * 2, answers
    assert bob.part_files() == []
    assert process.num_fds() <= before, (before, process.num_fds())
    assert open_downloads(process, bob.downloads) == []
    # The first chunk of one of them creates its file, and only that one is open.
    await mallory.session.send_unanswered("file_chunk", body=b"x" * 10, id=ids[0], offset=0)
    assert await wait_until(lambda: len(bob.part_files()) == 1, timeout=5), bob.report()
    assert open_downloads(process, bob.downloads) == [os.path.realpath(p) for p in bob.part_files()]
    await mallory.close()
    await bob.expect_prefix("Transfer of 'idle0.bin' from mallory was aborted")
    assert await wait_until(lambda: bob.part_files() == [], timeout=5)


async def test_ask_files_waits_for_accept_or_decline(chat: Chat, tmp_path: Path) -> None:
    """--ask-files: nothing is accepted until the user answers; /accept stores the file
    byte for byte, /decline tells the sender, and answering nothing is answered."""
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob", "--ask-files")
    wanted = random_file(tmp_path / "notes.txt", 3000)
    random_file(tmp_path / "junk.bin", 10)
    alice.send(f"/file bob {tmp_path / 'notes.txt'}")
    await bob.expect("alice offers file 'notes.txt' (2.9 KiB): type /accept 1 or /decline 1.")
    await asyncio.sleep(0.3)
    assert bob.saved() == {} and bob.part_files() == []
    alice.send(f"/file bob {tmp_path / 'junk.bin'}")
    await bob.expect("alice offers file 'junk.bin' (10 B): type /accept 2 or /decline 2.")
    bob.send("/decline 2")
    await bob.expect("Declined file 'junk.bin' from alice.")
    await alice.expect("File junk.bin could not be sent to bob: declined: they said no.")
    bob.send("/accept")
    await bob.expect("You received file 'notes.txt' from alice.")
    await alice.expect("File notes.txt sent to bob successfully.")
    assert bob.saved() == {"notes.txt": wanted}
    bob.send("/accept 7")
    await bob.expect("No file offer is waiting for an answer.")
    bob.send("/accept seven")
    await bob.expect("Usage: /accept [<n>]")


async def test_an_asked_offer_left_unanswered_expires(key_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """--ask-files: an offer nobody answers waits until the server's offer timeout ends
    it; the client drops it with a line, and a late /accept has nothing to answer."""
    async with chat_with_server_options(key_pair, tmp_path, "--offer-timeout", "1") as chat:
        alice = await spawn_client(chat, "alice")
        bob = await spawn_client(chat, "bob", "--ask-files")
        random_file(tmp_path / "late.txt", 100)
        alice.send(f"/file bob {tmp_path / 'late.txt'}")
        await bob.expect("alice offers file 'late.txt' (100 B): type /accept 1 or /decline 1.")
        await bob.expect("Transfer of 'late.txt' from alice was aborted: the offer expired.")
        await alice.expect("File late.txt could not be sent to bob: no answer to the offer.")
        bob.send("/accept 1")
        await bob.expect("No file offer is waiting for an answer.")
        assert bob.saved() == {} and bob.part_files() == []


async def test_asked_offers_hold_quota_until_declined_and_empty_files_work(
    chat: Chat, tmp_path: Path
) -> None:
    """--ask-files with a quota: an offer waiting for an answer holds its share of the
    quota (so waiting offers cannot together pass it), /decline gives it back; /accept
    of an empty file creates it when the transfer ends (no data ever arrives)."""
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob", "--ask-files", "--download-quota", "1500")
    for name in ("one.bin", "two.bin", "three.bin"):
        random_file(tmp_path / name, 1000)
    (tmp_path / "empty.txt").write_bytes(b"")
    alice.send(f"/file bob {tmp_path / 'one.bin'}")
    await bob.expect("alice offers file 'one.bin' (1000 B): type /accept 1 or /decline 1.")
    alice.send(f"/file bob {tmp_path / 'two.bin'}")
    await bob.expect("Refused file 'two.bin' from alice: it would pass your download quota of 1500 bytes.")
    await alice.expect(
        "File two.bin could not be sent to bob: declined: it would pass their download quota of 1500 bytes."
    )
    bob.send("/decline 5")
    await bob.expect("No file offer numbered 5 is waiting; the waiting ones: 1.")
    bob.send("/decline")
    await bob.expect("Declined file 'one.bin' from alice.")
    await alice.expect("File one.bin could not be sent to bob: declined: they said no.")
    alice.send(f"/file bob {tmp_path / 'three.bin'}")
    await bob.expect("alice offers file 'three.bin' (1000 B): type /accept 2 or /decline 2.")
    alice.send(f"/file bob {tmp_path / 'empty.txt'}")
    await bob.expect("alice offers file 'empty.txt' (0 B): type /accept 3 or /decline 3.")
    bob.send("/accept 3")
    await bob.expect("You received file 'empty.txt' from alice.")
    await alice.expect("File empty.txt sent to bob successfully.")
    bob.send("/accept 2")
    await bob.expect("You received file 'three.bin' from alice.")
    assert bob.saved() == {"empty.txt": b"", "three.bin": (tmp_path / "three.bin").read_bytes()}
    assert bob.part_files() == []


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="uses a stand-in xdg-open")
async def test_open_refuses_programs_and_asks_before_opening_others(
    chat: Chat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--open: a launcher, a script, a Windows program and a launcher disguised as a
    picture are never opened; a picture is opened only on /open, by the desktop's opener
    (here a stand-in ``xdg-open`` first on PATH that records what it was given)."""
    opened = stand_in_opener(tmp_path, monkeypatch)
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob", "--open")
    launcher = b"[Desktop Entry]\nType=Application\nExec=sh -c 'touch pwned'\n"
    files = {
        "evil.desktop": launcher, "run.sh": b"#!/bin/sh\ntouch pwned\n", "setup.EXE": b"MZ\x90\x00",
        "holiday.png": launcher,
    }  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        alice.send(f"/file bob {tmp_path / name}")
        await bob.expect(f"You received file '{name}' from alice.")
        await bob.expect(f"Not opening '{name}': programs, scripts and launchers are never opened.")
    picture = random_file(tmp_path / "pic.jpg", 500)
    alice.send(f"/file bob {tmp_path / 'pic.jpg'}")
    await bob.expect("You received file 'pic.jpg' from alice.")
    await bob.expect("Type /open 1 to open 'pic.jpg'.")
    await asyncio.sleep(0.3)
    assert not opened.exists(), "nothing is opened before the user asks"
    bob.send("/open 2")
    await bob.expect("No received file numbered 2 is waiting to be opened.")
    bob.send("/open 1")
    assert await wait_until(opened.exists, timeout=5)
    bob.send("/open")
    await bob.expect("No received file is waiting to be opened (see --open).")
    await bob.close()
    assert opened.read_text().splitlines() == [str(bob.downloads / "pic.jpg")]
    assert bob.saved()["pic.jpg"] == picture
    assert not (bob.downloads / "pwned").exists() and not Path("pwned").exists()


async def test_ask_files_on_a_terminal(
    key_pair: tuple[Path, Path], server: ServerProcess, tmp_path: Path
) -> None:
    """--ask-files in interactive mode: the offer is shown above the input line, /accept
    answers it and the file arrives byte for byte."""
    terminal = Terminal.spawn(
        [HOST, str(key_pair[1]), "--port", str(server.port), "--ask-files"],
        cwd=tmp_path / "terminal", config_dir=tmp_path / "config",
    )  # fmt: skip
    jojo = await Peer.login(server.port, key_pair[1], "jojo")
    try:
        await terminal.expect("Enter your username:")
        terminal.send("sophia\r")
        await terminal.expect("sophia>")
        data = os.urandom(3000)
        transfer = str(
            (await jojo.session.request("file_offer", name="notes.txt", size=3000, to="sophia"))["id"]
        )
        await terminal.expect("jojo offers file 'notes.txt' (2.9 KiB): type /accept 1 or /decline 1.")
        terminal.send("/accept\r")
        await jojo.wait_for(lambda e: e.type == "file_go" and e["id"] == transfer, "file_go")
        await jojo.session.send_unanswered("file_chunk", body=data, id=transfer, offset=0)
        digest = hashlib.sha256(data).hexdigest()
        assert (await jojo.session.request("file_end", id=transfer, sha256=digest)).type == "ok"
        result = await jojo.wait_for(lambda e: e.type == "file_result", "file_result")
        assert result["delivered"] == ["sophia"], result
        await terminal.expect("You received file 'notes.txt' from jojo.")
        assert (tmp_path / "terminal" / "downloads" / "notes.txt").read_bytes() == data
    finally:
        await jojo.close()
        terminal.close()


async def test_quitting_declines_the_offers_still_waiting(chat: Chat, tmp_path: Path) -> None:
    """--ask-files: /quit does not wait for the server to expire unanswered offers; they
    are declined at once and their sender told the recipient left."""
    alice = await spawn_client(chat, "alice")
    bob = await spawn_client(chat, "bob", "--ask-files")
    random_file(tmp_path / "later.txt", 100)
    alice.send(f"/file bob {tmp_path / 'later.txt'}")
    await bob.expect("alice offers file 'later.txt' (100 B): type /accept 1 or /decline 1.")
    bob.send("/quit")
    await bob.expect("Refused file 'later.txt' from alice: this client is exiting.")
    await bob.wait_clean_exit(timeout=5)
    await alice.expect("File later.txt could not be sent to bob: declined: they are leaving.")
    assert bob.saved() == {} and bob.part_files() == []


# --- what --open never opens ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "evil.desktop", "EVIL.DESKTOP", "run.sh", "setup.EXE", "a.Exe", "page.html", "x.svg",
        "macro.docm", "tool.AppImage", "link.lnk", "s.ps1", "go.command",
        # disguised: invisible, space or dot characters at the end or inside the type,
        # full-width letters
        "run.sh\u200b", "run.s\u200bh", "evil.desktop\u00a0", "a.exe.", "a.exe\u3000",
        "setup.\uff45\uff58\uff45",
    ],
)  # fmt: skip
def test_program_script_and_launcher_names_are_risky(name: str) -> None:
    assert risky_name(name)


@pytest.mark.parametrize("name", ["pic.png", "notes.txt", "report.pdf", "a.tar.gz", "exe", "shell", "x.shx"])
def test_ordinary_names_are_not_risky(name: str) -> None:
    assert not risky_name(name)


@pytest.mark.parametrize(
    "head",
    [
        b"#!/bin/sh\ntouch pwned\n", b"\x7fELF\x02\x01\x01", b"MZ\x90\x00", b"\xcf\xfa\xed\xfe\x07",
        b"[Desktop Entry]\nExec=sh -c 'touch pwned'\n", b"# comment\n[Desktop Entry]\nExec=x\n",
        b"\xef\xbb\xbf  <!DOCTYPE html><p>hi", b"<HTML><script>alert(1)</script>", b"<svg onload=x>",
        b"[InternetShortcut]\nURL=file:///bin/sh\n",
    ],
)  # fmt: skip
def test_programs_and_launchers_are_recognised_by_content(head: bytes) -> None:
    assert risky_content(head)


def test_risky_to_open_checks_name_content_and_execute_bit(tmp_path: Path) -> None:
    harmless = tmp_path / "notes.txt"
    harmless.write_bytes(b"just text\n")
    assert not risky_to_open(harmless)
    (tmp_path / "empty.txt").write_bytes(b"")
    assert not risky_to_open(tmp_path / "empty.txt")
    disguised = tmp_path / "holiday.png"
    disguised.write_bytes(b"[Desktop Entry]\nType=Application\nExec=sh -c 'touch pwned'\n")
    assert risky_to_open(disguised)
    executable = tmp_path / "data.txt"
    executable.write_bytes(b"just text\n")
    executable.chmod(0o744)
    assert risky_to_open(executable)
    assert risky_to_open(tmp_path / "gone.txt"), "what cannot be checked is not opened"
    assert risky_to_open(tmp_path), "a directory is not opened"
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.txt")
        assert risky_to_open(tmp_path / "pipe.txt"), "a FIFO is not opened (nor does the check hang)"


# --- the bounds themselves ---------------------------------------------------------------


class Clock:
    """A clock the test moves forward (the gate takes its time source as a parameter)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_charges_the_quota_and_refills_a_senders_rate() -> None:
    clock = Clock()
    gate = DownloadGate(DownloadLimits(quota=2500, per_minute=2, max_incoming=3), clock)
    assert gate.refusal("mallory", 1000, receiving=0) is None
    assert gate.refusal("mallory", 1000, receiving=1) is None
    assert gate.refusal("MALLORY", 10, receiving=2) == "MALLORY sent more than 2 files a minute"
    assert gate.refusal("carol", 1000, receiving=2) == "it would pass your download quota of 2500 bytes"
    assert gate.refusal("carol", 10, receiving=3) == "3 files are arriving already"
    gate.give_back(1000)  # one of mallory's was declined, failed or aborted
    assert gate.used == 1000
    clock.now += 29  # half a minute at 2 a minute: not yet a whole offer back
    assert gate.refusal("mallory", 10, receiving=0) == "mallory sent more than 2 files a minute"
    clock.now += 2
    assert gate.refusal("mallory", 10, receiving=0) is None
    assert gate.used == 1010


def test_a_rate_under_one_a_minute_still_lets_one_through() -> None:
    clock = Clock()
    gate = DownloadGate(DownloadLimits(quota=0, per_minute=0.5, max_incoming=0), clock)
    assert gate.refusal("alice", 1, receiving=0) is None
    assert gate.refusal("alice", 1, receiving=0) == "alice sent more than 0.5 files a minute"
    clock.now += 121
    assert gate.refusal("alice", 1, receiving=0) is None


def test_zero_means_no_bound() -> None:
    gate = DownloadGate(DownloadLimits(quota=0, per_minute=0, max_incoming=0))
    assert all(gate.refusal("alice", 1 << 40, receiving=1000) is None for _ in range(100))


def test_the_options_and_their_values() -> None:
    args = build_parser().parse_args(["host"])
    assert (args.download_quota, args.files_per_minute, args.max_incoming_files) == (1 << 30, 10, 8)
    assert not args.ask_files and not args.open
    args = build_parser().parse_args(
        ["host", "--download-quota", "512M", "--files-per-minute", "2.5", "--max-incoming-files", "0",
         "--ask-files", "--open"]
    )  # fmt: skip
    assert (args.download_quota, args.files_per_minute, args.max_incoming_files) == (512 << 20, 2.5, 0)
    assert args.ask_files and args.open
    for option, value in [
        ("--download-quota", "-1"), ("--download-quota", "lots"), ("--files-per-minute", "-1"),
        ("--files-per-minute", "nan"), ("--files-per-minute", "inf"), ("--max-incoming-files", "1.5"),
        ("--max-incoming-files", "-3"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit):
            build_parser().parse_args(["host", option, value])
