"""The handshake over one WebSocket: the asyncio side of session.py's handshake actions,
with the RSA unwrap on the server's crypto threads and the handshake rates and queue
checked before it (review M1). A resumption (a ResumeHello with a session ticket) is
checked against the same rates and then answered at once: it has no RSA work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from websockets.exceptions import ConnectionClosed

from chat.protocol.errors import HandshakeErrorCode, HandshakeFailed
from chat.protocol.limits import MAX_FRAME_BYTES
from chat.server.frames import binary_frame
from chat.server.host import Host
from chat.server.session import Action, End, Established, Resume, SendHandshake, ServerSession, Unwrap
from chat.server.wire import Wire

log = logging.getLogger("chat.server")


async def run_handshake(
    ws: Wire, session: ServerSession, host: Host, ip: str, send: Callable[[bytes], None]
) -> bool:
    """Carry out the session's handshake actions until it is established (True), or
    ends (False: already answered and closed). ``send`` writes frames straight out."""
    try:
        async with asyncio.timeout(host.config.handshake_timeout):
            while not session.established:
                message = await ws.recv()
                end = await _actions(ws, session, host, ip, send, session.receive(message))
                if end is not None:
                    await _end(ws, ip, end)
                    return False
    except TimeoutError:
        timeout = HandshakeFailed(HandshakeErrorCode.TIMEOUT, "handshake timed out")
        await _end(ws, ip, session.fail(timeout))
        return False
    except ConnectionClosed:
        return False
    return True


async def _actions(
    ws: Wire, session: ServerSession, host: Host, ip: str, send: Callable[[bytes], None],
    actions: list[Action],
) -> End | None:  # fmt: skip
    """Do what the handshake asks; the End to carry out, if it came to one."""
    for action in actions:
        if isinstance(action, Unwrap):
            outcome = await _unwrap(session, host, ip, action.hello)
            return await _actions(ws, session, host, ip, send, session.unwrapped(outcome))
        if isinstance(action, Resume):
            # No RSA and no thread, but the same handshake rates (PROTOCOL.md 2.7).
            resumed = session.resume(action.hello, admitted=host.handshake_allowed(ip))
            return await _actions(ws, session, host, ip, send, resumed)
        if isinstance(action, SendHandshake):
            # Straight out: nothing else can be waiting for this connection yet.
            send(binary_frame(action.data))
        elif isinstance(action, Established):
            # Records may now be as large as an envelope needs (2 KiB until here).
            ws.protocol.max_message_size = MAX_FRAME_BYTES
        elif isinstance(action, End):
            return action
    return None


async def _unwrap(session: ServerSession, host: Host, ip: str, hello: bytes) -> bytes | HandshakeFailed:
    """The RSA unwrap of a ClientHello, in a thread (cryptography releases the GIL, so
    handshakes use every core and never stall the event loop), if this address and the
    server are within their handshake rates and the queue has room; otherwise
    SERVER_BUSY before any RSA work."""
    if not host.handshake_allowed(ip):
        return HandshakeFailed(HandshakeErrorCode.SERVER_BUSY, "too many handshakes; try again later")
    host.pending_handshakes += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(host.crypto_pool, session.unwrap, hello)
    except HandshakeFailed as exc:
        return exc
    finally:
        host.pending_handshakes -= 1


async def _end(ws: Wire, ip: str, end: End) -> None:
    """Send the HandshakeError and close (PROTOCOL.md sections 1 and 6.4)."""
    # DEBUG: anyone can cause these at will, and a flood must not flood the log.
    log.debug("handshake failed peer=%s: %s", ip, end.reason)
    with contextlib.suppress(ConnectionClosed):
        if end.handshake_error is not None:
            await ws.send(end.handshake_error)
        await ws.close(end.code, end.reason[:120])
