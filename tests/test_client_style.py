"""Colour classes by kind of message, and NO_COLOR."""

from __future__ import annotations

import pytest

from chat.client.style import ERROR, FILE, GROUP, PRIVATE, SYSTEM, colour_enabled, kind_of, styled


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [("private", PRIVATE), ("private_sent", PRIVATE), ("group_message", GROUP), ("error", ERROR),
     ("user_joined", SYSTEM), ("welcome", SYSTEM), ("file_result", FILE)],
)
def test_kinds(event_type: str, kind: str) -> None:
    assert kind_of(event_type) == kind


def test_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert colour_enabled()
    assert not colour_enabled(no_color_flag=True)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_enabled()


def test_styled_line() -> None:
    assert list(styled("hi", PRIVATE, colour=True)) == [("class:private", "hi")]
    assert list(styled("hi", PRIVATE, colour=False)) == [("", "hi")]
    stamped = list(styled("hi", GROUP, colour=False, timestamp=0))
    assert stamped[1] == ("", "hi")
    assert len(stamped[0][1]) == len("00:00 ")
