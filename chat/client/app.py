"""The chat client program: command line, login, and the chat loop.

Two ways to read input, one loop:

* line mode (stdin is not a terminal): a thread reads stdin and queues lines; events are
  printed as they arrive while commands keep being sent. Local lines (usage, help) wait
  until every earlier request is answered, so each command's output appears in order.
  At end of input the client waits for every reply, then quits.
* terminal mode: prompt_toolkit reads lines, and ``patch_stdout`` prints incoming lines
  above the input line; running file transfers show their progress in a bottom bar.

File transfers (transfers.py) run as tasks of their own beside this loop. Quitting
(``/quit`` or end of input) waits for them to end first, declining new offers meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from chat.client.commands import COMMAND_WORDS, Action, Send, SendFile, Show, help_lines, parse
from chat.client.render import render
from chat.client.transfers import DEFAULT_MAX_FILE_SIZE, TransferManager
from chat.client.transport import ClientError, ClientSession, Disconnected, open_session
from chat.keys import KeyFileError, fingerprint, load_public_key
from chat.protocol.envelope import MAX_LOGIN_NAME_CHARS, Envelope
from chat.protocol.errors import EnvelopeError

PROG = "chat-client"
DEFAULT_PORT = 8767
DEFAULT_PUBLIC_PEM = "keys/public.pem"
USERNAME_PROMPT = "Enter your username: "
PASSWORD_PROMPT = "Password: "
NEW_PASSWORD_PROMPT = "New password: "
REPEAT_PASSWORD_PROMPT = "Repeat password: "
CHAT_PROMPT = "> "
#: How long to wait for the server to acknowledge ``quit`` before closing anyway.
QUIT_TIMEOUT = 10.0
#: Our own pace, under the server's guaranteed minimum (SPEC section 4: 10 per second,
#: bursts of 30), so a piped script is slowed down rather than disconnected.
PACE_PER_SECOND = 8.0
PACE_BURST = 20
#: How often the terminal's transfer progress bar is redrawn.
STATUS_INTERVAL = 0.5
DEFAULT_DOWNLOAD_DIR = "downloads/"

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + 15


def emit(line: str) -> None:
    """Print one line now (looked up each time: patch_stdout swaps sys.stdout)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- input sources ------------------------------------------------------------------


class LineInput(Protocol):
    async def read_line(self, prompt: str = "") -> str | None:
        """The next line without its terminator, or None at end of input."""

    async def read_secret(self, prompt: str) -> str | None:
        """Like read_line, without echo where there is a terminal."""

    def show_status(self, lines: list[str]) -> None:
        """Show these lines (transfer progress) below the input line; [] hides them."""


class PipeInput:
    """Lines from a pipe or file, read by a daemon thread (portable: no add_reader on
    Windows pipes) that never blocks interpreter exit. Reads raw bytes from the file
    descriptor so the thread holds no lock of ``sys.stdin``."""

    def __init__(self, fd: int | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._eof = False
        if fd is None:
            self._queue.put_nowait(None)
        else:
            threading.Thread(target=self._pump, args=(fd,), name="stdin-reader", daemon=True).start()

    def _put(self, item: str | None) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the client is exiting
            return False
        return True

    def _pump(self, fd: int) -> None:
        decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        pending = ""
        try:
            while chunk := os.read(fd, 65536):
                pending += decoder.decode(chunk)
                *lines, pending = pending.split("\n")
                for line in lines:
                    if not self._put(line.removesuffix("\r")):
                        return
            pending += decoder.decode(b"", final=True)
            if pending:
                self._put(pending.removesuffix("\r"))
        except OSError:
            pass
        finally:
            self._put(None)

    async def read_line(self, prompt: str = "") -> str | None:
        if prompt:
            sys.stdout.write(prompt)
            sys.stdout.flush()
        if self._eof:
            return None
        line = await self._queue.get()
        if line is None:
            self._eof = True
        return line

    async def read_secret(self, prompt: str) -> str | None:
        """In line mode a password is simply the next line (SPEC section 2)."""
        return await self.read_line(prompt)

    def show_status(self, lines: list[str]) -> None:
        """Line mode shows no progress: its output is exactly the events' lines."""


class TerminalInput:
    """Lines typed at a prompt_toolkit prompt, with history and command completion."""

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import WordCompleter
        from prompt_toolkit.history import InMemoryHistory

        self._session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(),
            completer=WordCompleter(list(COMMAND_WORDS), sentence=True),
        )

    async def read_line(self, prompt: str = "") -> str | None:
        try:
            return await self._session.prompt_async(prompt or CHAT_PROMPT)
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C: leave quietly
            return None

    async def read_secret(self, prompt: str) -> str | None:
        try:
            return await self._session.prompt_async(prompt, is_password=True, enable_history_search=False)
        except (EOFError, KeyboardInterrupt):
            return None

    def show_status(self, lines: list[str]) -> None:
        toolbar = "\n".join(lines) if lines else None
        if toolbar == self._session.bottom_toolbar:
            return
        # prompt_toolkit re-reads this attribute at each redraw; None hides the bar.
        self._session.bottom_toolbar = toolbar
        with contextlib.suppress(Exception):  # no prompt on screen at the moment
            self._session.app.invalidate()


