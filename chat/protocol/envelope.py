"""The envelope codec: typed, validated messages carried inside records.

Wire form (PROTOCOL.md, "Envelopes")::

    header_len (u32, big-endian) || header (UTF-8 JSON object) || body (raw bytes)

The header always has ``"type"``; every other member is declared in the schema of that
type, with its kind and size limit. Unknown types, unknown or missing fields, wrong
JSON types, oversize values and duplicate keys are all rejected with EnvelopeError.
Only types whose schema allows it may carry a body (file data), so binary payloads never
pass through JSON.

Clients send *requests* (optionally numbered with ``rid``); the server sends *events*
(``re`` echoes the ``rid`` of the request an event answers).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chat.protocol.errors import EnvelopeError
from chat.protocol.kinds import Bool, Int, Kind, List, Objects, Schema, Str
from chat.protocol.limits import (
    MAX_CHUNK_BYTES,
    MAX_DETAIL_CHARS,
    MAX_ENVELOPE_BYTES,
    MAX_FILE_NAME_CHARS,
    MAX_HEADER_BYTES,
    MAX_LIST_ITEMS,
    MAX_NAME_CHARS,
    MAX_PASSWORD_CHARS,
    MAX_PRESENCE_NAMES,
    MAX_TEXT_CHARS,
)

_LENGTH = struct.Struct(">I")
MAX_REQUEST_ID = (1 << 31) - 1
#: Login names are checked against the username rules by the server, which answers
#: with a clear error; the codec only bounds their size.
MAX_LOGIN_NAME_CHARS = 256


# --- the vocabulary -----------------------------------------------------------------

NAME = Str(MAX_NAME_CHARS, 1)
TEXT = Str(MAX_TEXT_CHARS, 1)
NAMES = List(NAME)
#: Who joined or exited, in the order the server saw it (never empty).
PRESENCE_NAMES = List(NAME, MAX_PRESENCE_NAMES, min_items=1)
TRANSFER_ID = Str(32, 1, r"[0-9a-f]{1,32}")
SHA256_HEX = Str(64, 64, r"[0-9a-f]{64}")
FILE_SIZE = Int(0, (1 << 53) - 1)
DETAIL = Str(MAX_DETAIL_CHARS)
FILE_NAME = Str(MAX_FILE_NAME_CHARS, 1)
PASSWORD = Str(MAX_PASSWORD_CHARS)
#: Seconds since the Unix epoch (UTC).
TIMESTAMP = Int(0, (1 << 53) - 1)
MAX_HISTORY = 1000
HISTORY = Objects({"sender": NAME, "text": TEXT, "sent_at": TIMESTAMP}, MAX_HISTORY)
#: A stored message's id, and its number within its conversation.
MESSAGE_ID = Int(0, (1 << 53) - 1)
SEQUENCE = Int(1, (1 << 53) - 1)
#: A conversation: ``*`` (everyone), ``@<user>`` (the private one with that user) or a group.
TARGET = Str(MAX_NAME_CHARS + 1, 1)
#: Messages one ``search`` page carries at most, and the words of a search.
MAX_SEARCH = 50
MAX_SEARCH_CHARS = 200
SEARCH_WORDS = Str(MAX_SEARCH_CHARS, 1)
STORED = Objects(
    {"id": MESSAGE_ID, "seq": SEQUENCE, "sender": NAME, "text": TEXT, "sent_at": TIMESTAMP}, MAX_HISTORY
)
FOUND = Objects(
    {"id": MESSAGE_ID, "where": TARGET, "sender": NAME, "text": TEXT, "sent_at": TIMESTAMP}, MAX_SEARCH
)
#: A client's id for a message it sends (the same id after a reconnect: sent once).
CLIENT_MESSAGE_ID = Str(64, 1, r"[A-Za-z0-9_-]+")
#: A reconnecting client's place in each conversation it has seen.
CURSORS = Objects({"target": TARGET, "seq": SEQUENCE}, MAX_HISTORY)
#: The secret that lets a guest's next connection resume its session.
RESUME_TOKEN = Str(64, 16, r"[A-Za-z0-9_-]+")
#: A session ticket (PROTOCOL.md 2.7): at most 256 bytes, base64url without padding.
SESSION_TICKET = Str(342, 2, r"[A-Za-z0-9_-]+")
#: Numbered stored message (Feature.RESUME).
NUMBERED = {"mid": MESSAGE_ID, "seq": SEQUENCE}
#: Extensions named at login (codes.Feature); unknown ones are ignored, not refused.
FEATURES = List(Str(32, 1, r"[a-z0-9_]+"), 32)
#: Byte offsets and sizes; JSON-safe integers.
OFFSET = Int(0, (1 << 53) - 1)

#: What a client may send.
REQUESTS: dict[str, Schema] = {
    "login": Schema(
        {"name": Str(MAX_LOGIN_NAME_CHARS)},
        {
            "password": PASSWORD,
            "features": FEATURES,
            "cursors": CURSORS,
            "since": MESSAGE_ID,
            "token": RESUME_TOKEN,
        },
    ),
    "broadcast": Schema({"text": TEXT}, {"cmid": CLIENT_MESSAGE_ID}),
    "private": Schema({"to": NAME, "text": TEXT}, {"cmid": CLIENT_MESSAGE_ID}),
    "list": Schema(),
    "group_create": Schema({"group": NAME}, {"members": NAMES}),
    "group_join": Schema({"group": NAME}),
    "group_list": Schema(),
    "group_members": Schema({}, {"group": NAME}),
    "group_message": Schema({"group": NAME, "text": TEXT}, {"cmid": CLIENT_MESSAGE_ID}),
    "group_leave": Schema({"group": NAME}),
    "group_delete": Schema({"group": NAME}),
    "group_add": Schema({"group": NAME, "user": NAME}),
    "group_kick": Schema({"group": NAME, "user": NAME}),
    "quit": Schema(),
    # Accounts and history (PROTOCOL.md section 6.5).
    "register": Schema({"password": PASSWORD}),
    "change_password": Schema({"old_password": PASSWORD, "new_password": PASSWORD}),
    "group_history": Schema({"group": NAME}, {"limit": Int(1, MAX_HISTORY), "before": MESSAGE_ID}),
    "history": Schema({}, {"target": TARGET, "limit": Int(1, MAX_HISTORY), "before": MESSAGE_ID}),
    "search": Schema({"words": SEARCH_WORDS}, {"limit": Int(1, MAX_SEARCH), "before": MESSAGE_ID}),
    "replay": Schema({}, {"cursors": CURSORS, "since": MESSAGE_ID}),
    "group_invite_only": Schema({"group": NAME, "on": Bool()}),
    "offline_ack": Schema({"upto": MESSAGE_ID}),
    # File transfer (PROTOCOL.md section 7).
    "file_offer": Schema({"name": FILE_NAME, "size": OFFSET}, {"to": NAME, "group": NAME}),
    "file_accept": Schema({"id": TRANSFER_ID}),
    "file_decline": Schema({"id": TRANSFER_ID}, {"detail": DETAIL}),
    "file_chunk": Schema({"id": TRANSFER_ID, "offset": OFFSET}, body=True),
    "file_ack": Schema({"id": TRANSFER_ID, "received": OFFSET}),
    "file_end": Schema({"id": TRANSFER_ID, "sha256": SHA256_HEX}),
    "file_done": Schema({"id": TRANSFER_ID}),
    "file_failed": Schema({"id": TRANSFER_ID, "detail": DETAIL}),
    "file_cancel": Schema({"id": TRANSFER_ID}, {"detail": DETAIL}),
}

#: What the server may send.
EVENTS: dict[str, Schema] = {
    "ok": Schema({}, NUMBERED),
    "error": Schema(
        {"code": Str(64, 1, r"[a-z_]+")},
        {"name": Str(MAX_LOGIN_NAME_CHARS), "group": NAME, "user": NAME, "users": NAMES,
         "detail": DETAIL, "limit": Int(0, 1 << 62)},
    ),
    "notice": Schema({"code": Str(64, 1, r"[a-z_]+")}, {"detail": DETAIL}),
    "welcome": Schema(
        {"name": NAME},
        {"offline": Int(1, 1 << 62), "features": FEATURES, "head": MESSAGE_ID, "token": RESUME_TOKEN},
    ),
    "user_joined": Schema({"names": PRESENCE_NAMES}),
    "user_exited": Schema({"names": PRESENCE_NAMES}),
    "user_list": Schema({"users": NAMES}, {"more": Int(1, 1 << 62), "registered": NAMES}),
    "broadcast": Schema({"sender": NAME, "text": TEXT}, {**NUMBERED, "sent_at": TIMESTAMP}),
    "private": Schema(
        {"sender": NAME, "text": TEXT}, {"sent_at": TIMESTAMP, "id": MESSAGE_ID, "to": NAME, **NUMBERED}
    ),
    "unread": Schema({"groups": Objects({"group": NAME, "count": Int(1, 1 << 62)}, MAX_LIST_ITEMS)}),
    # A session ticket for the next handshake (section 2.7), with its lifetime in seconds.
    "ticket": Schema({"ticket": SESSION_TICKET, "lifetime": Int(1, 7 * 86400)}),
    # The end of what a resuming session missed (section 6.8).
    "replayed": Schema({"count": Int(0, 1 << 62)}, {"lost": Int(1, 1 << 62), "more": Bool()}),
    "offline_page": Schema({"upto": MESSAGE_ID, "more": Int(0, 1 << 62)}),
    # Broadcasts dropped for a reader too slow for them (PROTOCOL.md 6.3).
    "missed": Schema({"count": Int(1, 1 << 62)}),
    "private_queued": Schema({"to": NAME, "text": TEXT}, NUMBERED),
    "registered": Schema({"name": NAME}),
    "password_changed": Schema(),
    "group_history": Schema(
        {"group": NAME, "messages": HISTORY}, {"more": Int(1, 1 << 62), "before": MESSAGE_ID}
    ),
    "history": Schema(
        {"target": TARGET, "messages": STORED}, {"more": Int(1, 1 << 62), "before": MESSAGE_ID}
    ),
    "search_results": Schema({"words": SEARCH_WORDS, "results": FOUND}, {"before": MESSAGE_ID}),
    "group_invite_only": Schema({"group": NAME, "on": Bool()}),
    "private_sent": Schema({"to": NAME, "text": TEXT}, NUMBERED),
    "group_created": Schema({"group": NAME}),
    "group_added": Schema({"group": NAME}),
    "group_joined": Schema({"group": NAME}),
    "group_list": Schema({"groups": NAMES}, {"more": Int(1, 1 << 62)}),
    "group_members": Schema(
        {"groups": Objects({"group": NAME, "members": NAMES}, optional={"registered": NAMES})},
        {"more": Int(1, 1 << 62)},
    ),
    "group_message": Schema(
        {"group": NAME, "sender": NAME, "text": TEXT}, {**NUMBERED, "sent_at": TIMESTAMP}
    ),
    "group_left": Schema({"group": NAME}),
    "group_deleted": Schema({"group": NAME}),
    "group_delete_done": Schema({"group": NAME}),
    "group_removed": Schema({"group": NAME}),
    "member_joined": Schema({"group": NAME, "name": NAME}),
    "member_left": Schema({"group": NAME, "name": NAME}),
    "member_added": Schema({"group": NAME, "name": NAME}),
    "member_removed": Schema({"group": NAME, "name": NAME}),
    # File transfer (PROTOCOL.md section 7).
    "file_offered": Schema({"id": TRANSFER_ID, "recipients": NAMES}),
    "file_incoming": Schema(
        {"id": TRANSFER_ID, "sender": NAME, "name": FILE_NAME, "size": OFFSET}, {"group": NAME}
    ),
    "file_go": Schema({"id": TRANSFER_ID, "window": OFFSET}),
    "file_chunk": Schema({"id": TRANSFER_ID, "offset": OFFSET}, body=True),
    "file_ack": Schema({"id": TRANSFER_ID, "received": OFFSET}),
    "file_end": Schema({"id": TRANSFER_ID, "sha256": SHA256_HEX}),
    "file_result": Schema(
        {"id": TRANSFER_ID, "delivered": NAMES, "failed": Objects({"name": NAME, "detail": DETAIL})}
    ),
    "file_aborted": Schema({"id": TRANSFER_ID, "detail": DETAIL}),
}

_COMMON_REQUEST = {"rid": Int(0, MAX_REQUEST_ID)}
_COMMON_EVENT = {"re": Int(0, MAX_REQUEST_ID)}


#: A body as decoded: a view into the decrypted record when it came from one (no copy
#: of up to 256 KiB of file data per chunk), or bytes.
Body = bytes | memoryview


@dataclass(frozen=True, slots=True)
class Envelope:
    """One decoded, validated envelope. ``fields`` excludes ``type``."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    body: Body = b""

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def _known_part(envelope: Envelope, table: Mapping[str, Schema], common: Mapping[str, Kind]) -> Envelope:
    """What a receiver that follows the evolution rules (PROTOCOL.md section 6.6) keeps of
    an event: of an unknown type, only its ``re``; of a known type, the fields it knows."""
    schema = table.get(envelope.type)
    if schema is None:
        re_ = envelope.fields.get("re")
        return Envelope(envelope.type, {"re": re_} if type(re_) is int else {})
    known = {name: value for name, value in envelope.fields.items()
             if name in schema.required or name in schema.optional or name in common}  # fmt: skip
    if len(known) == len(envelope.fields):
        return envelope
    return Envelope(envelope.type, known, envelope.body)


