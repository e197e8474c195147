"""The browser client's JavaScript (chat/web) under Node: the PROTOCOL.md section 9 test
vectors and the command parser (tests/js, ``node --test``), and one session between a
Node client built from the page's modules and a terminal client, through a real server.

Without ``node`` these tests are skipped, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from local_chat import LocalChat
from tcp_proxy import TcpProxy

from chat.client.commands import Action, FileAnswer, OpenReceived, Send, SendFile, Show, parse
from chat.client.render import render
from chat.protocol.envelope import Envelope
from chat.safe_text import printable

ROOT = Path(__file__).resolve().parent.parent
JS_TESTS = ROOT / "tests" / "js"
PARSE_CASES = JS_TESTS / "parse_cases.json"
RENDER_CASES = JS_TESTS / "render_cases.json"
NODE = shutil.which("node")


def need_node() -> str:
    """The node executable (20 or later: WebCrypto with X25519), else skip or, in CI, fail."""
    problem = None
    if NODE is None:
        problem = "node is not installed"
    else:
        version = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=30).stdout
        match = re.match(r"v(\d+)\.", version)
        if match is None or int(match.group(1)) < 20:
            problem = f"node {version.strip()} is too old (20 or later is needed)"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}: CI must run the browser client's JavaScript tests")
        pytest.skip(f"{problem}: the browser client's JavaScript tests need Node 20+")
    assert NODE is not None
    return NODE


def websocket_node(node: str) -> list[str]:
    """node with a WebSocket client: built in from Node 22, behind a flag in Node 20."""
    probe = subprocess.run([node, "-p", "typeof WebSocket"], capture_output=True, text=True, timeout=30)
    return [node] if probe.stdout.strip() == "function" else [node, "--experimental-websocket"]


def test_node_tests_pass() -> None:
    """``node --test tests/js/``: vectors, records, envelopes, the parser, the renderer."""
    node = need_node()
    files = sorted(str(path) for path in JS_TESTS.glob("*.test.mjs"))
    assert len(files) >= 4
    result = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout


# --- the page's files: small, CSP-safe, text only, nothing secret stored -----------------

WEB = ROOT / "chat" / "web"


def test_page_javascript_and_css_fit_in_200_kb() -> None:
    total = sum(path.stat().st_size for path in WEB.iterdir() if path.suffix in (".js", ".css", ".html"))
    assert total < 200 * 1024, total


def test_page_has_no_inline_script_or_style_and_no_html_from_strings() -> None:
    """The Content-Security-Policy allows only the page's own files: no inline script or
    style, no eval; peer text reaches the DOM only as text (textContent)."""
    html = (WEB / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="app.js">']
    assert "<style" not in html
    assert not re.search(r"\sstyle=|\son[a-z]+=", html)
    for path in WEB.glob("*.js"):
        code = path.read_text(encoding="utf-8")
        for forbidden in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert forbidden not in code, f"{path.name} uses {forbidden}"
        for key in re.findall(r"(?:localStorage|sessionStorage)\.setItem\(([^,]+),", code):
            assert key.strip() in ("PIN_KEY", '"chat.theme"', '"chat.notifications"'), (path.name, key)
        assert "sessionStorage" not in code


# --- the parser cases: Python's parse() is the reference ---------------------------------

LINES = [
    "",
    "   ",
    "hello",
    " leading space",
    "/msg",
    "/msg bob",
    "/msg bob hi there",
    "/MSG bob  two  spaces",
    "@bob yo",
    "@bob",
    "@names",
    "@names x",
    "@help",
    "@quit",
    "@group",
    "@group set g1",
    "@group set g1 a,b c",
    "@group send g1 hi all",
    "@group leave g1",
    "@group delete g1",
    "@group foo",
    "@add g1 bob",
    "@add g1",
    "@kick g1 bob",
    "/list",
    "/list x",
    "/create",
    "/create g1",
    "/create g1 bob,carol dave",
    "/create " + "g" * 33,
    "/join g1",
    "/join",
    "/join a b",
    "/showgroups",
    "/showgroupmembers",
    "/showgroupmembers g1",
    "/showgroupmembers a b",
    "/group g1 hello",
    "/group g1",
    "/leave g1",
    "/delete g1",
    "/add g1 bob",
    "/kick g1 bob",
    "/kick g1",
    "/history",
    "/history 5",
    "/history @bob 3",
    "/history g1 0",
    "/history g1 1001",
    "/history @",
    "/history a b c",
    "/search",
    "/search two words",
    "/search " + "w" * 201,
    "/inviteonly g1 on",
    "/inviteonly g1 OFF",
    "/inviteonly g1 maybe",
    "/register",
    "/register x",
    "/passwd",
    "/file bob a.txt",
    '/file bob "my file.txt"',
    "/file bob",
    "/groupfile g1 b.bin",
    "/accept",
    "/accept 2",
    "/accept x",
    "/decline",
    "/decline 1234567890",
    "/open",
    "/open 3",
    "/help",
    "/help me",
    "/quit",
    "/nope",
    "/msg " + "u" * 33 + " hi",
    "/group " + "g" * 33 + " hi",
    "x" * 4097,
    "/msg bob " + "y" * 4097,
    "/add " + "g" * 33 + " bob",
    "/add g1 " + "u" * 33,
    "Grüße 👋",
]


def as_json(parsed: Any) -> Any:
    if parsed is None:
        return None
    if isinstance(parsed, Send):
        return {"kind": "send", "type": parsed.kind, "fields": parsed.fields}
    if isinstance(parsed, Show):
        return {"kind": "show", "lines": list(parsed.lines)}
    if isinstance(parsed, Action):
        return {"kind": "action", "action": parsed.value}
    if isinstance(parsed, SendFile):
        return {"kind": "file", "target": parsed.target, "path": parsed.path, "group": parsed.group}
    if isinstance(parsed, FileAnswer):
        return {"kind": "answer", "accept": parsed.accept, "number": parsed.number}
    assert isinstance(parsed, OpenReceived)
    return {"kind": "open", "number": parsed.number}


def parse_cases() -> list[dict[str, Any]]:
    return [{"line": line, "expect": as_json(parse(line))} for line in LINES]


def test_parse_cases_are_what_the_terminal_client_parses() -> None:
    """tests/js/parse_cases.json (which the Node tests check commands.js against) is
    exactly what chat/client/commands.py makes of each line. Run this file as a script
    to write it again after a deliberate change."""
    assert json.loads(PARSE_CASES.read_text(encoding="utf-8")) == parse_cases()


# --- the renderer's cases: Python's render() and printable() are the reference -------------

EVENTS: list[dict[str, Any]] = [
    {"type": "ok"},
    {"type": "welcome", "name": "alice"},
    {"type": "user_joined", "names": ["a", "b"]},
    {"type": "user_exited", "names": ["a"]},
    {"type": "user_list", "users": ["a", "b", "c"], "registered": ["b"]},
    {"type": "user_list", "users": ["a"], "more": 1234},
    {"type": "broadcast", "sender": "bob", "text": "hi"},
    {"type": "private", "sender": "bob", "text": "yo"},
    {"type": "private_sent", "to": "bob", "text": "yo"},
    {"type": "private_queued", "to": "bob", "text": "later"},
    {"type": "group_created", "group": "g1"},
    {"type": "group_added", "group": "g1"},
    {"type": "group_joined", "group": "g1"},
    {"type": "member_joined", "group": "g1", "name": "bob"},
    {"type": "group_list", "groups": ["g1", "g2"]},
    {"type": "group_list", "groups": []},
    {"type": "group_list", "groups": ["g"], "more": 5},
    {"type": "group_invite_only", "group": "g1", "on": True},
    {"type": "group_invite_only", "group": "g1", "on": False},
    {"type": "group_members", "groups": [{"group": "g1", "members": ["a", "b"], "registered": ["a"]}]},
    {
        "type": "group_members",
        "groups": [{"group": "g1", "members": ["a"]}, {"group": "g2", "members": ["b", "c"]}],
        "more": 2,
    },
    {"type": "group_members", "groups": []},
    {"type": "group_message", "group": "g1", "sender": "bob", "text": "hello"},
    {"type": "group_left", "group": "g1"},
    {"type": "member_left", "group": "g1", "name": "bob"},
    {"type": "group_delete_done", "group": "g1"},
    {"type": "group_deleted", "group": "g1"},
    {"type": "missed", "count": 3},
    {"type": "group_removed", "group": "g1"},
    {"type": "member_added", "group": "g1", "name": "bob"},
    {"type": "member_removed", "group": "g1", "name": "bob"},
    {"type": "notice", "code": "too_fast"},
    {"type": "notice", "code": "shutdown"},
    {"type": "notice", "code": "cluster_lost"},
    {"type": "notice", "code": "cluster_back"},
    {"type": "notice", "code": "brand_new"},
    {"type": "notice", "code": "brand_new", "detail": "why"},
    {"type": "registered", "name": "alice"},
    {"type": "password_changed"},
    {"type": "history", "target": "*", "messages": []},
    {"type": "history", "target": "@bob", "messages": []},
    {"type": "group_history", "group": "g1", "messages": []},
    {"type": "search_results", "words": "x y", "results": []},
    {"type": "unread", "groups": [{"group": "g1", "count": 1234}]},
    {"type": "replayed", "count": 3},
    {"type": "replayed", "count": 3, "lost": 2000},
    {"type": "offline_page", "upto": 5, "more": 0},
    {"type": "brand_new_event"},
    {"type": "error", "code": "user_not_online", "users": ["bob"]},
    {"type": "error", "code": "user_not_online", "users": ["bob", "carol"]},
    {"type": "error", "code": "user_not_online"},
    {"type": "error", "code": "not_member", "group": "g1"},
    {"type": "error", "code": "not_member", "group": "g1", "user": "bob"},
    {"type": "error", "code": "already_member", "group": "g1", "user": "bob"},
    {"type": "error", "code": "username_invalid", "name": "x y", "detail": "it has a space."},
    {"type": "error", "code": "username_invalid", "name": "x"},
    {"type": "error", "code": "too_many_groups", "limit": 100},
    {"type": "error", "code": "too_many_groups", "limit": 100, "user": "bob"},
    {"type": "error", "code": "bad_request", "detail": "nope"},
    {"type": "error", "code": "bad_request"},
    {"type": "error", "code": "bad_transfer", "detail": "late"},
    {"type": "error", "code": "password_required", "name": "a"},
    {"type": "error", "code": "who_knows"},
    {"type": "error", "code": "who_knows", "detail": "d"},
    *(
        {"type": "error", "code": code, "name": "nm", "group": "gr", "user": "us", "limit": 7}
        for code in (
            "not_logged_in",
            "already_logged_in",
            "username_taken",
            "username_reserved",
            "registration_required",
            "no_such_group",
            "group_exists",
            "invalid_group_name",
            "not_owner",
            "kicked",
            "cannot_kick_self",
            "too_many_invitations",
            "too_many_owned_groups",
            "creating_groups_too_fast",
            "invite_only",
            "wrong_password",
            "too_many_attempts",
            "already_registered",
            "not_registered",
            "weak_password",
            "mailbox_full",
            "mailbox_share_full",
            "file_too_large",
            "no_recipients",
            "too_many_transfers",
            "internal_error",
            "network_too_fast",
            "server_busy",
            "too_many_registrations",
        )
    ),
]

HOSTILE = [
    "plain",
    "tab\there",
    "new\nline",
    "\x1b[31mred",
    "bell\x07",
    "rtl\u202eevil",
    "zwj\u200dok",
    "soft\u00adhyphen",
    "del\x7f",
    "private\ue000use",
    "emoji 👋 ünï",
    "c1\x85x",
    "tag\U000e0041",
]


def render_cases() -> dict[str, Any]:
    events = []
    for event in EVENTS:
        fields = {k: v for k, v in event.items() if k != "type"}
        events.append({"event": event, "lines": render(Envelope(event["type"], fields))})
    return {"events": events, "printable": [[text, printable(text)] for text in HOSTILE]}


def test_render_cases_are_what_the_terminal_client_shows() -> None:
    """tests/js/render_cases.json (which the Node tests check render.js against) is what
    chat/client/render.py and chat/safe_text.py make of each event and string."""
    assert json.loads(RENDER_CASES.read_text(encoding="utf-8")) == render_cases()


# --- a web client and a terminal client through a real server -----------------------------


class NodeClient:
    """A Node client script of tests/js as a child process; its lines are JSON strings."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def expect(self, line: str, timeout: float = 10) -> None:
        assert self.process.stdout is not None
        while line not in self.lines:
            raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not raw:
                err = b""
                if self.process.stderr is not None:
                    err = await self.process.stderr.read()
                raise AssertionError(f"node ended before {line!r}: {self.lines} {err.decode()[-2000:]}")
            self.lines.append(json.loads(raw))
        self.lines.remove(line)

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    @classmethod
    async def start(cls, node: str, script: str, url: str, public_pem: Path, *args: str) -> NodeClient:
        """``script`` of tests/js logging in as ``webby`` at ``url``."""
        process = await asyncio.create_subprocess_exec(
            *websocket_node(node), str(JS_TESTS / script), url, str(public_pem), "webby", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )  # fmt: skip
        return cls(process)

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def test_web_client_and_terminal_client_chat(chat: LocalChat, key_pair: tuple[Path, Path]) -> None:
    node = need_node()
    alice = await chat.login_one("alice")
    url = f"ws://127.0.0.1:{chat.server.port}/"
    web = await NodeClient.start(node, "interop_client.mjs", url, key_pair[1])
    try:
        await web.expect("READY")
        await web.expect("[Welcome webby]")
        await alice.expect("[webby joined]")
        web.type("Hello from the browser, ünïcode 👋")
        await alice.expect("[Broadcast from webby]: Hello from the browser, ünïcode 👋")
        alice.send("hi web")
        await web.expect("[Broadcast from alice]: hi web")
        web.type("/msg alice just for you")
        await web.expect("Private message to alice: just for you")
        await alice.expect("Private message from webby: just for you")
        alice.send("/msg webby and back")
        await web.expect("Private message from alice: and back")
        web.type("/create room alice")
        await web.expect("Group room created and joined.")
        await alice.expect("[You have been added to the room group]")
        web.type("/group room <b>not bold</b>")
        await alice.expect("[Receive group room message from webby]: <b>not bold</b>")
        web.type("/msg")
        await web.expect("Usage: /msg <username> <message>")
        web.type("/quit")
        await web.expect("CLOSED 1000")
        await alice.expect("[webby exited]")
        assert await asyncio.wait_for(web.process.wait(), 10) == 0
    finally:
        await web.close()