class Pacer:
    """A token bucket on our side of the rate limit: ``wait()`` before each request."""

    def __init__(self, rate: float = PACE_PER_SECOND, burst: int = PACE_BURST) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    async def wait(self) -> None:
        """Take a token, sleeping until it is due. Safe with several waiting tasks (the
        chat and file transfers): each reserves its token first, so the bucket may go
        negative and later callers sleep correspondingly longer."""
        now = asyncio.get_running_loop().time()
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1.0
        if self._tokens < 0.0:
            await asyncio.sleep(-self._tokens / self._rate)


# --- the client -----------------------------------------------------------------------


class ChatClient:
    """Logs in, then sends each parsed input line while a second task prints events."""

    def __init__(
        self,
        session: ClientSession,
        lines: LineInput,
        *,
        ordered_local_output: bool,
        download_dir: Path = Path(DEFAULT_DOWNLOAD_DIR),
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        open_files: bool = False,
        password: str | None = None,
    ) -> None:
        self._session = session
        #: From --password-file: used for the first login that asks for one.
        self._password = password
        self._lines = lines
        self._ordered_local_output = ordered_local_output
        self._quitting = False
        self._pacer = Pacer()
        self._transfers = TransferManager(
            session,
            emit=emit,
            pace=self._pacer.wait,
            download_dir=download_dir,
            max_file_size=max_file_size,
            open_files=open_files,
        )

    async def run(self, username: str | None) -> int:
        receiver = asyncio.create_task(self._receive_loop(), name="receiver")
        flow = asyncio.create_task(self._flow(username), name="flow")
        status = asyncio.create_task(self._status_loop(), name="status")
        lost: str | None = None
        try:
            done, _ = await asyncio.wait({receiver, flow}, return_when=asyncio.FIRST_COMPLETED)
            if flow in done:
                return flow.result()
            try:
                receiver.result()  # raises why the connection ended
            except ClientError:
                lost = "the connection to the server was lost"
                raise
            return await flow  # it ended because we quit
        finally:
            for task in (receiver, flow, status):
                task.cancel()
            await asyncio.gather(receiver, flow, status, return_exceptions=True)
            # Deletes the temporary files of unfinished transfers, whatever ended us.
            await self._transfers.close(lost)
            self._lines.show_status([])
            await self._session.close()

    async def _receive_loop(self) -> None:
        while True:
            try:
                event = await self._session.recv()
            except Disconnected:
                if self._quitting:
                    return
                raise
            if self._transfers.dispatch(event):
                continue
            for line in render(event):
                emit(line)

    async def _status_loop(self) -> None:
        """Keep the progress bar of running transfers up to date (terminal mode)."""
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            self._lines.show_status(self._transfers.status_lines())

    async def _flow(self, username: str | None) -> int:
        if not await self._login(username):
            return EXIT_OK  # end of input before a login succeeded
        while True:
            line = await self._lines.read_line()
            if line is None:
                break
            parsed = parse(line)
            if isinstance(parsed, Send):
                await self._send(parsed)
            elif isinstance(parsed, SendFile):
                await self._show(await self._transfers.send_file(parsed))
            elif isinstance(parsed, Show):
                await self._show(parsed.lines)
            elif parsed is Action.HELP:
                await self._show(help_lines())
            elif parsed is Action.REGISTER:
                await self._register()
            elif parsed is Action.PASSWD:
                await self._change_password()
            elif parsed is Action.QUIT:
                break
        await self._quit()
        return EXIT_OK

    async def _login(self, username: str | None) -> bool:
        """Ask for names until the server welcomes one; False at end of input."""
        while True:
            name = username if username is not None else await self._lines.read_line(USERNAME_PROMPT)
            username = None
            if name is None:
                return False
            name = name.strip()
            if len(name) > MAX_LOGIN_NAME_CHARS:
                rejection = Envelope("error", {"code": "username_invalid", "name": name,
                                               "detail": "use 1-32 characters"})  # fmt: skip
                await self._show(render(rejection))
                continue
            # The receive loop prints the reply: the welcome line or why the name was refused.
            reply = await self._session.request("login", name=name)
            if reply.type == "error" and reply.get("code") == "password_required":
                password, self._password = self._password, None
                if password is None:
                    password = await self._lines.read_secret(PASSWORD_PROMPT)
                if password is None:
                    return False
                reply = await self._session.request("login", name=name, password=password)
            if reply.type == "welcome":
                return True

    async def _ask_secret(self, prompt: str) -> str | None:
        if self._ordered_local_output:
            await self._session.wait_idle()  # the prompt comes after earlier commands' output
        return await self._lines.read_secret(prompt)

    async def _new_password(self, prompt: str) -> str | None:
        """Ask twice; None (after saying why) if the two differ or input ended."""
        first = await self._ask_secret(prompt)
        second = await self._ask_secret(REPEAT_PASSWORD_PROMPT) if first is not None else None
        if first is None or second is None:
            return None
        if first != second:
            await self._show(["Passwords do not match; nothing was changed."])
            return None
        return first

    async def _register(self) -> None:
        password = await self._new_password(PASSWORD_PROMPT)
        if password is not None:
            await self._send(Send("register", {"password": password}))

    async def _change_password(self) -> None:
        old = await self._ask_secret(PASSWORD_PROMPT)
        if old is None:
            return
        new = await self._new_password(NEW_PASSWORD_PROMPT)
        if new is not None:
            await self._send(Send("change_password", {"old_password": old, "new_password": new}))

    async def _send(self, request: Send) -> None:
        await self._pacer.wait()
        try:
            await self._session.send(request.kind, **request.fields)
        except EnvelopeError as exc:
            await self._show([f"Cannot send that: {exc}."])

    async def _show(self, lines: list[str] | tuple[str, ...]) -> None:
        if not lines:
            return
        if self._ordered_local_output:
            await self._session.wait_idle()
        for line in lines:
            emit(line)

    async def _quit(self) -> None:
        await self._session.wait_idle()
        # What was sent includes files: wait for every transfer to end (new offers are
        # declined meanwhile), and for the replies to their last requests.
        self._transfers.stop_accepting()
        if self._transfers.active and not self._ordered_local_output:
            emit("Waiting for file transfers to finish (Ctrl-C to stop them)...")
        await self._transfers.wait_finished()
        await self._session.wait_idle()
        self._quitting = True
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError, ClientError):
            await asyncio.wait_for(self._session.request("quit"), QUIT_TIMEOUT)


