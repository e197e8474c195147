"""The chat client program: choosing the server key (the options are in options.py),
and starting the chat loop (client.py) in line mode or terminal mode.

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
import signal
import sys
import threading
from pathlib import Path

from chat.client import own_lines
from chat.client.client import EXIT_OK, ChatClient
from chat.client.config import ClientConfig
from chat.client.file_policy import DownloadLimits
from chat.client.inputs import LineInput, PipeInput
from chat.client.known_servers import KnownServers
from chat.client.options import PROG, build_parser, file_size
from chat.client.output import Output, PlainOutput, TerminalOutput
from chat.client.pacing import Pacer
from chat.client.roster import Roster
from chat.client.servers import ServerList, parse_servers
from chat.client.style import colour_enabled
from chat.client.tls_layer import tls_choice
from chat.client.transport import ClientError, open_session
from chat.client.trust import TrustedKey, check_against_pin, key_file, load_key_file, trust_on_first_use
from chat.keys import fingerprint
from chat.protocol.tickets import TicketWallet

__all__ = ["EXIT_OK", "Pacer", "build_parser", "file_size", "main"]

EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + 15


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
    # Session tickets (memory only) let reconnections skip the server's RSA work.
    opener = functools.partial(open_session, tls=tls, tickets=TicketWallet())
    nodes = ServerList(servers, opener, trusted.key, trusted.label)
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
