"""parse(): every command form, alias, usage line and local check (README "Commands")."""

from __future__ import annotations

import pytest

from chat.client.commands import (
    COMMAND_WORDS,
    COMMANDS,
    Action,
    Send,
    SendFile,
    Show,
    help_lines,
    parse,
)
from chat.protocol.envelope import decode_request, encode_request
from chat.protocol.limits import MAX_TEXT_CHARS

LONG_NAME = "n" * 33
OK_NAME = "n" * 32
GROUP_RULE = "use 1-32 letters, digits, '_', '-' or '.'"


def show(text: str) -> Show:
    return Show((text,))


REQUESTS: list[tuple[str, Send]] = [
    # broadcast: the line exactly, inner and outer spacing kept
    ("hello", Send("broadcast", {"text": "hello"})),
    ("hello   big  world ", Send("broadcast", {"text": "hello   big  world "})),
    (" indented", Send("broadcast", {"text": " indented"})),
    ("a/b @c", Send("broadcast", {"text": "a/b @c"})),
    ("x" * MAX_TEXT_CHARS, Send("broadcast", {"text": "x" * MAX_TEXT_CHARS})),
    # private
    ("/msg bob hi", Send("private", {"to": "bob", "text": "hi"})),
    ("/msg bob   How  are you? ", Send("private", {"to": "bob", "text": "How  are you? "})),
    ("/MSG Bob hi", Send("private", {"to": "Bob", "text": "hi"})),
    ("/msg\tbob\thi", Send("private", {"to": "bob", "text": "hi"})),
    ("@bob hi", Send("private", {"to": "bob", "text": "hi"})),
    (
        "@Stella Are you free next  Tuesday?",
        Send("private", {"to": "Stella", "text": "Are you free next  Tuesday?"}),
    ),
    ("@bob /not a command", Send("private", {"to": "bob", "text": "/not a command"})),
    ("@namesake hi", Send("private", {"to": "namesake", "text": "hi"})),
    (f"/msg {OK_NAME} hi", Send("private", {"to": OK_NAME, "text": "hi"})),
    # list
    ("/list", Send("list")),
    ("/LIST", Send("list")),
    ("/list   ", Send("list")),
    ("@names", Send("list")),
    ("@NAMES", Send("list")),
    # group_create
    ("/create g1", Send("group_create", {"group": "g1"})),
    ("/create g1 bob", Send("group_create", {"group": "g1", "members": ["bob"]})),
    ("/create g1 bob,carol", Send("group_create", {"group": "g1", "members": ["bob", "carol"]})),
    ("/create g1 bob, carol,,", Send("group_create", {"group": "g1", "members": ["bob", "carol"]})),
    ("/create g1 bob carol", Send("group_create", {"group": "g1", "members": ["bob", "carol"]})),
    ("/create g1 ,", Send("group_create", {"group": "g1"})),
    ("/Create g1", Send("group_create", {"group": "g1"})),
    ("@group set g1 bob,carol", Send("group_create", {"group": "g1", "members": ["bob", "carol"]})),
    ("@group set g1 , bob ,", Send("group_create", {"group": "g1", "members": ["bob"]})),
    ("@GROUP SET g1 bob", Send("group_create", {"group": "g1", "members": ["bob"]})),
    (f"/create {OK_NAME}", Send("group_create", {"group": OK_NAME})),
    # group_join, group_list, group_members
    ("/join g1", Send("group_join", {"group": "g1"})),
    ("/join  g1  ", Send("group_join", {"group": "g1"})),
    ("/showgroups", Send("group_list")),
    ("/ShowGroups", Send("group_list")),
    ("/showgroupmembers", Send("group_members")),
    ("/showgroupmembers g1", Send("group_members", {"group": "g1"})),
    # group_message
    ("/group g1 Hello there!", Send("group_message", {"group": "g1", "text": "Hello there!"})),
    ("/group g1   spaced   out", Send("group_message", {"group": "g1", "text": "spaced   out"})),
    ("@group send g1 Hello  there", Send("group_message", {"group": "g1", "text": "Hello  there"})),
    ("@group Send g1 hi", Send("group_message", {"group": "g1", "text": "hi"})),
    # leave, delete
    ("/leave g1", Send("group_leave", {"group": "g1"})),
    ("@group leave g1", Send("group_leave", {"group": "g1"})),
    ("/delete g1", Send("group_delete", {"group": "g1"})),
    ("@group delete g1", Send("group_delete", {"group": "g1"})),
    # add, kick
    ("/add g1 bob", Send("group_add", {"group": "g1", "user": "bob"})),
    ("@add g1 bob", Send("group_add", {"group": "g1", "user": "bob"})),
    ("/kick g1 bob", Send("group_kick", {"group": "g1", "user": "bob"})),
    ("@kick g1 bob", Send("group_kick", {"group": "g1", "user": "bob"})),
    ("@KICK g1 bob", Send("group_kick", {"group": "g1", "user": "bob"})),
    ("/history g1", Send("history", {"target": "g1"})),
    ("/history g1 5", Send("history", {"target": "g1", "limit": 5})),
    ("/history", Send("history", {"target": "*"})),
    ("/history 30", Send("history", {"target": "*", "limit": 30})),
    ("/history * 30", Send("history", {"target": "*", "limit": 30})),
    ("/history @Bob", Send("history", {"target": "@Bob"})),
    ("/history @bob 7", Send("history", {"target": "@bob", "limit": 7})),
    ("/search deploy  friday", Send("search", {"words": "deploy  friday"})),
    ("/search 部署", Send("search", {"words": "部署"})),
]


