"""The envelope codec (PROTOCOL.md section 6): round trips and every rejection."""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.protocol.envelope import (
    EVENTS,
    MAX_LOGIN_NAME_CHARS,
    MAX_REQUEST_ID,
    REQUESTS,
    Bool,
    Envelope,
    Int,
    Kind,
    List,
    Objects,
    Schema,
    Str,
    decode_event,
    decode_request,
    encode_event,
    encode_request,
)
from chat.protocol.errors import EnvelopeError
from chat.protocol.limits import (
    MAX_CHUNK_BYTES,
    MAX_DETAIL_CHARS,
    MAX_ENVELOPE_BYTES,
    MAX_HEADER_BYTES,
    MAX_LIST_ITEMS,
    MAX_NAME_CHARS,
    MAX_PASSWORD_CHARS,
    MAX_PRESENCE_NAMES,
    MAX_TEXT_CHARS,
)


def frame(header: bytes, body: bytes = b"") -> bytes:
    """An envelope with a raw (possibly invalid) header."""
    return struct.pack(">I", len(header)) + header + body


@pytest.mark.parametrize(
    "header",
    [
        rb'{"type":"broadcast","text":"\ud800"}',
        rb'{"type":"private","to":"bob","text":"a\udfffb"}',
        rb'{"type":"login","name":"\udc80"}',
        rb'{"type":"group_create","group":"g","members":["\ud83d"]}',
    ],
)
def test_lone_surrogate_escapes_are_rejected(header: bytes) -> None:
    """A \\uXXXX escape of a lone surrogate is not text: it must not decode into a value
    that the server later fails to re-encode (UnicodeEncodeError) when relaying it."""
    with pytest.raises(EnvelopeError):
        decode_request(frame(header))


def test_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(EnvelopeError):
        encode_event("broadcast", sender="alice", text="\ud800")
    with pytest.raises(EnvelopeError):
        encode_request("broadcast", text="x\udfff")


@pytest.mark.parametrize(
    "header",
    [rb'{"type":"\ud800"}', rb'{"type":"broadcast","text":"a","\udc00":1}', rb'{"\ud800":1}'],
)
def test_error_for_a_surrogate_name_can_be_reported_back(header: bytes) -> None:
    """The server answers a bad envelope with ``error bad_request`` whose ``detail`` is the
    error message; a message quoting a lone-surrogate type or field name must still be
    valid text, or building that answer fails and the connection handler crashes."""
    with pytest.raises(EnvelopeError) as failed:
        decode_request(frame(header))
    detail = str(failed.value)[:MAX_DETAIL_CHARS]
    event = decode_event(encode_event("error", code="bad_request", detail=detail))
    assert event["detail"] == detail
    assert failed.value.field is None or failed.value.field.encode("utf-8")


def test_escaped_surrogate_pair_is_text() -> None:
    """A correctly paired escape is an ordinary character and round-trips."""
    envelope = decode_request(frame(rb'{"type":"broadcast","text":"\ud83d\udc4b"}'))
    assert envelope["text"] == "\U0001f44b"
    assert decode_event(encode_event("broadcast", sender="a", text=envelope["text"]))["text"] == "\U0001f44b"


# --- schema-driven samples ----------------------------------------------------------


def sample(kind: Kind) -> Any:
    """A valid value of ``kind`` (used for every declared field of every type)."""
    if isinstance(kind, Str):
        for candidate in ("alice", "héllo ✓", "0f", "0f" * 32, "too_fast", "a" * max(kind.min_chars, 1)):
            try:
                kind.check("x", candidate)
            except EnvelopeError:
                continue
            return candidate
        raise AssertionError(f"no sample for {kind}")
    if isinstance(kind, Int):
        return min(kind.maximum, kind.minimum + 7)
    if isinstance(kind, Bool):
        return True
    if isinstance(kind, List):
        return [sample(kind.item), sample(kind.item)]
    if isinstance(kind, Objects):
        return [{key: sample(item) for key, item in kind.schema.items()}]
    raise AssertionError(f"unknown field kind {kind!r}: teach this test about it")


