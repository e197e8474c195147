"""Trust on first use: server keys pinned per host and port, like SSH's known_hosts.

The pins live in ``known_servers`` in the user's config directory (``$CHAT_CONFIG_DIR``
if set; else ``%APPDATA%\\chat`` on Windows, ``~/Library/Application Support/chat`` on
macOS, ``$XDG_CONFIG_HOME/chat`` or ``~/.config/chat`` elsewhere), one line per server:
``host:port SHA256:<fingerprint> <base64 DER SubjectPublicKeyInfo>``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chat.keys import KeyFileError, fingerprint, parse_public_key, spki_der

FILE_NAME = "known_servers"
SERVER_KEY_PATH = "/server-key.pem"
MAX_KEY_BYTES = 16 * 1024


def config_dir() -> Path:
    override = os.environ.get("CHAT_CONFIG_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / "chat"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "chat"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "chat"


def server_id(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class KnownServers:
    """The pin file. Unreadable or malformed lines are skipped, never fatal."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / FILE_NAME

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []

    def lookup(self, host: str, port: int) -> rsa.RSAPublicKey | None:
        wanted = server_id(host, port)
        for line in self._lines():
            parts = line.split()
            if len(parts) != 3 or parts[0] != wanted:
                continue
            try:
                key = serialization.load_der_public_key(base64.b64decode(parts[2], validate=True))
            except ValueError:
                continue
            if isinstance(key, rsa.RSAPublicKey) and fingerprint(key) == parts[1]:
                return key
        return None

    def pin(self, host: str, port: int, key: rsa.RSAPublicKey) -> None:
        """Record ``key`` for host:port, replacing an earlier pin for it."""
        wanted = server_id(host, port)
        kept = [line for line in self._lines() if line.split()[:1] != [wanted]]
        entry = f"{wanted} {fingerprint(key)} {base64.b64encode(spki_der(key)).decode('ascii')}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text("\n".join([*kept, entry]) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)


def _fetch(url: str, timeout: float) -> bytes:
    # No proxies: the server is on the LAN, and environment proxies would break that.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        data: bytes = response.read(MAX_KEY_BYTES + 1)
        return data


async def fetch_server_key(host: str, port: int, timeout: float = 10.0) -> rsa.RSAPublicKey:
    """The key the server at host:port presents. Unauthenticated: show its fingerprint
    to the user before trusting it. Raises OSError or KeyFileError."""
    url = f"http://{server_id(host, port)}{SERVER_KEY_PATH}"
    try:
        data = await asyncio.to_thread(_fetch, url, timeout)
    except urllib.error.HTTPError as exc:
        raise OSError(f"the server did not provide its key (HTTP {exc.code})") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise OSError(text) from None
    if len(data) > MAX_KEY_BYTES:
        raise KeyFileError("the server's key is implausibly large")
    return parse_public_key(data, "the server's key")
