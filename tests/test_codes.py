"""The registry of wire codes (chat/protocol/codes.py): every code the server can send has
a line in the client and an entry in PROTOCOL.md, so another implementation can render
the same words and a new code cannot be added halfway."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chat.client.render import ERRORS, NOTICES, render
from chat.protocol.codes import CloseCode, ErrorCode, NoticeCode
from chat.protocol.envelope import Envelope
from chat.protocol.errors import HandshakeErrorCode

REPO = Path(__file__).resolve().parent.parent
PROTOCOL = (REPO / "PROTOCOL.md").read_text(encoding="utf-8")
SAMPLE = {"name": "bob", "group": "team", "user": "bob", "users": ["bob"], "limit": 3, "detail": "why"}


def _section(title: str) -> str:
    """The text of PROTOCOL.md's section whose heading starts with ``title``."""
    heading = f"\n### {title}" if f"\n### {title}" in PROTOCOL else f"\n## {title}"
    start = PROTOCOL.index(heading)
    following = re.search(r"\n##+ ", PROTOCOL[start + 4 :])
    return PROTOCOL[start : start + 4 + following.start()] if following else PROTOCOL[start:]


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_has_a_line_and_a_protocol_entry(code: ErrorCode) -> None:
    assert code in ERRORS, f"render.py has no line for {code}"
    lines = render(Envelope("error", {"code": str(code), **SAMPLE}))
    if code is ErrorCode.PASSWORD_REQUIRED:
        assert lines == []  # the client asks for the password instead
    else:
        assert len(lines) == 1 and lines[0] and not lines[0].startswith("Error:"), lines
    assert f"| `{code}` |" in _section("6.3"), f"PROTOCOL.md's table of error codes lacks {code}"


def test_the_client_renders_no_code_the_registry_lacks() -> None:
    assert set(ERRORS) == set(ErrorCode)
    assert set(NOTICES) == set(NoticeCode)


@pytest.mark.parametrize("code", list(NoticeCode))
def test_every_notice_code_has_a_line_and_a_protocol_entry(code: NoticeCode) -> None:
    assert render(Envelope("notice", {"code": str(code)})) == [NOTICES[code]]
    assert f"`{code}`" in _section("6.3"), f"PROTOCOL.md 6.3 does not list {code}"


@pytest.mark.parametrize("code", list(CloseCode))
def test_every_close_code_is_documented(code: CloseCode) -> None:
    assert str(int(code)) in _section("6.4"), f"PROTOCOL.md 6.4 does not mention {int(code)}"


@pytest.mark.parametrize("code", list(HandshakeErrorCode))
def test_every_handshake_error_code_is_documented(code: HandshakeErrorCode) -> None:
    assert f"`{code.name}`" in _section("2.6"), f"PROTOCOL.md 2.6 does not list {code.name}"


def test_an_unknown_code_still_renders_readably() -> None:
    """A newer server's code this client does not know: shown, not dropped."""
    assert render(Envelope("error", {"code": "from_the_future", "detail": "later"})) == [
        "Error: from_the_future: later"
    ]


def test_the_message_catalogue_is_current() -> None:
    """docs/messages.md is what ``python -m chat.client.catalogue`` prints: every line the
    client can show for a server event, an error, a notice or a file, and every usage
    line, so another client can render the same words."""
    from chat.client.catalogue import catalogue

    document = REPO / "docs" / "messages.md"
    assert document.read_text(encoding="utf-8") == catalogue(), (
        "docs/messages.md is stale: run `python -m chat.client.catalogue > docs/messages.md`"
    )
    for code in ErrorCode:
        assert f"| `{code}` |" in catalogue()
