"""Review finding M7 (confusable and invisible names) and the reserved names of H1.

Unit tests of the name rules, then a real server: with ``sophia`` online or registered,
every look-alike from the review is refused (as invalid, or as taken), and reserved
names cannot be used.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from robust_helpers import RawSession, assert_fresh_pair_chats, running_server

from chat.keys import load_public_key
from chat.server.names import display_form, key, reserved, skeleton, username_problem

#: The review's list, each accepted (and able to receive sophia's messages) before.
INVISIBLE_OR_COMPAT = ["soph\u034fia", "sophia\ufe0f", "sophia\u3164", "sophia\u115f", "sophia\u2800",
                       "𝐬𝐨𝐩𝐡𝐢𝐚", "ſophia"]  # fmt: skip
MIXED_SCRIPT = ["sоphia", "sοphia"]  # Cyrillic о, Greek ο
LOOK_ALIKE = ["ｓｏｐｈｉａ", "sophıa", "SOPHİA", "Sophia", "SOPHIA"]


@pytest.mark.parametrize("name", INVISIBLE_OR_COMPAT + MIXED_SCRIPT)
def test_invisible_compatibility_and_mixed_script_names_are_invalid(name: str) -> None:
    assert username_problem(name) is not None


@pytest.mark.parametrize("name", LOOK_ALIKE)
def test_valid_look_alikes_have_sophias_skeleton(name: str) -> None:
    assert username_problem(name) is None
    assert skeleton(name) == skeleton("sophia")


def test_comparison_profile() -> None:
    assert key("jos\u00e9") == key("jose\u0301")  # one account, however it was typed
    assert key("Straße") == key("STRASSE")
    assert display_form("ｓｏｐｈｉａ") == "sophia"
    assert username_problem("北京カタカナ") is None and username_problem("한국어") is None
    assert username_problem("Ελένη") is None and username_problem("José_1.x-y") is None
    assert username_problem("\u0301abc") == "it cannot start with a combining mark"
    assert reserved("admin") and reserved("ADMİN") and reserved("admın") and reserved("Server")
    assert reserved("hr", frozenset({"HR"})) and not reserved("sophia")


@pytest.fixture
def public_key(key_pair: tuple[Path, Path]) -> rsa.RSAPublicKey:
    return load_public_key(key_pair[1])


async def _login(port: int, key: rsa.RSAPublicKey, name: str) -> tuple[str, str]:
    session = await RawSession.established(port, key)
    try:
        answer = await session.request("login", name=name)
        return answer.type, answer.get("code") or answer.get("name")
    finally:
        await session.close()


async def test_look_alikes_of_online_and_registered_names_are_taken(
    key_pair: tuple[Path, Path], tmp_path: Path, public_key: rsa.RSAPublicKey
) -> None:
    async with running_server(key_pair[0], tmp_path / "server", "--reserve", "Teacher") as server:
        sophia = await RawSession.established(server.port, public_key)
        await sophia.login("sophia")
        for name in LOOK_ALIKE:
            assert await _login(server.port, public_key, name) == ("error", "username_taken"), name
        for name in INVISIBLE_OR_COMPAT + MIXED_SCRIPT:
            assert await _login(server.port, public_key, name) == ("error", "username_invalid"), name
        assert (await sophia.request("register", password="sophia's password")).type == "registered"
        await sophia.request("quit")
        # Offline now, but registered: look-alikes stay refused, and cannot register.
        for name in LOOK_ALIKE[1:3]:
            assert await _login(server.port, public_key, name) == ("error", "username_taken"), name
        # One account for josé however it is typed; its look-alike "jose" is taken.
        jose = await RawSession.established(server.port, public_key)
        await jose.login("jos\u00e9")
        assert (await jose.request("register", password="josé's password")).type == "registered"
        await jose.request("quit")
        assert await _login(server.port, public_key, "jose\u0301") == ("error", "password_required")
        assert await _login(server.port, public_key, "jose") == ("error", "username_taken")
        for name in ("admin", "Admin", "admın", "SYSTEM", "server", "teacher", "TEACHER"):
            assert await _login(server.port, public_key, name) == ("error", "username_reserved"), name
        await assert_fresh_pair_chats(server, public_key)
