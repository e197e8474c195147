"""The web client's files on the server's own port (README "Web client and TLS"), and
the check that keeps other sites' pages from opening a WebSocket to it.

The files are the package directory ``chat/web`` (installed with the package: no build
step), read once at start into memory, and served by exact name only: nothing a request
says is ever used as a path. Every page goes with a Content-Security-Policy that allows
no inline script, no other origin and no framing.

Browsers give WebCrypto only to secure contexts: https pages, and http pages of this
machine (localhost). Over plain http to another name the page could not work, so ``/``
serves ``needs-tls.html`` instead, which says how to turn TLS on.
"""

from __future__ import annotations

import hashlib
import ipaddress
from importlib import resources
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

PACKAGE = "chat.web"
INDEX = "index.html"
NEEDS_TLS = "needs-tls.html"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
#: Host names that are this machine, where browsers allow WebCrypto over http (with the
#: addresses 127.0.0.0/8 and ::1, see is_loopback).
LOOPBACK = {"localhost", "127.0.0.1", "[::1]", "::1"}


class WebFiles:
    """The web client's files, by the path that serves them."""

    def __init__(self, tls: bool) -> None:
        self.tls = tls
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for entry in resources.files(PACKAGE).iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if entry.is_file() and suffix in TYPES and not entry.name.startswith("."):
                body = entry.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                self.files["/" + entry.name] = (body, TYPES[suffix], etag)

    def response(self, request: Request) -> Response | None:
        """The file ``request`` asks for; None when the path is not one of them."""
        path = request.path.partition("?")[0]
        if path == "/":
            host = _host_name(request.headers.get("Host", ""))
            path = "/" + (INDEX if self.tls or is_loopback(host) else NEEDS_TLS)
        found = self.files.get(path)
        if found is None or (path == "/" + NEEDS_TLS and self.tls):
            return None
        body, content_type, etag = found
        headers = Headers({
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-cache",
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cross-Origin-Opener-Policy": "same-origin",
        })  # fmt: skip
        if content_type.startswith("text/html"):
            headers["Content-Security-Policy"] = self.policy(request.headers.get("Host", ""))
        if request.headers.get("If-None-Match") == etag:
            del headers["Content-Length"]
            return Response(304, "Not Modified", headers, b"")
        return Response(200, "OK", headers, body)

    def policy(self, host: str) -> str:
        """The page's Content-Security-Policy: its own files only, and a WebSocket to
        this server (browsers before CSP 3 do not count ws: as 'self')."""
        socket = f"{'wss' if self.tls else 'ws'}://{host}" if _safe_host(host) else ""
        return (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            f"connect-src 'self' {socket}".rstrip() + "; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )

    def foreign_origin(self, request: Request) -> str | None:
        """The ``Origin`` of a WebSocket upgrade that does not come from this server's
        own page (None when it does, or when there is none: not a browser).

        Over plain http the page runs only on a loopback name (elsewhere ``/`` is
        needs-tls.html), so an origin of another name is refused even when the Host
        header says the same name: that is a page of another site whose name was pointed
        at this address (DNS rebinding), e.g. to reach a server that listens on
        127.0.0.1 only. With TLS such a page fails the certificate's name check."""
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        host = request.headers.get("Host", "")
        if not self.tls and not is_loopback(_host_name(host)):
            return origin
        own = f"{'https' if self.tls else 'http'}://{host}"
        return None if _same_origin(origin, own, self.tls) else origin


def is_loopback(name: str) -> bool:
    """Whether a host name (lower case, IPv6 in brackets or not) is this machine as
    browsers count it for a secure context: localhost, *.localhost, 127.0.0.0/8, ::1."""
    if name in LOOPBACK or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """``host`` (a Host header) without its port, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rpartition(":")[0] if ":" in host else host


def _safe_host(host: str) -> bool:
    """Whether a Host header may go into a header we send (no spaces, quotes or ;)."""
    return bool(host) and all(c.isalnum() or c in ".-:[]" for c in host)


def _same_origin(origin: str, own: str, tls: bool) -> bool:
    """Whether ``origin`` is exactly ``own`` (case and default ports aside): a browser
    sends scheme://host[:port] and nothing more, so anything more is not this server."""
    default = 443 if tls else 80
    try:
        a, b = urlsplit(origin.strip().lower()), urlsplit(own.lower())
        if a.username is not None or a.password is not None or a.path or a.query or a.fragment:
            return False
        return (a.scheme, a.hostname, a.port or default) == (b.scheme, b.hostname, b.port or default)
    except ValueError:
        return False