# --- the program ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Connect to a chat server, verify its key, and chat.",
    )
    parser.add_argument("server_host", metavar="SERVER_HOST", help="the server's host name or address")
    parser.add_argument(
        "public_pem",
        metavar="PUBLIC_PEM",
        nargs="?",
        default=DEFAULT_PUBLIC_PEM,
        help=f"the server's public key (default: {DEFAULT_PUBLIC_PEM})",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"server port (default: {DEFAULT_PORT})"
    )
    parser.add_argument("--username", metavar="NAME", help="log in as NAME instead of asking")
    parser.add_argument(
        "--download-dir",
        metavar="DIR",
        default=DEFAULT_DOWNLOAD_DIR,
        help=f"where received files go, created if needed (default: {DEFAULT_DOWNLOAD_DIR})",
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
        "--open",
        action="store_true",
        help="open each received file with the desktop's default program (off by default)",
    )
    parser.add_argument(
        "--password-file",
        metavar="PATH",
        type=Path,
        help="read the password for a registered username from the first line of PATH (for scripts)",
    )
    parser.add_argument(
        "--accept-new-key",
        action="store_true",
        help="in line mode, trust an unknown server key, like SSH (not in this version yet)",
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


def read_password_file(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"{PROG}: cannot read --password-file {path}: {exc}", EXIT_USAGE) from None
    return lines[0] if lines else ""


async def run(args: argparse.Namespace, server_key: rsa.RSAPublicKey, *, terminal: bool) -> int:
    terminated = _cancel_on_sigterm()
    try:
        return await _run(args, server_key, terminal=terminal)
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


async def _run(args: argparse.Namespace, server_key: rsa.RSAPublicKey, *, terminal: bool) -> int:
    password = read_password_file(args.password_file)
    session = await open_session(args.server_host, args.port, server_key, key_label=args.public_pem)
    options = {
        "download_dir": Path(args.download_dir),
        "max_file_size": args.max_file_size,
        "open_files": args.open,
        "password": password,
    }
    if not terminal:
        fd = sys.stdin.fileno() if sys.stdin is not None else None
        client = ChatClient(session, PipeInput(fd), ordered_local_output=True, **options)
        return await client.run(args.username)

    from prompt_toolkit.patch_stdout import patch_stdout

    emit(f"Connected to {session.uri} (server key {fingerprint(server_key)}). Type /help for the commands.")
    with patch_stdout(raw=True):
        client = ChatClient(session, TerminalInput(), ordered_local_output=False, **options)
        return await client.run(args.username)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not 0 < args.port < 65536:
        print(f"{PROG}: --port must be between 1 and 65535", file=sys.stderr)
        return EXIT_USAGE
    if hasattr(sys.stdout, "reconfigure"):
        # A console that cannot show a character must not end the session.
        sys.stdout.reconfigure(errors="replace")
    try:
        server_key = load_public_key(Path(args.public_pem))
    except KeyFileError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    terminal = sys.stdin is not None and sys.stdin.isatty() and sys.stdout.isatty()
    try:
        return asyncio.run(run(args, server_key, terminal=terminal))
    except ClientError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