def _validate(envelope: Envelope, table: Mapping[str, Schema], common: Mapping[str, Kind]) -> None:
    schema = table.get(envelope.type)
    if schema is None:
        raise EnvelopeError(f"unknown envelope type '{_quoted(envelope.type)}'", "type")
    for name, kind in schema.required.items():
        if name not in envelope.fields:
            raise EnvelopeError(f"field '{name}' is missing", name)
        kind.check(name, envelope.fields[name])
    for name, value in envelope.fields.items():
        if name in schema.required:
            continue
        optional = schema.optional.get(name) or common.get(name)
        if optional is None:
            raise EnvelopeError(f"unknown field '{_quoted(name)}' for type '{envelope.type}'", _quoted(name))
        optional.check(name, value)
    if envelope.body and not schema.body:
        raise EnvelopeError(f"type '{envelope.type}' carries no body", "body")
    if len(envelope.body) > MAX_CHUNK_BYTES:
        raise EnvelopeError(f"body larger than {MAX_CHUNK_BYTES} bytes", "body")


#: Characters of a peer's field or type name quoted in an error.
MAX_QUOTED_CHARS = 64


def _quoted(name: str) -> str:
    """A name taken from the peer, cut short to quote in an error (and a log)."""
    return name if len(name) <= MAX_QUOTED_CHARS else name[:MAX_QUOTED_CHARS] + "..."


