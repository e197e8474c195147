"""Property tests (hypothesis) over real connections to a real server.

Whatever bytes a client sends (as a handshake message, as a record, or sealed as the
plaintext of a valid record), the server answers cleanly (a HandshakeError, a close
code from PROTOCOL.md 6.4, or exactly one reply) and stays alive. The sans-I/O core is
fuzzed directly in test_envelope.py, test_records.py and test_protocol_properties.py;
these examples go through sockets, so they are few.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_harness import ServerProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from robust_helpers import NO_ADDRESS_LIMITS, Peer, RawSession, assert_fresh_pair_chats, running_server
from websockets.exceptions import ConnectionClosed

from chat.keys import load_public_key
from chat.protocol.envelope import MAX_REQUEST_ID, REQUESTS, decode_request, encode_request
from chat.protocol.errors import EnvelopeError
from chat.protocol.handshake import ClientHandshake, decode_handshake_error
from chat.protocol.kinds import Int, List, Str
from chat.protocol.limits import MAX_HEADER_BYTES

#: Examples per property: each one is a real connection (a handshake, maybe a login).
EXAMPLES = 50
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
LAST_RID = (1 << 31) - 1
_names = itertools.count(1)


@pytest_asyncio.fixture
async def server(key_pair: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """The shared fixture's server, without its per-address handshake limits: every
    example connects afresh from 127.0.0.1."""
    async with running_server(key_pair[0], tmp_path / "server", *NO_ADDRESS_LIMITS) as process:
        yield process


@pytest.fixture
def public_key(key_pair: tuple[Path, Path]) -> rsa.RSAPublicKey:
    return load_public_key(key_pair[1])


async def _check(prop: Callable[[], None], server: ServerProcess, public_key: rsa.RSAPublicKey) -> None:
    """Run a hypothesis property in a worker thread (each example runs its own event
    loop and connects to the server by port) while this loop keeps serving the server's
    pipes; then the server must be alive and a fresh pair must chat."""
    await asyncio.to_thread(prop)
    await assert_fresh_pair_chats(server, public_key)


# --- forged records -----------------------------------------------------------------------


async def _forged_record(port: int, public_key: rsa.RSAPublicKey, data: bytes, logged_in: bool) -> None:
    session = await RawSession.established(port, public_key)
    if logged_in:
        await session.login(f"forger{next(_names)}")
    with contextlib.suppress(ConnectionClosed):
        await session.ws.send(data)
    code, reason = await session.closed_by_server()
    assert code == 1008 and reason, (code, reason)


async def test_any_bytes_as_a_record_end_the_session_with_1008(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """After the handshake (and maybe a login), any bytes sent as a record (arbitrary, or
    starting with the record header) close the connection with 1008 and a reason."""
    binary = st.binary(max_size=3000)

    @SETTINGS
    @given(data=st.one_of(binary, binary.map(lambda b: b"\x17" + b)), logged_in=st.booleans())
    def prop(data: bytes, logged_in: bool) -> None:
        asyncio.run(_forged_record(server.port, public_key, data, logged_in))

    await _check(prop, server, public_key)


# --- forged handshake messages ------------------------------------------------------------


async def _forged_handshake(port: int, public_key: rsa.RSAPublicKey, data: bytes, stage: str) -> None:
    session = await RawSession.open(port)
    if stage == "finished":
        await session.ws.send(ClientHandshake(public_key).client_hello())
        assert isinstance(await session.recv_frame(), bytes)
    await session.ws.send(data)
    frame = await session.recv_frame()
    assert isinstance(frame, bytes) and frame[:1] == b"\x0f", frame[:40]
    assert str(decode_handshake_error(frame)), "a HandshakeError without a reason"
    await session.closed_by_server()


async def test_any_bytes_as_a_handshake_message_get_a_handshake_error(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """Any bytes in place of the ClientHello or the ClientFinished: one HandshakeError
    with a reason, then the server closes the connection."""

    @SETTINGS
    @given(data=st.binary(max_size=2500), stage=st.sampled_from(["hello", "finished"]))
    def prop(data: bytes, stage: str) -> None:
        asyncio.run(_forged_handshake(server.port, public_key, data, stage))

    await _check(prop, server, public_key)


# --- any plaintext in a valid record ------------------------------------------------------

_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=40)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
_field_names = st.sampled_from(
    sorted({f for s in REQUESTS.values() for f in (*s.required, *s.optional)} | {"rid", "re", "x"})
)
_headers = st.fixed_dictionaries(
    {"type": st.sampled_from([*REQUESTS, "welcome", "nope"])},
    optional={"rid": st.integers(0, LAST_RID - 1)},
).flatmap(
    lambda base: st.dictionaries(_field_names, _json_values, max_size=4).map(lambda extra: {**extra, **base})
)


def _envelope(header: dict[str, Any], body: bytes) -> bytes:
    raw = json.dumps(header, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return struct.pack(">I", len(raw)) + raw + body


def _valid_values(kind: Any) -> st.SearchStrategy[Any]:
    """Values the codec accepts for a field of ``kind`` (short ones)."""
    if isinstance(kind, Str):
        if kind.pattern is not None:
            return st.from_regex(kind.pattern, fullmatch=True)
        return st.text(min_size=kind.min_chars, max_size=min(kind.max_chars, 40))
    if isinstance(kind, Int):
        return st.integers(kind.minimum, min(kind.maximum, kind.minimum + 1000))
    if isinstance(kind, List):
        return st.lists(_valid_values(kind.item), max_size=3)
    return st.booleans()


def _valid_request(kind_name: str) -> st.SearchStrategy[bytes]:
    schema = REQUESTS[kind_name]
    fields = st.fixed_dictionaries(
        {name: _valid_values(kind) for name, kind in schema.required.items()},
        optional={name: _valid_values(kind) for name, kind in schema.optional.items()}
        | {"rid": st.integers(0, LAST_RID - 1)},
    )
    body = st.binary(min_size=1, max_size=64) if schema.body else st.just(b"")
    return st.builds(lambda f, b: _envelope({"type": kind_name, **f}, b), fields, body)


_plaintexts = st.one_of(
    st.binary(max_size=600),
    st.builds(_envelope, _headers, st.one_of(st.just(b""), st.binary(max_size=64))),
    st.sampled_from(sorted(REQUESTS)).flatmap(_valid_request),
)


async def _sealed_plaintext(
    port: int, public_key: rsa.RSAPublicKey, plaintext: bytes, logged_in: bool
) -> None:
    peer = Peer(await RawSession.established(port, public_key), f"fuzz{next(_names)}")
    try:
        if logged_in:
            assert (await peer.request("login", name=peer.name)).type == "welcome"
        try:
            request = decode_request(plaintext)
        except EnvelopeError:
            request = None
        start = len(peer.events)
        await peer.session.send_plaintext(plaintext)
        if logged_in and request is not None and request.type == "quit":
            if "rid" in request.fields:
                await peer.wait_type("ok")
            code, _ = await peer.wait_ended()
            assert code == 1000, code
            return
        await peer.session.send_plaintext(encode_request("list", rid=LAST_RID))
        reply = await peer.wait_for(lambda e: e.get("re") == LAST_RID, "the reply to list")
        end = peer.events.index(reply)
        presence = ("user_joined", "user_exited")
        answers = [e for e in peer.events[start:end] if e.type not in presence or "re" in e.fields]
        if request is not None and "rid" not in request.fields and not answers:
            return  # a request without rid that succeeded: its ``ok`` is not sent
        assert len(answers) == 1, f"{request}: {[(e.type, e.fields) for e in answers]}"
        answer = answers[0]
        if request is not None and "rid" not in request.fields:
            assert answer.type != "ok" and "re" not in answer.fields, (request, answer)
        if request is None:
            assert (answer.type, answer.get("code")) == ("error", "bad_request"), answer
            # The rid of an unparsable request is echoed when its header had a valid one.
            assert answer.get("re") == _readable_rid(plaintext), (plaintext, answer)
        elif "rid" in request.fields:
            assert answer.get("re") == request["rid"], (request, answer)
        if not logged_in and request is not None and request.type != "login":
            assert (answer.type, answer.get("code")) == ("error", "not_logged_in"), (request, answer)
        assert not peer.ended
    finally:
        await peer.close()


def _readable_rid(plaintext: bytes) -> int | None:
    """The ``rid`` a server can read from a malformed request (PROTOCOL.md section 6): the
    header is within the envelope, strict JSON (no duplicate keys, no NaN), an object,
    and its ``rid`` an integer in range."""

    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        if len({key for key, _ in pairs}) != len(pairs):
            raise ValueError("duplicate key")
        return dict(pairs)

    def no_constants(name: str) -> object:
        raise ValueError(name)

    length = int.from_bytes(plaintext[:4], "big")
    if len(plaintext) < 4 or length > MAX_HEADER_BYTES or length > len(plaintext) - 4:
        return None
    try:
        text = plaintext[4 : 4 + length].decode("utf-8")
        header = json.loads(text, object_pairs_hook=unique, parse_constant=no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    rid = header.get("rid") if isinstance(header, dict) else None
    return rid if type(rid) is int and 0 <= rid <= MAX_REQUEST_ID else None


async def test_any_sealed_plaintext_gets_exactly_one_answer(
    server: ServerProcess, public_key: rsa.RSAPublicKey
) -> None:
    """Any plaintext in a correctly sealed record (random bytes, or JSON envelopes of
    every request type with arbitrary fields), before or after login, gets exactly one
    answer (none when it has no ``rid`` and its answer would be ``ok``) and the session
    goes on: the next request is answered in turn. Only a valid ``quit`` after login ends
    it (``ok`` if it has a ``rid``, then close 1000)."""

    @settings(SETTINGS, max_examples=3 * EXAMPLES)
    @given(plaintext=_plaintexts, logged_in=st.booleans())
    def prop(plaintext: bytes, logged_in: bool) -> None:
        asyncio.run(_sealed_plaintext(server.port, public_key, plaintext, logged_in))

    await _check(prop, server, public_key)
