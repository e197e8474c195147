"""The chat client program: the command line, choosing the server key, and starting the
chat loop (client.py) in line mode or terminal mode.

* line mode (stdin is not a terminal): a thread reads stdin (inputs.py); each event is
  printed as one plain line, exactly as docs/messages.md lists it.
* terminal mode: prompt_toolkit reads lines (terminal.py) with completion and history;
  events print above the input line in colour (output.py), ``patch_stdout`` catches any
  other output; running file transfers show their progress in a bottom bar; a lost
  connection is re-established.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from chat.client import own_lines
from chat.client.client import EXIT_OK, ChatClient
from chat.client.config import DEFAULT_DOWNLOAD_DIR, DEFAULT_MAX_FILE_SIZE, DEFAULT_PORT, ClientConfig
from chat.client.file_policy import (
    DEFAULT_DOWNLOAD_QUOTA,
    DEFAULT_FILES_PER_MINUTE,
    DEFAULT_MAX_INCOMING,
    DownloadLimits,
)
from chat.client.inputs import LineInput, PipeInput
from chat.client.known_servers import KnownServers
from chat.client.output import Output, PlainOutput, TerminalOutput
from chat.client.pacing import Pacer
from chat.client.roster import Roster
from chat.client.servers import ServerList, parse_servers
from chat.client.style import colour_enabled
from chat.client.tls_layer import tls_choice
from chat.client.transport import ClientError, open_session
from chat.client.trust import (
    DEFAULT_PUBLIC_PEM,
    TrustedKey,
    check_against_pin,
    key_file,
    load_key_file,
    trust_on_first_use,
)
from chat.keys import fingerprint
from chat.tls import normal_cert_fingerprint

__all__ = ["EXIT_OK", "Pacer", "build_parser", "file_size", "main"]

PROG = "chat-client"
N = TypeVar("N", int, float)
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + 15

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


def read_password_file(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"{PROG}: cannot read --password-file {path}: {exc}", EXIT_USAGE) from None
    return lines[0] if lines else ""


async def run(args: argparse.Namespace, trusted: TrustedKey | None, *, terminal: bool) -> int:
    """``trusted`` is the key from a key file, or None for trust on first use."""
    terminated = _cancel_on_sigterm()
    try:
        return await _run(args, trusted, terminal=terminal, lines=None, out=None)
    except asyncio.CancelledError:
        if terminated.is_set():
            return EXIT_TERMINATED  # stopped by SIGTERM, temporary files cleaned up
        raise


def _cancel_on_sigterm() -> threading.Event:
    """SIGTERM cancels the client, so its finally blocks (deleting the temporary files of
    unfinished transfers) run. Windows has no such signal handler: nothing is done."""
    terminated = threading.Event()
    task = asyncio.current_task()
    if task is None:
        return terminated

    def on_sigterm() -> None:
        terminated.set()
        task.cancel()

    with contextlib.suppress(NotImplementedError, AttributeError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
    return terminated


def _say(line: str) -> None:
    print(line, flush=True)


def _say_on_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def run_line_mode(
    args: argparse.Namespace, trusted: TrustedKey | None, lines: LineInput, out: Output
) -> int:
    """Line mode reading ``lines`` and showing events on ``out`` (tests run clients in
    one process this way). Raises ClientError as ``run`` does."""
    return await _run(args, trusted, terminal=False, lines=lines, out=out)


async def _run(
    args: argparse.Namespace,
    trusted: TrustedKey | None,
    *,
    terminal: bool,
    lines: LineInput | None,
    out: Output | None,
) -> int:
    password = read_password_file(args.password_file)
    colour = terminal and colour_enabled(args.no_color)
    roster = Roster()
    prompt = None
    if terminal:
        from chat.client.terminal import TerminalInput

        prompt = TerminalInput(roster, colour=colour)
    servers = parse_servers(args.server_host, args.port)
    tls = tls_choice(args.tls, args.tls_fingerprint)
    if trusted is None:
        trusted = await trust_on_first_use(
            *servers[0],
            known=KnownServers(),
            expected=args.fingerprint,
            accept_new=args.accept_new_key,
            ask=prompt.read_line if prompt is not None else None,
            inform=_say,
            note=_say if terminal else _say_on_stderr,  # line mode: stdout is only events
            tls=tls,
        )
    # Every node, and every reconnection, with the same TLS choice.
    nodes = ServerList(servers, functools.partial(open_session, tls=tls), trusted.key, trusted.label)
    session = await nodes.connect()
    connect = nodes.reconnect
    config = client_config(args)
    if prompt is None:
        if lines is None:
            lines = PipeInput(sys.stdin.fileno() if sys.stdin is not None else None)
        client = ChatClient(
            session, lines, out or PlainOutput(), ordered_local_output=True, config=config, password=password,
            reconnect=connect if args.reconnect else None,
        )  # fmt: skip
        return await client.run(args.username)

    from prompt_toolkit.patch_stdout import patch_stdout

    out = TerminalOutput(colour=colour, timestamps=args.timestamps)
    key = fingerprint(trusted.key)
    out.show(own_lines.connected(session.uri, key))
    with patch_stdout(raw=True):
        client = ChatClient(
            session, prompt, out, ordered_local_output=False, config=config, password=password,
            reconnect=connect, roster=roster,
        )  # fmt: skip
        return await client.run(args.username)


def trusted_key(args: argparse.Namespace) -> TrustedKey | None:
    """The server key from the key file (checked against --fingerprint and the pin), or
    None: fetch it and trust it on first use. Raises ClientError."""
    path = key_file(args.public_pem)
    trusted = load_key_file(path, args.fingerprint, PROG) if path is not None else None
    if trusted is not None and args.public_pem is None:
        host, port = parse_servers(args.server_host, args.port)[0]
        trusted = check_against_pin(trusted, host, port, KnownServers())
    return trusted


def client_config(args: argparse.Namespace) -> ClientConfig:
    """The configuration the command line asks for."""
    return ClientConfig(
        port=args.port,
        download_dir=Path(args.download_dir),
        max_file_size=args.max_file_size,
        open_files=args.open,
        ask_files=args.ask_files,
        download_limits=DownloadLimits(args.download_quota, args.files_per_minute, args.max_incoming_files),
    )


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not 0 < args.port < 65536:
        print(f"{PROG}: --port must be between 1 and 65535", file=sys.stderr)
        return EXIT_USAGE
    try:
        parse_servers(args.server_host, args.port)
    except ValueError as exc:
        print(f"{PROG}: SERVER_HOST: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if hasattr(sys.stdout, "reconfigure"):
        # A console that cannot show a character must not end the session.
        sys.stdout.reconfigure(errors="replace")
    terminal = sys.stdin is not None and sys.stdin.isatty() and sys.stdout.isatty()
    try:
        return asyncio.run(run(args, trusted_key(args), terminal=terminal))
    except ClientError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
