"""Which server key the client trusts (README, "Connect a client").

A PUBLIC_PEM given on the command line, else ``keys/public.pem`` if it exists (and agrees
with the key pinned for host:port, if any), is the server's key. Otherwise trust on first
use: the client fetches the key the server presents (unauthenticated, PROTOCOL.md section
1.1) and compares it with the key pinned for host:port in ``known_servers``, like SSH's known_hosts:

* pinned and the same: use it;
* pinned and different: refuse (someone may be impersonating the server);
* not pinned: ask on a terminal; in line mode refuse unless ``--accept-new-key``.

``--fingerprint`` names the expected key out of band: the presented key must have it,
and is then pinned (replacing an older pin). The handshake afterwards proves that the
server holds the private half of whichever key was chosen.

With ``--tls`` the key is fetched over https. Unless the system's trust store vouches
for that connection's certificate, the certificate must have been issued by the key
about to be trusted (or be the one pinned with ``--tls-fingerprint``): otherwise the key
is refused before anything is asked or pinned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from chat.client.known_servers import KnownServers, fetch_server_key, server_id
from chat.client.tls_layer import (
    TlsChoice,
    add_tls,
    drop_tls,
    fetch_key_over_tls,
    refused_certificate,
    speaks_plain_http,
    speaks_tls,
)
from chat.client.transport import EXIT_BAD_SERVER_KEY, EXIT_CANNOT_CONNECT, ClientError, server_uri
from chat.keys import KeyFileError, fingerprint, load_public_key, parse_public_key
from chat.tls import accepted

DEFAULT_PUBLIC_PEM = Path("keys/public.pem")
EXIT_USAGE = 2
TRUST_QUESTION = "Trust this server? (yes/no) "

#: Asks the user a question on the terminal; None at end of input.
Ask = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class TrustedKey:
    key: rsa.RSAPublicKey
    #: Where the key came from, for the wrong-key message of the handshake.
    label: str


def key_file(public_pem: str | None) -> Path | None:
    """The key file to use, or None for trust on first use."""
    if public_pem is not None:
        return Path(public_pem)
    return DEFAULT_PUBLIC_PEM if DEFAULT_PUBLIC_PEM.exists() else None


def normal_fingerprint(text: str) -> str:
    """``SHA256:abc``, ``sha256:abc=`` or ``abc`` -> ``SHA256:abc`` (as printed by the server)."""
    text = text.strip()
    if text[:7].lower() == "sha256:":
        text = text[7:]
    return "SHA256:" + text.rstrip("=")


def load_key_file(path: Path, expected: str | None, prog: str) -> TrustedKey:
    """The key in ``path``; a usage error (exit 2) if it cannot be read, and refused if
    ``--fingerprint`` says otherwise."""
    try:
        key = load_public_key(path)
    except KeyFileError as exc:
        raise ClientError(f"{prog}: {exc}", EXIT_USAGE) from None
    if expected is not None and fingerprint(key) != normal_fingerprint(expected):
        raise ClientError(
            f"The key in {path} has the fingerprint {fingerprint(key)}, not {normal_fingerprint(expected)} "
            "as given with --fingerprint: refusing to connect.",
            EXIT_BAD_SERVER_KEY,
        )
    return TrustedKey(key, str(path))


def check_against_pin(trusted: TrustedKey, host: str, port: int, known: KnownServers) -> TrustedKey:
    """An implicit ``keys/public.pem`` (found in the working directory, not named by the
    user) never silently overrides the key pinned for host:port: a shared folder or an
    unpacked archive could have planted it (review L3). A key file the user names on the
    command line is the user's choice and is not checked here."""
    pinned = known.lookup(host, port)
    if pinned is None or fingerprint(pinned) == fingerprint(trusted.key):
        return trusted
    raise ClientError(
        f"WARNING: {trusted.label} in the working directory has the fingerprint "
        f"{fingerprint(trusted.key)}, but the key remembered for {server_id(host, port)} has "
        f"{fingerprint(pinned)}: refusing to connect. If the server's key really changed, "
        f"delete its line from {known.path}, or name the key file on the command line "
        f"({trusted.label}) to use it anyway.",
        EXIT_BAD_SERVER_KEY,
    )