def strategy(kind: Kind) -> st.SearchStrategy[Any]:
    """Hypothesis values of ``kind``."""
    if isinstance(kind, Str):
        if kind.pattern is not None:
            return st.from_regex(kind.pattern, fullmatch=True).filter(
                lambda s: kind.min_chars <= len(s) <= kind.max_chars
            )
        return st.text(min_size=kind.min_chars, max_size=min(kind.max_chars, 40))
    if isinstance(kind, Int):
        return st.integers(kind.minimum, kind.maximum)
    if isinstance(kind, Bool):
        return st.booleans()
    if isinstance(kind, List):
        return st.lists(strategy(kind.item), min_size=kind.min_items, max_size=min(kind.max_items, 4))
    if isinstance(kind, Objects):
        return st.lists(st.fixed_dictionaries({k: strategy(v) for k, v in kind.schema.items()}), max_size=3)
    raise AssertionError(f"unknown field kind {kind!r}")


def full_fields(schema: Schema) -> dict[str, Any]:
    return {name: sample(kind) for name, kind in {**schema.required, **schema.optional}.items()}


def header(data: dict[str, Any] | str) -> bytes:
    return frame(data.encode() if isinstance(data, str) else json.dumps(data).encode())


# --- round trips --------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_every_request_type_round_trips(kind: str) -> None:
    schema = REQUESTS[kind]
    body = b"\x00\x01file data\xff" if schema.body else b""
    for fields in ({name: sample(k) for name, k in schema.required.items()},
                   {**full_fields(schema), "rid": MAX_REQUEST_ID}):
        envelope = decode_request(encode_request(kind, body, **fields))
        assert (envelope.type, envelope.fields, envelope.body) == (kind, fields, body)


@pytest.mark.parametrize("kind", sorted(EVENTS))
def test_every_event_type_round_trips(kind: str) -> None:
    schema = EVENTS[kind]
    body = b"\x00\x01file data\xff" if schema.body else b""
    for fields in ({name: sample(k) for name, k in schema.required.items()},
                   {**full_fields(schema), "re": 0}):
        envelope = decode_event(encode_event(kind, body, **fields))
        assert (envelope.type, envelope.fields, envelope.body) == (kind, fields, body)


def test_wire_form_is_length_prefixed_compact_utf8_json() -> None:
    data = encode_request("broadcast", text="Grüße", rid=7)
    text = '{"type":"broadcast","text":"Grüße","rid":7}'.encode()
    assert len(text) == 45  # ü and ß are two bytes each, sent as raw UTF-8
    assert data == b"\x00\x00\x00\x2d" + text


def test_decoder_accepts_any_member_order_spacing_and_escapes() -> None:
    envelope = decode_request(header(' {\n "rid" : 3 , "text" : "caf\\u00e9" ,"type":"broadcast" } '))
    assert (envelope.type, envelope.fields) == ("broadcast", {"rid": 3, "text": "café"})


def test_limits_at_the_boundary_are_accepted() -> None:
    decode_request(encode_request("broadcast", text="x" * MAX_TEXT_CHARS))
    decode_request(encode_request("private", to="n" * MAX_NAME_CHARS, text="hi"))
    decode_request(encode_request("group_create", group="g", members=["m"] * MAX_LIST_ITEMS))
    decode_request(encode_request("login", name="a", password="p" * MAX_PASSWORD_CHARS))
    decode_event(encode_event("error", code="bad_request", detail="d" * MAX_DETAIL_CHARS))
    decode_event(encode_event("user_joined", names=["😀" * MAX_NAME_CHARS] * MAX_PRESENCE_NAMES))


def test_header_limit_on_decode() -> None:
    """A valid JSON header padded with whitespace: 64 KiB is accepted, one byte more is not."""
    core = b'{"type":"broadcast","text":"a"}'
    fits = core[:-1] + b" " * (MAX_HEADER_BYTES - len(core)) + b"}"
    assert len(fits) == MAX_HEADER_BYTES
    assert decode_request(frame(fits))["text"] == "a"
    with pytest.raises(EnvelopeError):
        decode_request(frame(fits[:-1] + b" }"))