async def test_web_session_resumes_after_a_lost_connection(
    chat: LocalChat, key_pair: tuple[Path, Path]
) -> None:
    """chat/web/session.js: the connection is cut; the page reconnects, resumes with its
    token and shows what was said meanwhile exactly once, and sends what was typed."""
    node = need_node()
    alice = await chat.login_one("alice")
    proxy = TcpProxy(chat.server.port)
    port = await proxy.start()
    web = await NodeClient.start(node, "session_client.mjs", f"ws://127.0.0.1:{port}/", key_pair[1])
    try:
        await web.expect("[Welcome webby]")
        await alice.expect("[webby joined]")
        alice.send("before")
        await web.expect("[Broadcast from alice]: before")
        proxy.cut()
        alice.send("while away")
        await web.expect("Reconnected as webby.", timeout=15)
        await web.expect("[Broadcast from alice]: while away")
        web.type("back again")
        await alice.expect("[Broadcast from webby]: back again")
        alice.send("after")
        await web.expect("[Broadcast from alice]: after")
        shown = [line for line in web.lines if "Broadcast" in line]
        assert shown == [], shown  # nothing shown twice
        # The page going away (reload) quits at once with the quit sealed in advance:
        # the name is free now, not kept for a resume that cannot come.
        web.type("!leave")
        await web.expect("LEFT")
        await alice.expect("[webby exited]")
        alice.send("/list")
        await alice.expect("alice")
    finally:
        await web.close()
        await proxy.close()