@pytest.mark.parametrize(("line", "expected"), REQUESTS)
def test_requests(line: str, expected: Send) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(("line", "expected"), REQUESTS)
def test_every_parsed_request_encodes(line: str, expected: Send) -> None:
    request = parse(line)
    assert isinstance(request, Send)
    decoded = decode_request(encode_request(request.kind, rid=1, **request.fields))
    assert decoded.type == expected.kind


@pytest.mark.parametrize(
    ("line", "action"),
    [
        ("/help", Action.HELP),
        ("/HELP", Action.HELP),
        ("@help", Action.HELP),
        ("/quit", Action.QUIT),
        ("/Quit", Action.QUIT),
        ("@quit", Action.QUIT),
        ("@QUIT ", Action.QUIT),
        ("/register", Action.REGISTER),
        ("/passwd", Action.PASSWD),
    ],
)
def test_local_actions(line: str, action: Action) -> None:
    assert parse(line) is action


@pytest.mark.parametrize("line", ["", " ", "   \t "])
def test_blank_lines_do_nothing(line: str) -> None:
    assert parse(line) is None


USAGE: list[tuple[str, str]] = [
    ("/msg", "Usage: /msg <username> <message>"),
    ("/msg bob", "Usage: /msg <username> <message>"),
    ("/msg bob   ", "Usage: /msg <username> <message>"),
    ("@bob", "Usage: @<username> <message>"),
    ("@bob  ", "Usage: @<username> <message>"),
    ("@", "Usage: @<username> <message>"),
    ("@ hi", "Usage: @<username> <message>"),
    ("/list now", "Usage: /list"),
    ("@names all", "Usage: @names"),
    ("/showgroups x", "Usage: /showgroups"),
    ("/help me", "Usage: /help"),
    ("@help me", "Usage: @help"),
    ("/quit now", "Usage: /quit"),
    ("@quit now", "Usage: @quit"),
    ("/create", "Usage: /create <group> [<user1,user2,...>]"),
    ("@group set", "Usage: @group set <group> <user1,user2,...>"),
    ("@group set g1", "Usage: @group set <group> <user1,user2,...>"),
    ("@group set g1 ,,", "Usage: @group set <group> <user1,user2,...>"),
    ("/join", "Usage: /join <group>"),
    ("/join a b", "Usage: /join <group>"),
    ("/showgroupmembers a b", "Usage: /showgroupmembers [<group>]"),
    ("/group", "Usage: /group <group> <message>"),
    ("/group g1", "Usage: /group <group> <message>"),
    ("@group send g1", "Usage: @group send <group> <message>"),
    ("@group send", "Usage: @group send <group> <message>"),
    ("/leave", "Usage: /leave <group>"),
    ("/leave a b", "Usage: /leave <group>"),
    ("@group leave", "Usage: @group leave <group>"),
    ("@group leave a b", "Usage: @group leave <group>"),
    ("/delete", "Usage: /delete <group>"),
    ("@group delete", "Usage: @group delete <group>"),
    ("@group delete a b", "Usage: @group delete <group>"),
    ("/add", "Usage: /add <group> <username>"),
    ("/add g1", "Usage: /add <group> <username>"),
    ("/add g1 bob carol", "Usage: /add <group> <username>"),
    ("@add g1", "Usage: @add <group> <username>"),
    ("/kick g1", "Usage: /kick <group> <username>"),
    ("@kick", "Usage: @kick <group> <username>"),
    ("@kick g1 a b", "Usage: @kick <group> <username>"),
    ("/file", "Usage: /file <username> <path>"),
    ("/file bob", "Usage: /file <username> <path>"),
    ("/groupfile", "Usage: /groupfile <group> <path>"),
    ("/groupfile g1", "Usage: /groupfile <group> <path>"),
    ("@group", "Usage: @group set|send|leave|delete <group> ..."),
    ("@group foo g1", "Usage: @group set|send|leave|delete <group> ..."),
    ("@group   ", "Usage: @group set|send|leave|delete <group> ..."),
    ("/history g1 2 3", "Usage: /history [* | @<username> | <group>] [<count>]"),
    ("/history @", "Usage: /history [* | @<username> | <group>] [<count>]"),
    ("/search", "Usage: /search <words>"),
    ("/search " + "w" * 201, "Search for fewer words (at most 200 characters)."),
    ("/history g1 0", "The count must be a number from 1 to 1000."),
    ("/history g1 many", "The count must be a number from 1 to 1000."),
    ("/register now", "Usage: /register"),
    ("/passwd x", "Usage: /passwd"),
]