def test_a_body_decoded_from_bytes_is_a_view_and_from_a_bytearray_a_copy() -> None:
    """The relay forwards a file chunk without copying its 256 KiB in decode (a view into
    the decrypted record); a bytearray is copied, so its owner may still reuse or resize it."""
    data = encode_request("file_chunk", b"\x00chunk\xff", id="0123456789abcdef", offset=7)
    view = decode_request(data).body
    assert isinstance(view, memoryview) and view.obj is data and view.readonly
    assert view == b"\x00chunk\xff" and encode_event("file_chunk", view, id="ab", offset=7) == encode_event(
        "file_chunk", b"\x00chunk\xff", id="ab", offset=7
    )
    mutable = bytearray(data)
    copy = decode_request(mutable).body  # type: ignore[arg-type]
    mutable.clear()  # nothing pins it
    assert type(copy) is bytes and copy == b"\x00chunk\xff"
    empty = decode_request(encode_request("file_ack", id="0123456789abcdef", received=7)).body
    assert type(empty) is bytes and empty == b""


def test_body_limit() -> None:
    body_types = [kind for kind, schema in REQUESTS.items() if schema.body]
    for kind in body_types:
        fields = {name: sample(k) for name, k in REQUESTS[kind].required.items()}
        assert decode_request(encode_request(kind, bytes(MAX_CHUNK_BYTES), **fields)).body == bytes(
            MAX_CHUNK_BYTES
        )
        with pytest.raises(EnvelopeError):
            encode_request(kind, bytes(MAX_CHUNK_BYTES + 1), **fields)
        raw = encode_request(kind, **fields) + bytes(MAX_CHUNK_BYTES + 1)
        with pytest.raises(EnvelopeError):
            decode_request(raw)


# --- rejections ---------------------------------------------------------------------

MALFORMED_REQUESTS: dict[str, bytes] = {
    "unknown type": header({"type": "shout", "text": "hi"}),
    "type missing": header({"text": "hi"}),
    "type not a string": header({"type": 1}),
    "missing field": header({"type": "broadcast"}),
    "missing one of two fields": header({"type": "private", "text": "hi"}),
    "string for string field given a number": header({"type": "broadcast", "text": 5}),
    "null value": header({"type": "broadcast", "text": None}),
    "int field given a string": header({"type": "broadcast", "text": "a", "rid": "1"}),
    "bool for int": header({"type": "broadcast", "text": "a", "rid": True}),
    "float for int": header({"type": "broadcast", "text": "a", "rid": 1.0}),
    "exponent for int": header('{"type":"broadcast","text":"a","rid":1e2}'),
    "int below range": header({"type": "broadcast", "text": "a", "rid": -1}),
    "int above range": header({"type": "broadcast", "text": "a", "rid": MAX_REQUEST_ID + 1}),
    "int with 5000 digits": header('{"type":"broadcast","text":"a","rid":' + "9" * 5000 + "}"),
    "list field given a string": header({"type": "group_create", "group": "g", "members": "bob"}),
    "list of wrong items": header({"type": "group_create", "group": "g", "members": [1]}),
    "unknown field": header({"type": "broadcast", "text": "a", "colour": "red"}),
    "event field in a request": header({"type": "broadcast", "text": "a", "re": 1}),
    "field of another type": header({"type": "list", "text": "a"}),
    "empty text": header({"type": "broadcast", "text": ""}),
    "text too long": header({"type": "broadcast", "text": "x" * (MAX_TEXT_CHARS + 1)}),
    "name too long": header({"type": "private", "to": "n" * (MAX_NAME_CHARS + 1), "text": "hi"}),
    "group name too long": header({"type": "group_join", "group": "g" * (MAX_NAME_CHARS + 1)}),
    "login name too long": header({"type": "login", "name": "n" * (MAX_LOGIN_NAME_CHARS + 1)}),
    "password too long": header({"type": "login", "name": "a", "password": "p" * (MAX_PASSWORD_CHARS + 1)}),
    "too many list items": header(
        {"type": "group_create", "group": "g", "members": ["m"] * (MAX_LIST_ITEMS + 1)}
    ),
    "duplicate keys": header('{"type":"broadcast","text":"a","text":"b"}'),
    "duplicate type": header('{"type":"broadcast","type":"list","text":"a"}'),
    "NaN": header('{"type":"broadcast","text":"a","rid":NaN}'),
    "Infinity": header('{"type":"broadcast","text":"a","rid":Infinity}'),
    "-Infinity": header('{"type":"broadcast","text":"a","rid":-Infinity}'),
    "header is a list": header("[]"),
    "header is a string": header('"broadcast"'),
    "header is a number": header("1"),
    "header is null": header("null"),
    "not JSON": header('{"type":'),
    "trailing garbage after JSON": header('{"type":"list"} x'),
    "empty header": frame(b""),
    "deeply nested": header("[" * 100_000 + "]" * 100_000),
    "invalid UTF-8": frame(b'{"type":"broadcast","text":"\xff"}'),
    "overlong UTF-8": frame(b'{"type":"broadcast","text":"\xc0\xaf"}'),
    "UTF-8 BOM": frame(b'\xef\xbb\xbf{"type":"list"}'),
    "header length beyond data": struct.pack(">I", 100) + b'{"type":"list"}',
    "header length above the header limit": (
        struct.pack(">I", MAX_HEADER_BYTES + 1) + bytes(MAX_HEADER_BYTES + 1)
    ),
    "shorter than the length prefix": b"\x00\x00\x00",
    "nothing at all": b"",
    "body on a bodiless type": frame(b'{"type":"broadcast","text":"a"}', b"x"),
    "envelope over the size limit": frame(b'{"type":"list"}', bytes(MAX_ENVELOPE_BYTES)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_REQUESTS))