async def test_web_files_with_a_terminal_client(
    chat: LocalChat, key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """chat/web/files.js through a real server: a file of several chunks sent within the
    window to a terminal user, one received from it after the size and SHA-256 check, and
    one to a group; bytes compared on both sides."""
    node = need_node()
    alice = await chat.login_one("alice")
    downloads = tmp_path / "web downloads"
    downloads.mkdir()
    url = f"ws://127.0.0.1:{chat.server.port}/"
    web = await NodeClient.start(node, "session_client.mjs", url, key_pair[1], str(downloads))
    try:
        await web.expect("[Welcome webby]")
        await alice.expect("[webby joined]")
        outgoing = tmp_path / "from-web.bin"
        data = os.urandom(700_000)  # three chunks of at most 256 KiB
        outgoing.write_bytes(data)
        web.type(f"!sendfile alice {outgoing}")
        await web.expect("PROGRESS Sending from-web.bin to alice")
        await alice.expect("You received file 'from-web.bin' from webby.", timeout=15)
        await web.expect("File from-web.bin sent to alice successfully.", timeout=15)
        assert (alice.cwd / "downloads" / "from-web.bin").read_bytes() == data  # type: ignore[attr-defined]

        incoming = tmp_path / "to wéb ✓.txt"
        text = ("naïve café ✓\n" * 30_000).encode()
        incoming.write_bytes(text)
        alice.send(f"/file webby {incoming}")
        await web.expect("PROGRESS Receiving to wéb ✓.txt from alice")
        await web.expect("You received file 'to wéb ✓.txt' from alice.", timeout=15)
        await alice.expect(f"File {incoming.name} sent to webby successfully.", timeout=15)
        await web.expect(f"SAVED {incoming.name}")
        assert (downloads / incoming.name).read_bytes() == text

        web.type("/create team alice")
        await web.expect("Group team created and joined.")
        await alice.expect("[You have been added to the team group]")
        small = tmp_path / "plan.txt"
        small.write_bytes(b"the plan\n")
        web.type(f"!sendfile #team {small}")
        await alice.expect("[Receive plan.txt from Group team webby]", timeout=15)
        await web.expect("File plan.txt sent to group team successfully.", timeout=15)
    finally:
        await web.close()


if __name__ == "__main__":
    PARSE_CASES.write_text(json.dumps(parse_cases(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    RENDER_CASES.write_text(json.dumps(render_cases(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {PARSE_CASES} and {RENDER_CASES}")
