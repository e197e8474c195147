"""The interactive client in a real pseudo-terminal (README "Connect a client"): incoming lines do not
break what is being typed, Tab completes names, Up recalls history, colours by kind of
line (off with NO_COLOR), timestamps, and a --help a newcomer can follow."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_harness import HOST, ServerProcess
from test_terminal_support import UP, Peer, Terminal

from chat.client.app import main
from chat.protocol.envelope import Envelope

Spawn = Callable[..., Terminal]
#: An SGR sequence that sets the foreground to red (ANSI colour 31), among other attributes.
RED = re.compile(r"\x1b\[(?:[0-9]+;)*31(?:;[0-9]+)*m")


@pytest.fixture
def terminals(tmp_path: Path, key_pair: tuple[Path, Path], server: ServerProcess) -> Iterator[Spawn]:
    """Start terminal clients of the test's server (with its key file given)."""
    started: list[Terminal] = []

    def spawn(*extra: str, colour: bool = False) -> Terminal:
        args = [HOST, str(key_pair[1]), "--port", str(server.port), *extra]
        terminal = Terminal.spawn(
            args, cwd=tmp_path / f"terminal{len(started)}", config_dir=tmp_path / "config", colour=colour
        )
        started.append(terminal)
        return terminal

    yield spawn
    for terminal in started:
        terminal.close()


@pytest.fixture
async def peers(server: ServerProcess, key_pair: tuple[Path, Path]):  # type: ignore[no-untyped-def]
    """Log in other users as in-process sessions."""
    made: list[Peer] = []

    async def login(name: str) -> Peer:
        peer = await Peer.login(server.port, key_pair[1], name)
        made.append(peer)
        return peer

    yield login
    for peer in made:
        await peer.close()


async def log_in(terminal: Terminal, name: str) -> None:
    await terminal.expect("Enter your username:")  # (a trailing space is drawn as a cursor move)
    terminal.send(name + "\r")
    await terminal.expect(f"[Welcome {name}]")
    await terminal.expect(f"{name}>")


def broadcast_from(sender: str) -> Callable[[Envelope], bool]:
    return lambda event: event.type == "broadcast" and event.get("sender") == sender


async def test_typing_while_messages_arrive_keeps_the_half_typed_line(terminals: Spawn, peers) -> None:  # type: ignore[no-untyped-def]
    jojo = await peers("jojo")
    sophia = terminals()
    await log_in(sophia, "sophia")
    sophia.send("hello wor")
    await sophia.expect("hello wor")
    await jojo.request("broadcast", text="ping from jojo")
    # The incoming line is printed above the input line, which is drawn again as it was.
    await sophia.expect("[Broadcast from jojo]: ping from jojo")
    await sophia.expect("sophia> hello wor")
    sophia.send("ld\r")
    event = await jojo.wait_for(broadcast_from("sophia"), "sophia's broadcast")
    assert event["text"] == "hello world"


async def test_tab_completes_online_names_and_groups(terminals: Spawn, peers) -> None:  # type: ignore[no-untyped-def]
    jojo = await peers("jojo")
    await jojo.request("group_create", group="haha")
    await jojo.wait_for(lambda e: e.type == "group_created", "group created")
    sophia = terminals()
    await log_in(sophia, "sophia")
    # jojo and haha were there before sophia logged in: the client learnt of them by
    # asking quietly at login. The server answers in order, so once the error line of
    # a later command shows, those replies are in: they must not have been printed.
    sophia.send("/list\r")
    sophia.send("/msg nobody sync\r")
    await sophia.expect("User 'nobody' is not online.")
    assert sophia.text.count("jojo, sophia") == 1
    # ("sophia>" may precede a line: the prompt is erased by cursor moves, not a newline.)
    assert re.search(r"(^|>)haha\r*$", sophia.text, re.M) is None
    # Keys go in as typed; what was completed shows in what arrives: "/msg jo" alone
    # would be a message "are you there?" to a user "jo".
    sophia.send("/msg jo\t")
    sophia.send(" are you there?\r")
    await sophia.expect("Private message to jojo: are you there?")
    event = await jojo.wait_for(lambda e: e.type == "private", "sophia's private message")
    assert (event["sender"], event["text"]) == ("sophia", "are you there?")
    sophia.send("/jo\t ha\t\r")
    await sophia.expect("Joined group haha")


async def test_up_recalls_history_and_timestamps_are_shown(terminals: Spawn, peers) -> None:  # type: ignore[no-untyped-def]
    jojo = await peers("jojo")
    sophia = terminals("--timestamps")
    await log_in(sophia, "sophia")
    assert re.search(r"\d\d:\d\d \[Welcome sophia\]", sophia.text), sophia.text
    for text in ("first message", "second message"):
        sophia.send(text + "\r")
        assert (await jojo.wait_for(broadcast_from("sophia"), text))["text"] == text
    sophia.send(UP + UP)
    await sophia.expect("first message")
    sophia.send("\r")
    assert (await jojo.wait_for(broadcast_from("sophia"), "the recalled line"))["text"] == "first message"


@pytest.mark.parametrize("colour", [True, False], ids=["colour", "NO_COLOR"])
async def test_error_lines_are_red_unless_no_color(terminals: Spawn, colour: bool) -> None:
    sophia = terminals(colour=colour)
    await log_in(sophia, "sophia")
    line = "User 'nobody' is not online."
    sophia.send("/msg nobody hello\r")
    await sophia.expect(line)
    start = sophia.raw.rindex(line)
    before = sophia.raw[max(0, start - 40) : start]
    assert bool(RED.search(before)) is colour, repr(before)


def test_help_explains_every_option_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--port", "--username", "--fingerprint", "--accept-new-key", "--no-color",
                   "--timestamps", "--download-dir", "--password-file", "--open"):  # fmt: skip
        assert option in text
    assert "examples:" in text and "exit status:" in text
    assert "trust" in text and "known_servers" in text