def test_malformed_request_is_rejected(case: str) -> None:
    with pytest.raises(EnvelopeError):
        decode_request(MALFORMED_REQUESTS[case])


MALFORMED_EVENTS: dict[str, bytes] = {
    "error code breaks its pattern": header({"type": "error", "code": "Bad-Request"}),
    "detail too long": header({"type": "notice", "code": "x", "detail": "d" * (MAX_DETAIL_CHARS + 1)}),
    "objects entry missing a key": header({"type": "group_members", "groups": [{"group": "g"}]}),
    "objects entry with an extra key": header(
        {"type": "group_members", "groups": [{"group": "g", "members": [], "owner": "a"}]}
    ),
    "objects entry not an object": header({"type": "group_members", "groups": ["g"]}),
    "name in a list too long": header({"type": "user_list", "users": ["a", "n" * (MAX_NAME_CHARS + 1)]}),
    "presence naming nobody": header({"type": "user_joined", "names": []}),
    "presence naming too many": header({"type": "user_exited", "names": ["a"] * (MAX_PRESENCE_NAMES + 1)}),
    "presence with the old single name": header({"type": "user_joined", "name": "a"}),
}


def test_events_follow_the_evolution_rules() -> None:
    """PROTOCOL.md section 6.6: a client keeps what it knows of an event. An unknown
    field is dropped (a newer server may add one), an unknown type keeps only its ``re``
    (so the request it answers still ends), and what is known is checked as ever."""
    assert decode_event(header({"type": "ok", "rid": 1, "re": 4})) == Envelope("ok", {"re": 4})
    welcome = decode_event(header({"type": "welcome", "name": "bob", "colour": "blue"}))
    assert welcome == Envelope("welcome", {"name": "bob"})
    assert decode_event(header({"type": "login", "name": "alice"})) == Envelope("login", {})
    future = decode_event(header({"type": "poll_created", "re": 7, "poll": {}}))
    assert future == Envelope("poll_created", {"re": 7})
    with pytest.raises(EnvelopeError):
        decode_event(header({"type": "welcome", "name": 5, "colour": "blue"}))
    with pytest.raises(EnvelopeError):
        decode_request(header({"type": "list", "colour": "blue"}))  # the server stays strict


@pytest.mark.parametrize("case", sorted(MALFORMED_EVENTS))
def test_malformed_event_is_rejected(case: str) -> None:
    with pytest.raises(EnvelopeError):
        decode_event(MALFORMED_EVENTS[case])