@pytest.mark.parametrize(("line", "usage"), USAGE)
def test_usage_lines(line: str, usage: str) -> None:
    assert parse(line) == show(usage)


@pytest.mark.parametrize("line", ["/foo", "/foo bar", "/", "//x", "/msgs bob hi"])
def test_unknown_command(line: str) -> None:
    word = line.split()[0]
    assert parse(line) == show(f"Unknown command '{word}'. Type /help for the list of commands.")


def test_unknown_command_keeps_its_spelling() -> None:
    assert parse("/FOO") == show("Unknown command '/FOO'. Type /help for the list of commands.")


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("/file bob example.txt", SendFile("bob", "example.txt")),
        ("/file bob my docs/a b.txt", SendFile("bob", "my docs/a b.txt")),
        ("/file bob   spaced.txt  ", SendFile("bob", "spaced.txt")),
        ('/file bob "my docs/a b.txt"', SendFile("bob", "my docs/a b.txt")),
        ("/file bob '/tmp/x y'", SendFile("bob", "/tmp/x y")),
        ("/file bob ~/notes.txt", SendFile("bob", "~/notes.txt")),
        ("/FILE bob x", SendFile("bob", "x")),
        ("/groupfile g1 file.txt", SendFile("g1", "file.txt", group=True)),
        ("/GroupFile g1 a b", SendFile("g1", "a b", group=True)),
    ],
)
def test_file_commands(line: str, parsed: SendFile) -> None:
    assert parse(line) == parsed


@pytest.mark.parametrize(
    ("line", "usage"),
    [
        ("/file bob ''", "Usage: /file <username> <path>"),
        ('/groupfile g1 ""', "Usage: /groupfile <group> <path>"),
    ],
)
def test_file_commands_need_a_path(line: str, usage: str) -> None:
    assert parse(line) == show(usage)


