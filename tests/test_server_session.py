"""The server's sans-I/O session (chat/server/session.py): bytes in, actions out, with the
real handshake and records and no sockets. Every peer error ends in the one table of
close codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from chat.keys import load_private_key
from chat.protocol.codes import CloseCode, ErrorCode
from chat.protocol.envelope import decode_event, encode_event, encode_request
from chat.protocol.errors import HandshakeErrorCode, HandshakeFailed, ProtocolError, RecordError
from chat.protocol.handshake import ClientHandshake, decode_handshake_error
from chat.protocol.records import SecureChannel
from chat.server.session import (
    PEER_ERRORS,
    TEXT_FRAME,
    End,
    Established,
    Phase,
    Refuse,
    SendHandshake,
    Serve,
    ServerSession,
    TextFrame,
    Unwrap,
)


@pytest.fixture
def private_key(key_pair: tuple[Path, Path]) -> rsa.RSAPrivateKey:
    return load_private_key(key_pair[0])


def established(private_key: rsa.RSAPrivateKey) -> tuple[ServerSession, SecureChannel]:
    """A server session and the client's channel after a real handshake."""
    session = ServerSession(private_key)
    client = ClientHandshake(private_key.public_key())
    (unwrap,) = session.receive(client.client_hello())
    assert isinstance(unwrap, Unwrap)
    (server_hello,) = session.unwrapped(session.unwrap(unwrap.hello))
    assert isinstance(server_hello, SendHandshake)
    finished = client.receive_server_hello(server_hello.data)
    assert session.receive(finished) == [Established()]
    assert client.keys is not None
    return session, SecureChannel(client.keys)


def _refusal(end: End) -> HandshakeErrorCode:
    assert end.handshake_error is not None
    return decode_handshake_error(end.handshake_error).code


def test_a_full_handshake_then_login_then_chat(private_key: rsa.RSAPrivateKey) -> None:
    session, client = established(private_key)
    assert session.phase is Phase.LOGIN
    (serve,) = session.receive(client.seal(encode_request("login", name="ann", rid=1)))
    assert isinstance(serve, Serve) and serve.envelope.type == "login"
    session.logged_in()
    (again,) = session.receive(client.seal(encode_request("login", name="ann", rid=2)))
    assert again == Refuse(2, ErrorCode.ALREADY_LOGGED_IN)
    (chat,) = session.receive(client.seal(encode_request("broadcast", text="hi")))
    assert isinstance(chat, Serve) and chat.envelope.fields == {"text": "hi"}
    reply = decode_event(client.open(session.seal(encode_event("ok", re=2))))
    assert reply.fields == {"re": 2}


def test_requests_before_login_are_refused_and_malformed_ones_answered(
    private_key: rsa.RSAPrivateKey,
) -> None:
    session, client = established(private_key)
    (early,) = session.receive(client.seal(encode_request("list", rid=5)))
    assert early == Refuse(5, ErrorCode.NOT_LOGGED_IN)
    header = json.dumps({"type": "list", "rid": 6, "colour": "blue"}).encode()
    (bad,) = session.receive(client.seal(len(header).to_bytes(4, "big") + header))
    assert isinstance(bad, Refuse) and (bad.rid, bad.code) == (6, ErrorCode.BAD_REQUEST)
    assert bad.detail is not None and "colour" in bad.detail
    assert session.phase is Phase.LOGIN, "the session goes on"


def test_a_text_frame_ends_the_session_with_1003_at_every_step(private_key: rsa.RSAPrivateKey) -> None:
    (end,) = ServerSession(private_key).receive("hello?")
    assert isinstance(end, End) and (end.code, end.reason) == (CloseCode.UNSUPPORTED_DATA, TEXT_FRAME)
    assert _refusal(end) is HandshakeErrorCode.MALFORMED
    session, _ = established(private_key)
    (after,) = session.receive('{"type": "list"}')
    assert after == End(CloseCode.UNSUPPORTED_DATA, TEXT_FRAME)  # no HandshakeError after it
    assert session.phase is Phase.CLOSED


def test_handshake_failures_end_with_a_handshake_error_and_1008(private_key: rsa.RSAPrivateKey) -> None:
    session = ServerSession(private_key)
    (unwrap,) = session.receive(b"\x01\x00\x01\x00\x01" + b"\x00" * 10)
    assert isinstance(unwrap, Unwrap)
    with pytest.raises(ProtocolError) as failure:
        session.unwrap(unwrap.hello)
    (end,) = session.unwrapped(failure.value)  # type: ignore[arg-type]
    assert isinstance(end, End) and end.code is CloseCode.POLICY_VIOLATION
    assert _refusal(end) is HandshakeErrorCode.MALFORMED
    # A second message while the unwrap runs is not allowed.
    waiting = ServerSession(private_key)
    waiting.receive(ClientHandshake(private_key.public_key()).client_hello())
    (early,) = waiting.receive(b"finished too soon")
    assert isinstance(early, End) and _refusal(early) is HandshakeErrorCode.MALFORMED


def test_an_altered_record_ends_the_session(private_key: rsa.RSAPrivateKey) -> None:
    session, client = established(private_key)
    record = bytearray(client.seal(encode_request("list")))
    record[-1] ^= 1
    (end,) = session.receive(bytes(record))
    assert end == End(CloseCode.POLICY_VIOLATION, "record failed authentication")
    assert session.phase is Phase.CLOSED
    (late,) = session.receive(client.seal(encode_request("list")))
    assert late == End(CloseCode.POLICY_VIOLATION, "the session has ended")


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (TextFrame(TEXT_FRAME), CloseCode.UNSUPPORTED_DATA, TEXT_FRAME),
        (HandshakeFailed(HandshakeErrorCode.TIMEOUT, "handshake timed out"), CloseCode.POLICY_VIOLATION,
         "handshake timed out"),
        (RecordError("bad tag"), CloseCode.POLICY_VIOLATION, "record failed authentication"),
    ],
)  # fmt: skip
def test_each_peer_error_maps_to_its_close_code(
    private_key: rsa.RSAPrivateKey, error: ProtocolError, code: CloseCode, reason: str
) -> None:
    """The one table (PEER_ERRORS): the error a peer causes decides the close code, in
    the handshake (with a HandshakeError first) and after it (without)."""
    assert type(error) in PEER_ERRORS
    during = ServerSession(private_key).fail(error)
    assert (during.code, during.reason, during.handshake_error is not None) == (code, reason, True)
    session, _ = established(private_key)
    after = session.fail(error)
    assert (after.code, after.reason, after.handshake_error) == (code, reason, None)