def test_encoder_refuses_what_the_decoder_refuses() -> None:
    bad: list[tuple[str, dict[str, Any], bytes]] = [
        ("shout", {"text": "a"}, b""),
        ("broadcast", {}, b""),
        ("broadcast", {"text": "x" * (MAX_TEXT_CHARS + 1)}, b""),
        ("broadcast", {"text": "a", "rid": True}, b""),
        ("broadcast", {"text": "a", "rid": 1.5}, b""),
        ("broadcast", {"text": "a", "colour": "red"}, b""),
        ("broadcast", {"text": "a"}, b"body"),
        ("private", {"to": "n" * (MAX_NAME_CHARS + 1), "text": "a"}, b""),
    ]
    for kind, fields, body in bad:
        with pytest.raises(EnvelopeError):
            encode_request(kind, body, **fields)


def test_header_over_its_limit_is_refused_when_encoding() -> None:
    """1,024 names of 32 four-byte characters make a header of about 130 KB."""
    with pytest.raises(EnvelopeError, match="header too large"):
        encode_request("group_create", group="g", members=["😀" * MAX_NAME_CHARS] * MAX_LIST_ITEMS)


# --- properties ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_envelope_error(data: bytes) -> None:
    for decode in (decode_request, decode_event):
        with contextlib.suppress(EnvelopeError):
            decode(data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
FIELD_NAMES = sorted(
    {name for table in (REQUESTS, EVENTS) for s in table.values() for name in {**s.required, **s.optional}}
    | {"rid", "re", "type"}
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([*sorted(set(REQUESTS) | set(EVENTS)), "nope"]),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), JSON_VALUES, max_size=5),
    st.binary(max_size=8),
)
def test_json_shaped_garbage_raises_only_envelope_error(
    kind: str, fields: dict[str, Any], body: bytes
) -> None:
    data = header({"type": kind, **fields}) + body
    for decode in (decode_request, decode_event):
        with contextlib.suppress(EnvelopeError):
            decode(data)


@st.composite
def valid_envelopes(draw: st.DrawFn, table: dict[str, Schema]) -> tuple[str, dict[str, Any], bytes]:
    kind = draw(st.sampled_from(sorted(table)))
    schema = table[kind]
    fields = {name: draw(strategy(k)) for name, k in schema.required.items()}
    for name, k in schema.optional.items():
        if draw(st.booleans()):
            fields[name] = draw(strategy(k))
    common = "rid" if table is REQUESTS else "re"
    if draw(st.booleans()):
        fields[common] = draw(st.integers(0, MAX_REQUEST_ID))
    body = draw(st.binary(min_size=1, max_size=64)) if schema.body else b""
    return kind, fields, body


@settings(max_examples=250, deadline=None)
@given(valid_envelopes(REQUESTS))
def test_generated_requests_round_trip(envelope: tuple[str, dict[str, Any], bytes]) -> None:
    kind, fields, body = envelope
    decoded = decode_request(encode_request(kind, body, **fields))
    assert (decoded.type, decoded.fields, decoded.body) == (kind, fields, body)


@settings(max_examples=250, deadline=None)
@given(valid_envelopes(EVENTS))
def test_generated_events_round_trip(envelope: tuple[str, dict[str, Any], bytes]) -> None:
    kind, fields, body = envelope
    decoded = decode_event(encode_event(kind, body, **fields))
    assert (decoded.type, decoded.fields, decoded.body) == (kind, fields, body)


@settings(max_examples=200, deadline=None)
@given(
    st.text(st.characters(min_codepoint=0xD000, max_codepoint=0xE0FF, exclude_categories=()), max_size=6),
    st.sampled_from(["broadcast", "login", "group_create"]),
)
def test_whatever_decodes_can_be_encoded_again(text: str, kind: str) -> None:
    """Anything the decoder accepts re-encodes to the same envelope (the server relays
    decoded values): \\u escapes of surrogates, paired or not, never slip through."""
    value: Any = {"broadcast": {"text": text}, "login": {"name": text},
                  "group_create": {"group": "g", "members": [text]}}[kind]
    data = frame(json.dumps({"type": kind, **value}).encode("ascii"))  # escapes every non-ASCII char
    try:
        envelope = decode_request(data)
    except EnvelopeError:
        return
    again = decode_request(encode_request(envelope.type, envelope.body, **envelope.fields))
    assert again == envelope
