"""The client's command line (``chat-client --help``): its options, their help and
the argparse types of their values. app.py turns the parsed options into a run."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from chat.client.config import DEFAULT_DOWNLOAD_DIR, DEFAULT_MAX_FILE_SIZE, DEFAULT_PORT
from chat.client.file_policy import DEFAULT_DOWNLOAD_QUOTA, DEFAULT_FILES_PER_MINUTE, DEFAULT_MAX_INCOMING
from chat.client.known_servers import KnownServers
from chat.client.trust import DEFAULT_PUBLIC_PEM
from chat.tls import normal_cert_fingerprint

PROG = "chat-client"
N = TypeVar("N", int, float)

DESCRIPTION = """\
Chat on a chat server: messages to everyone, to one person or to a group, and files.
Everything between you and the server is encrypted, and the client checks the server's
key before it sends anything, even your name.

On a terminal the client is interactive: type a message and press Enter to send it to
everyone, or a command such as /msg jojo hi (/help lists them all). Tab completes
commands, names and groups; Up and Down recall what you typed. If the connection drops,
the client reconnects by itself.

When stdin is not a terminal (a pipe, a file, a script) it runs in line mode: one command
per line in (the first line is your username unless --username is given), one event per
line out, and it exits after /quit or at the end of the input.
"""


def _epilog() -> str:
    known = KnownServers().path
    return f"""\
examples:
  {PROG} 192.168.1.104 keys/public.pem
      connect with the server's public key file (copy it from the server; it is not secret)
  {PROG} chat.lan --username sophia
      no key file: the client shows the key fingerprint the server presents and asks
      whether to trust it, then remembers it for chat.lan:8767 in
      {known}
  printf 'hello everyone\\n/quit\\n' | {PROG} chat.lan --username bot --accept-new-key
      line mode, for a script
  {PROG} chat.lan --tls
      the server was started with --tls: connect over wss:// (its certificate must be issued
      by the server key you trust, or vouched for by a public authority)
  {PROG} chat.lan --ask-files --download-quota 200M
      ask before accepting each file (/accept, /decline), and accept 200 MiB in all

exit status: 0 after /quit or at the end of input; 2 wrong usage or an unreadable file;
3 cannot reach the server (or --tls is missing or wrong for it); 4 the server's key is wrong,
has changed or is not trusted, or its TLS certificate is refused;
5 the connection was lost (line mode without --reconnect) or the client could not log back in.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "server_host", metavar="SERVER_HOST",
        help="the server's host name or address, or a list host1[:port],host2[:port] of the nodes of "
        "one service: the first that answers, the others after a lost connection",
    )
    parser.add_argument(
        "public_pem",
        metavar="PUBLIC_PEM",
        nargs="?",
        help=f"the server's public key file (default: {DEFAULT_PUBLIC_PEM.as_posix()} if it exists; "
        "otherwise the key is fetched from the server and trusted on first use, see --accept-new-key)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"the server's port (default: {DEFAULT_PORT})"
    )
    parser.add_argument("--username", metavar="NAME", help="log in as NAME instead of being asked")
    parser.add_argument(
        "--password-file",
        metavar="PATH",
        type=Path,
        help="read the password of a registered username from the first line of PATH (for scripts)",
    )
    parser.add_argument(
        "--fingerprint",
        metavar="SHA256:...",
        help="connect only if the server's key has this fingerprint (the one the server prints when "
        "it starts, given to you by its owner), and remember that key; also the way to accept a "
        "server's new key after it changed",
    )
    parser.add_argument(
        "--accept-new-key",
        action="store_true",
        help="trust and remember the key of a server not seen before without asking (needed in "
        "line mode, like SSH's accept-new); a key that changed is still refused",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect with wss:// (and fetch the key for trust on first use over https://), for a "
        "server started with --tls, --tls-cert or behind a TLS proxy. Its certificate is accepted if "
        "the system's trust store vouches for it with the host name, or if it was issued by the "
        "server key this client trusts (the certificate chat-server --tls makes); otherwise only "
        "with --tls-fingerprint. The server key is checked as always",
    )
    parser.add_argument(
        "--tls-fingerprint",
        metavar="HEX",
        type=tls_fingerprint,
        help="accept the server's TLS certificate if its SHA-256 fingerprint is HEX (AB:CD:... as "
        "the server or a browser shows it; colons optional), for a certificate neither a public "
        "authority nor the server key vouches for; implies --tls",
    )
    parser.add_argument(
        "--download-dir",
        metavar="DIR",
        default=DEFAULT_DOWNLOAD_DIR,
        help=f"where received files are saved, created if needed (default: {DEFAULT_DOWNLOAD_DIR})",
    )
    parser.add_argument(
        "--max-file-size",
        metavar="BYTES",
        type=file_size,
        default=DEFAULT_MAX_FILE_SIZE,
        help="largest file sent or accepted, in bytes; K, M, G suffixes (powers of 1024) "
        "are understood (default: 1G)",
    )
    parser.add_argument(
        "--download-quota",
        metavar="BYTES",
        type=file_size,
        default=DEFAULT_DOWNLOAD_QUOTA,
        help="bytes of files others may make this client download in all while it runs "
        "(K, M, G suffixes; 0 = no quota; default: 1G); offers beyond it are declined",
    )
    parser.add_argument(
        "--files-per-minute",
        metavar="N",
        type=count_of(float),
        default=DEFAULT_FILES_PER_MINUTE,
        help=f"file offers accepted from one sender per minute, after a burst of as many "
        f"(0 = no limit; default: {DEFAULT_FILES_PER_MINUTE})",
    )
    parser.add_argument(
        "--max-incoming-files",
        metavar="N",
        type=count_of(int),
        default=DEFAULT_MAX_INCOMING,
        help=f"files received at once; further offers are declined (default: {DEFAULT_MAX_INCOMING})",
    )
    parser.add_argument(
        "--ask-files",
        action="store_true",
        help="ask before accepting each file (answer with /accept or /decline) instead of "
        "accepting automatically",
    )
    parser.add_argument(
        "--open",
        action="store_true",
        help="offer to open each received file with the desktop's default program (/open "
        "opens it; programs, scripts, launchers and web pages, by name or by content, and "
        "files with an execute bit are never opened; off by default)",
    )
    parser.add_argument(
        "--reconnect",
        action="store_true",
        help="line mode: when the connection is lost, reconnect and carry on where it stopped "
        "(messages missed meanwhile are shown, lines typed meanwhile sent; it prints "
        "[Connection lost; reconnecting...] and [Reconnected as NAME.]); a terminal always does",
    )
    parser.add_argument(
        "--no-color",
        action="store_true",
        help="no colours on a terminal (also off when the NO_COLOR environment variable is set)",
    )
    parser.add_argument(
        "--timestamps",
        action="store_true",
        help="on a terminal, show the time (HH:MM) in front of each line",
    )
    return parser


_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def file_size(text: str) -> int:
    """``1048576``, ``512K``, ``10M``, ``1G``, ``2GiB`` -> bytes (an argparse type)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def tls_fingerprint(text: str) -> str:
    """A certificate's SHA-256 fingerprint in the form ``AB:CD:...`` (an argparse type)."""
    try:
        return normal_cert_fingerprint(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a SHA-256 fingerprint (64 hexadecimal digits, colons optional): {text!r}"
        ) from None


def count_of(kind: Callable[[str], N]) -> Callable[[str], N]:
    """An argparse type: a finite number of ``kind`` (int or float), 0 or more."""

    def parse(text: str) -> N:
        try:
            value = kind(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"not a number of 0 or more: {text!r}")
        return value

    return parse