def test_file_commands_check_names_locally() -> None:
    assert parse(f"/file {LONG_NAME} x") == show(f"User '{LONG_NAME}' is not online.")
    assert parse(f"/groupfile {LONG_NAME} x") == show(f"Group '{LONG_NAME}' does not exist.")


TOO_LONG = "x" * (MAX_TEXT_CHARS + 1)


@pytest.mark.parametrize(
    "line",
    [
        TOO_LONG,
        f"/msg bob {TOO_LONG}",
        f"@bob {TOO_LONG}",
        f"/group g1 {TOO_LONG}",
        f"@group send g1 {TOO_LONG}",
    ],
)
def test_text_too_long(line: str) -> None:
    assert parse(line) == show("Message too long (limit 4096 characters).")


@pytest.mark.parametrize(
    "line",
    [
        f"/msg {LONG_NAME} hi",
        f"@{LONG_NAME} hi",
        f"/add g1 {LONG_NAME}",
        f"@add g1 {LONG_NAME}",
        f"/kick g1 {LONG_NAME}",
        f"@kick g1 {LONG_NAME}",
        f"/create g1 bob,{LONG_NAME}",
        f"@group set g1 {LONG_NAME}",
    ],
)
def test_user_name_too_long(line: str) -> None:
    assert parse(line) == show(f"User '{LONG_NAME}' is not online.")


@pytest.mark.parametrize(
    "line",
    [
        f"/join {LONG_NAME}",
        f"/showgroupmembers {LONG_NAME}",
        f"/group {LONG_NAME} hi",
        f"@group send {LONG_NAME} hi",
        f"/leave {LONG_NAME}",
        f"@group leave {LONG_NAME}",
        f"/delete {LONG_NAME}",
        f"@group delete {LONG_NAME}",
        f"/add {LONG_NAME} bob",
        f"@kick {LONG_NAME} bob",
    ],
)
def test_group_name_too_long(line: str) -> None:
    assert parse(line) == show(f"Group '{LONG_NAME}' does not exist.")


@pytest.mark.parametrize(
    "line", [f"/create {LONG_NAME}", f"/create {LONG_NAME} bob", f"@group set {LONG_NAME} bob"]
)
def test_create_group_name_too_long(line: str) -> None:
    assert parse(line) == show(f"Invalid group name '{LONG_NAME}': {GROUP_RULE}.")


def test_too_many_members() -> None:
    members = ",".join(f"u{i}" for i in range(1025))
    assert parse(f"/create g1 {members}") == show("Too many users (limit 1024).")


def test_help_has_one_line_per_command_with_aliases() -> None:
    lines = help_lines()
    assert len(lines) == len(COMMANDS)
    text = "\n".join(lines)
    for syntax in [
        "/msg <username> <message>",
        "@<username> <message>",
        "/list",
        "@names",
        "/create <group> [<user1,user2,...>]",
        "@group set <group> <user1,user2,...>",
        "/join <group>",
        "/showgroups",
        "/showgroupmembers [<group>]",
        "/group <group> <message>",
        "@group send <group> <message>",
        "/leave <group>",
        "@group leave <group>",
        "/delete <group>",
        "@group delete <group>",
        "/add <group> <username>",
        "@add <group> <username>",
        "/kick <group> <username>",
        "@kick <group> <username>",
        "/file <username> <path>",
        "/groupfile <group> <path>",
        "/help",
        "@help",
        "/quit",
        "@quit",
    ]:
        assert syntax in text
    assert all(len(line) <= 120 for line in lines)


def test_every_command_word_parses_as_a_command() -> None:
    """No word in the completion list falls through to broadcast or unknown-command."""
    for word in COMMAND_WORDS:
        result = parse(word)
        assert not (isinstance(result, Send) and result.kind in ("broadcast", "private")), word
        assert not (isinstance(result, Show) and result.lines[0].startswith("Unknown")), word
