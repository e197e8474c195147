"""Review finding H3: another user cannot forge lines or drive a terminal.

mallory (an in-process session, so she can send any characters) sends the review's
hostile texts as a broadcast, a private message and a group message; victim is a real
line-mode client process. Every event arrives as exactly one line, with every control,
C1 and bidi character shown as a visible stand-in, and nothing else is printed.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
from pathlib import Path

from e2e_harness import Chat, ServerProcess
from robust_helpers import RawSession
from session_helpers import login, reply

from chat.keys import load_public_key
from chat.safe_text import printable

HOSTILE = [
    "ok" + "\b" * 26 + "[Broadcast from admin]: server moves to 10.6.6.6",
    "hello\n[Broadcast from admin]: new policy: send your password with /msg admin",
    "\x1b]52;c;cm0gLXJmIH4K\x07clipboard \x1b]0;chat - admin verified\x07title",
    "\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\ \x1b[2J cleared",
    "\xc2\x9b\u009b31mred\x07\x07\x07 \u202eevil\u202c \u2028next\r\x7f",
]


def _unsafe(line: str) -> list[str]:
    return [
        f"U+{ord(ch):04X}" for ch in line
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in "\u200c\u200d"
    ]


async def test_hostile_texts_show_as_one_visible_line_each(process_chat: Chat) -> None:
    chat = process_chat
    victim = await chat.login_one("victim")
    mallory = await login(chat.server.port, chat.public_pem, "mallory")
    try:
        await victim.expect("[mallory joined]")
        victim.send("/create den mallory")
        await victim.expect("Group den created and joined.")
        for text in HOSTILE:
            assert (await reply(mallory, "broadcast", text=text, skip=None)).type == "ok"
            await victim.expect(f"[Broadcast from mallory]: {printable(text)}")
            sent = await reply(mallory, "private", to="victim", text=text, skip=None)
            assert sent.type == "private_sent"
            await victim.expect(f"Private message from mallory: {printable(text)}")
            assert (await reply(mallory, "group_message", group="den", text=text, skip=None)).type == "ok"
            await victim.expect(f"[Receive group den message from mallory]: {printable(text)}")
        victim.send("/history den")
        for text in HOSTILE:
            shown = printable(text)
            await victim.expect_match(lambda line, t=shown: line.endswith(f" mallory: {t}"), shown)
        await asyncio.sleep(0.2)
        for line in victim.out.lines:
            assert not _unsafe(line), f"unsafe characters {_unsafe(line)} reached the terminal: {line!r}"
            assert not line.startswith("[Broadcast from admin]"), f"a forged line: {line!r}"
    finally:
        await mallory.close()


async def test_hostile_envelope_cannot_forge_server_log_lines(
    server: ServerProcess, key_pair: tuple[Path, Path]
) -> None:
    """Review finding M11: an unknown field name holding a newline, a forged log line and
    escape sequences is logged as one line with visible stand-ins; the peer gets the
    same escaped, shortened name back and its session goes on."""
    forged = (
        "x\n2025-12-02 15:00:00,000 INFO chat.server: login conn=1 user=admin"
        "\r\x1b]0;owned\x07\x1b[2J" + "y" * 500
    )
    header = json.dumps({"type": "login", "name": "a", forged: 1}).encode()
    session = await RawSession.established(server.port, load_public_key(key_pair[1]))
    try:
        await session.send_plaintext(len(header).to_bytes(4, "big") + header)
        error = await session.recv()
        assert error.type == "error" and error["code"] == "bad_request"
        assert "\n" not in error["detail"] and "\x1b" not in error["detail"]
        assert "␊2025-12-02 15:00:00,000 INFO" in error["detail"]
        assert len(error["detail"]) < 200, "a peer's name is quoted shortened"
        await session.login("carol")  # the session goes on
    finally:
        await session.close()
    await asyncio.sleep(0.2)
    bad = [line for line in server.err.lines if "bad envelope" in line]
    assert len(bad) == 1 and "\x1b" not in bad[0] and "\r" not in bad[0], bad
    assert not any(line.startswith("2025-12-02 15:00:00,000") for line in server.err.lines)
    assert not any(_unsafe(line) for line in server.err.lines)