def _reject_constant(value: str) -> None:
    raise EnvelopeError(f"JSON constant {value} is not allowed")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise EnvelopeError("duplicate key in JSON object")
    return result


_decoder = json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_reject_constant)
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(envelope: Envelope, table: Mapping[str, Schema]) -> bytes:
    common = _COMMON_REQUEST if table is REQUESTS else _COMMON_EVENT
    _validate(envelope, table, common)
    header = _encoder.encode({"type": envelope.type, **envelope.fields}).encode("utf-8")
    if len(header) > MAX_HEADER_BYTES:
        raise EnvelopeError("envelope header too large")
    data = _LENGTH.pack(len(header)) + header + envelope.body
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("envelope too large")
    return data


def decode(data: bytes, table: Mapping[str, Schema], *, lenient: bool = False) -> Envelope:
    """Parse and validate one envelope. ``lenient`` (events, on the client) applies the
    evolution rules: unknown types and fields are dropped, not refused; what is known is
    checked as strictly as ever."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("envelope too large")
    if len(data) < _LENGTH.size:
        raise EnvelopeError("envelope shorter than its length prefix")
    (header_len,) = _LENGTH.unpack_from(data)
    if header_len > MAX_HEADER_BYTES or header_len > len(data) - _LENGTH.size:
        raise EnvelopeError("envelope header length out of range")
    raw_header = bytes(data[_LENGTH.size : _LENGTH.size + header_len])
    try:
        header = _decoder.decode(raw_header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EnvelopeError(f"envelope header is not valid UTF-8 JSON ({exc})") from None
    if type(header) is not dict:
        raise EnvelopeError("envelope header must be a JSON object")
    kind = header.pop("type", None)
    if type(kind) is not str:
        raise _with_rid(EnvelopeError("envelope type is missing", "type"), header, table)
    envelope = Envelope(kind, header, _body(data, _LENGTH.size + header_len))
    common = _COMMON_REQUEST if table is REQUESTS else _COMMON_EVENT
    if lenient:
        envelope = _known_part(envelope, table, common)
        if envelope.type not in table:
            return envelope
    try:
        _validate(envelope, table, common)
    except EnvelopeError as exc:
        raise _with_rid(exc, header, table) from None
    return envelope


def _body(data: bytes, start: int) -> Body:
    """The body after ``start``: a read-only view of ``data`` when it is immutable bytes
    (the relay forwards file chunks without copying them here), else a copy (a view
    would pin a bytearray's size and follow its later changes)."""
    if start == len(data):
        return b""
    if type(data) is bytes:
        return memoryview(data)[start:]
    return bytes(data[start:])


def _with_rid(error: EnvelopeError, header: dict[str, Any], table: Mapping[str, Schema]) -> EnvelopeError:
    """``error`` with the request's ``rid`` if it has a valid one (for the reply's ``re``)."""
    rid = header.get("rid")
    if table is REQUESTS and type(rid) is int and 0 <= rid <= MAX_REQUEST_ID:
        error.rid = rid
    return error


def encode_request(kind: str, body: Body = b"", **fields: Any) -> bytes:
    return encode(Envelope(kind, fields, body), REQUESTS)


def encode_event(kind: str, body: Body = b"", **fields: Any) -> bytes:
    return encode(Envelope(kind, fields, body), EVENTS)


def decode_request(data: bytes) -> Envelope:
    return decode(data, REQUESTS)


def decode_event(data: bytes) -> Envelope:
    """An event as a client reads it: unknown types and fields are ignored (section 6.6)."""
    return decode(data, EVENTS, lenient=True)