async def trust_on_first_use(
    host: str,
    port: int,
    *,
    known: KnownServers,
    expected: str | None,
    accept_new: bool,
    ask: Ask | None,
    inform: Callable[[str], None],
    note: Callable[[str], None],
    tls: TlsChoice | None = None,
) -> TrustedKey:
    """The key to use for host:port (see the module docstring). ``ask`` is None in line
    mode; ``inform`` prints the first-use explanation on the terminal, ``note`` a remark
    that must stay off stdout in line mode. Raises ClientError when the key is refused."""
    where = server_id(host, port)
    presented, certificate = await _presented_key(host, port, tls)

    def vouch(key: rsa.RSAPublicKey) -> None:
        """The certificate of the https fetch must be acceptable with ``key`` trusted."""
        if tls is not None and certificate is not None and not accepted(certificate, key, tls.pinned):
            raise ClientError(refused_certificate(host, port, certificate, tls), EXIT_BAD_SERVER_KEY)

    seen = fingerprint(presented)
    label = f"the key pinned for {where} in {known.path}"
    if expected is not None:
        wanted = normal_fingerprint(expected)
        if seen != wanted:
            raise ClientError(
                f"The server at {where} presented the key {seen}, not {wanted} as given with "
                "--fingerprint: refusing to connect.",
                EXIT_BAD_SERVER_KEY,
            )
        vouch(presented)
        pinned = known.lookup(host, port)
        if pinned is None or fingerprint(pinned) != seen:
            _pin(known, host, port, presented, note)
        return TrustedKey(presented, label)
    pinned = known.lookup(host, port)
    if pinned is not None:
        if fingerprint(pinned) == seen:
            vouch(pinned)
            return TrustedKey(pinned, label)
        raise ClientError(changed_warning(where, fingerprint(pinned), seen, known.path, ask is not None),
                          EXIT_BAD_SERVER_KEY)  # fmt: skip
    vouch(presented)
    if accept_new:
        _pin(known, host, port, presented, note)
        return TrustedKey(presented, label)
    if ask is None:
        raise ClientError(
            f"The server at {where} is not known yet (its key fingerprint is {seen}): verify the "
            "fingerprint with the server's owner, then rerun with --accept-new-key or "
            f"--fingerprint {seen}.",
            EXIT_BAD_SERVER_KEY,
        )
    inform(f"The chat server at {where} is not known yet (not in {known.path}).")
    inform(f"Its key fingerprint is {seen}.")
    inform("Check that it is the fingerprint the server printed when it started (ask its owner).")
    answer = await ask(TRUST_QUESTION)
    if answer is None or answer.strip().lower() != "yes":
        raise ClientError(f"Not trusted: not connecting to {where}.", EXIT_BAD_SERVER_KEY)
    _pin(known, host, port, presented, inform)
    return TrustedKey(presented, label)


async def _presented_key(
    host: str, port: int, tls: TlsChoice | None
) -> tuple[rsa.RSAPublicKey, bytes | None]:
    """The key the server presents, and over TLS the certificate of that connection when
    the system's store did not vouch for it. Raises ClientError."""
    uri = server_uri(host, port, tls is not None)
    try:
        if tls is None:
            return await fetch_server_key(host, port), None
        fetched = await fetch_key_over_tls(host, port)
        return parse_public_key(fetched.pem, "the server's key"), fetched.unvouched
    except OSError as exc:
        message = f"Cannot connect to the server at {uri}: {exc.strerror or exc}"
        refused = isinstance(exc, (ConnectionRefusedError, TimeoutError))
        if not refused and tls is None and await speaks_tls(host, port):
            message = add_tls(uri)
        elif not refused and tls is not None and await speaks_plain_http(host, port):
            message = drop_tls(uri, tls)
        raise ClientError(message, EXIT_CANNOT_CONNECT) from None
    except KeyFileError as exc:
        raise ClientError(
            f"The server at {server_id(host, port)} presented an unusable key ({exc}): refusing to connect.",
            EXIT_BAD_SERVER_KEY,
        ) from None


def _pin(
    known: KnownServers, host: str, port: int, key: rsa.RSAPublicKey, say: Callable[[str], None]
) -> None:
    try:
        known.pin(host, port, key)
    except OSError as exc:
        say(f"Could not remember the key of {server_id(host, port)} in {known.path}: {exc.strerror or exc}.")
        return
    say(f"Pinned the key {fingerprint(key)} of {server_id(host, port)} in {known.path}.")


def changed_warning(where: str, pinned: str, seen: str, path: Path, several_lines: bool) -> str:
    """The refusal when the key changed: one line in line mode (README "Connect a client"), a block
    a person reads on a terminal."""
    parts = [
        f"WARNING: the key of the chat server at {where} has CHANGED: refusing to connect.",
        "Someone may be impersonating the server, or its owner replaced the key.",
        f"Pinned key: {pinned}; key presented now: {seen}.",
        f"If the change is expected (check with the server's owner), remove the line for {where} "
        f"from {path}, or pin the new key with --fingerprint {seen}.",
    ]
    return "\n".join(parts) if several_lines else " ".join(parts)
