"""The chat loop: log in, then send what the user types while events are shown.

Two tasks share one session: ``_flow`` reads input lines, parses and sends them;
``_connection`` receives events, shows them and feeds the roster (who is online, which
groups exist: Tab completion). File transfers (transfers.py) run as tasks of their own.
Quitting (``/quit`` or end of input) waits for them to end first, declining new offers.

* Line mode: local lines (usage, help) wait until every earlier request is answered, so
  each command's output appears in order; a lost connection ends the client.
* Terminal mode (``reconnect`` given): a lost connection is re-established with backoff
  and the user logged back in under the same name (and password, kept in memory only).
  Lines typed meanwhile are held and sent once back, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from chat.client import own_lines
from chat.client.commands import (
    Action,
    FileAnswer,
    OpenReceived,
    Parsed,
    Send,
    SendFile,
    Show,
    help_lines,
    parse,
)
from chat.client.config import ClientConfig
from chat.client.file_policy import DownloadGate
from chat.client.inputs import LineInput
from chat.client.output import Output
from chat.client.pacing import Pacer
from chat.client.password_prompts import PASSWORD_PROMPT, PasswordPrompts
from chat.client.reconnecting import FEATURES, LOST, RESUMING, Reconnecting
from chat.client.render import render, when
from chat.client.resume_state import ResumeState
from chat.client.roster import Roster
from chat.client.style import ERROR, FILE, PLAIN, SYSTEM, kind_of
from chat.client.transfers import TransferManager
from chat.client.transport import ClientError, ClientSession, Disconnected
from chat.protocol.envelope import MAX_LOGIN_NAME_CHARS, Envelope
from chat.protocol.errors import EnvelopeError

USERNAME_PROMPT = "Enter your username: "
EXIT_OK = 0
#: How long to wait for the server to acknowledge ``quit`` before closing anyway.
QUIT_TIMEOUT = 10.0

#: How often the terminal's transfer progress bar is redrawn.
STATUS_INTERVAL = 0.5
#: Opens a new session to the same server with the same trusted key.
Reconnect = Callable[[], Awaitable[ClientSession]]


#: Replayed after a reconnect with the time they were sent, which the terminal shows
#: (private messages say it in their line already).
REPLAYED = ("broadcast", "group_message")


def _needs_server(parsed: Parsed) -> bool:
    return isinstance(parsed, Send | SendFile) or parsed in (Action.REGISTER, Action.PASSWD)


class ChatClient(Reconnecting, PasswordPrompts):
    def __init__(
        self,
        session: ClientSession,
        lines: LineInput,
        out: Output,
        *,
        ordered_local_output: bool,
        config: ClientConfig | None = None,
        password: str | None = None,
        reconnect: Reconnect | None = None,
        roster: Roster | None = None,
    ) -> None:
        """``roster``: keep it up to date and seed it at login (terminal mode: quietly
        asks who is online and which groups exist). ``reconnect``: reconnect when the
        connection is lost (terminal mode)."""
        self._session = session
        self._lines = lines
        self._out = out
        self._ordered_local_output = ordered_local_output
        #: From --password-file: used for the first login that asks for one.
        self._password = password
        self._reconnect = reconnect
        self._seed_roster_at_login = roster is not None
        self._roster = roster if roster is not None else Roster()
        self._quitting = False
        self._pacer = Pacer()
        self._config = config = config or ClientConfig()
        #: One download quota for the whole process, across reconnects.
        self._download_gate = DownloadGate(config.download_limits)
        #: Offer and file numbers, and files waiting for /open: they outlive a reconnect,
        #: so a number typed for an offer the lost connection ended never names a new one.
        self._numbers = itertools.count(1)
        self._openable: dict[int, Path] = {}
        self._transfers = self._new_transfers()
        #: Who we are once logged in, and the password that worked (memory only).
        self._name: str | None = None
        self._login_password: str | None = None
        #: A password sent with /register or /passwd, effective once the server says so.
        self._offered_password: str | None = None
        self._online = True
        #: Lines typed while the connection was down, sent in order once it is back.
        self._held: deque[Parsed] = deque()
        self._chores: set[asyncio.Task[None]] = set()
        #: Set once every stored message announced at login was shown and acknowledged.
        self._offline_done = asyncio.Event()
        self._offline_done.set()
        #: Cursors, the resume token, messages not acknowledged yet (resume_state.py).
        self._resume = ResumeState()

    def _new_transfers(self) -> TransferManager:
        return TransferManager(
            self._session,
            emit=lambda line: self._out.show(line, FILE),
            pace=self._pacer.wait,
            config=self._config,
            download_gate=self._download_gate,
            numbers=self._numbers,
            openable=self._openable,
        )

    async def run(self, username: str | None) -> int:
        connection = asyncio.create_task(self._connection(), name="connection")
        flow = asyncio.create_task(self._flow(username), name="flow")
        status = asyncio.create_task(self._status_loop(), name="status")
        lost: str | None = None
        try:
            done, _ = await asyncio.wait({connection, flow}, return_when=asyncio.FIRST_COMPLETED)
            if flow in done:
                return flow.result()
            try:
                connection.result()  # raises why the connection ended for good
            except ClientError:
                lost = LOST
                raise
            return await flow  # it ended because we quit
        finally:
            tasks = [connection, flow, status, *self._chores]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Deletes the temporary files of unfinished transfers, whatever ended us.
            await self._transfers.close(lost)
            self._lines.show_status([])
            await self._session.close()

    # --- receiving ------------------------------------------------------------------------

    async def _connection(self) -> None:
        """Receive until we quit; in terminal mode, reconnect when the connection is lost."""
        while True:
            try:
                await self._receive_loop()
                return
            except ClientError as error:
                if not self._may_reconnect(error):
                    raise
                await self._recover(error)
            self._spawn(self._after_login())

    async def _receive_loop(self) -> None:
        while True:
            try:
                event = await self._session.recv()
            except Disconnected:
                if self._quitting:
                    return
                raise
            for shown in self._resume.received(event):  # each message once, in order
                self._note(shown)
                if not self._transfers.dispatch(shown):
                    self._present(shown)
                    if shown.type == "offline_page":
                        await self._acknowledge_offline(shown)
                    elif shown.type == "replayed" and shown.get("more"):
                        await self._session.send("replay", **self._resume.replay_fields())

    def _note(self, event: Envelope) -> None:
        """Keep track of who is online, the groups, and the password to log back in with."""
        with contextlib.suppress(KeyError, TypeError, AttributeError):  # a newer server's events
            self._roster.apply(event)
        if event.type == "welcome":
            self._resume.welcome(event)
            if event.get("offline"):
                self._offline_done.clear()  # stored messages follow, in acknowledged pages
        if event.type in ("registered", "password_changed") and self._offered_password is not None:
            self._login_password, self._offered_password = self._offered_password, None

    async def _acknowledge_offline(self, page: Envelope) -> None:
        """Stored messages were shown: the server may delete them and send the next page."""
        await self._session.send("offline_ack", upto=page["upto"])
        if not page["more"]:
            self._offline_done.set()

    def _present(self, event: Envelope) -> None:
        kind = kind_of(event.type)
        lines = render(event)
        if not self._ordered_local_output and event.type in REPLAYED and "sent_at" in event.fields:
            lines = [f"{line} (sent {when(event['sent_at'])})" for line in lines]  # missed while away
        for line in lines:
            self._out.show(line, kind)

    async def _status_loop(self) -> None:
        """Keep the progress bar of running transfers up to date (terminal mode)."""
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            self._lines.show_status(self._transfers.status_lines())

    # --- the user's lines -----------------------------------------------------------------

    async def _flow(self, username: str | None) -> int:
        if not await self._login(username):
            return EXIT_OK  # end of input before a login succeeded
        while True:
            line = await self._lines.read_line()
            if line is None:
                break
            parsed = parse(line)
            if parsed is Action.QUIT:
                break
            await self._handle(parsed)
        await self._quit()
        return EXIT_OK

    async def _handle(self, parsed: Parsed) -> None:
        """Do what one line asks: now, or once reconnected if the connection is down."""
        if not _needs_server(parsed):
            await self._do(parsed)
        elif not self._online or (self._held and parsed not in (Action.REGISTER, Action.PASSWD)):
            self._hold(parsed, note=not self._online)
        else:
            try:
                await self._do(parsed)
            except ClientError:
                if self._reconnect is None or self._quitting:
                    raise  # line mode: a lost connection ends the client
                self._hold(parsed, note=True)

    def _hold(self, parsed: Parsed, *, note: bool) -> None:
        if parsed in (Action.REGISTER, Action.PASSWD):
            # These ask questions first: not something to replay later.
            self._out.show(own_lines.NOT_CONNECTED, ERROR)
            return
        self._held.append(parsed)
        if note and not self._ordered_local_output:  # line mode prints events only
            self._out.show(own_lines.HELD, SYSTEM)

    async def _do(self, parsed: Parsed) -> None:
        if isinstance(parsed, Send):
            await self._send(parsed)
        elif isinstance(parsed, SendFile):
            await self._show(await self._transfers.send_file(parsed), ERROR)
        elif isinstance(parsed, FileAnswer):
            await self._show(self._transfers.answer_offer(parsed.accept, parsed.number), ERROR)
        elif isinstance(parsed, OpenReceived):
            await self._show(await self._transfers.open_received(parsed.number), ERROR)
        elif isinstance(parsed, Show):
            await self._show(parsed.lines, ERROR)
        elif parsed is Action.HELP:
            await self._show(help_lines(), PLAIN)
        elif parsed is Action.REGISTER:
            await self._register()
        elif parsed is Action.PASSWD:
            await self._change_password()

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
                await self._show(render(rejection), ERROR)
                continue
            # The receive loop prints the reply: the welcome line or why the name was refused.
            features = RESUMING if self._reconnect is not None else FEATURES
            reply = await self._session.request("login", name=name, features=features)
            password = None
            if reply.type == "error" and reply.get("code") == "password_required":
                password, self._password = self._password, None
                if password is None:
                    password = await self._lines.read_secret(PASSWORD_PROMPT)
                if password is None:
                    return False
                reply = await self._session.request("login", name=name, password=password, features=features)
            if reply.type == "welcome":
                self._name, self._login_password = reply.get("name", name), password
                self._lines.show_identity(self._name, True)
                self._spawn(self._after_login())
                return True

    async def _after_login(self) -> None:
        """Seed the roster (terminal mode), then send what was typed while disconnected."""
        if self._seed_roster_at_login:
            self._spawn(self._seed_roster())
        while self._held:
            try:
                await self._do(self._held[0])
            except ClientError:
                return  # lost again: the rest waits for the next reconnection
            self._held.popleft()

    async def _seed_roster(self) -> None:
        """Ask who is online and which groups exist, for Tab completion. The replies are
        claimed: they come back here, not to the receive loop, so nothing is printed."""
        # One after the other: a reply that fails with the connection is always awaited
        # (an unawaited failed reply stopped the terminal at "Press ENTER to continue").
        with contextlib.suppress(ClientError):
            for kind in ("list", "group_list"):
                await self._pacer.wait()
                self._note(await self._session.request(kind, claim=True))

    async def _send(self, request: Send) -> None:
        await self._pacer.wait()
        fields = self._resume.numbered(request.kind, request.fields)
        try:
            self._resume.sent(await self._session.send(request.kind, **fields), request.kind, fields)
        except EnvelopeError as exc:
            await self._show([own_lines.cannot_send(exc)], ERROR)

    async def _show(self, lines: Sequence[str], kind: str) -> None:
        if not lines:
            return
        if self._ordered_local_output:
            await self._session.wait_idle()
        for line in lines:
            self._out.show(line, kind)

    async def _quit(self) -> None:
        while not self._online and self._ordered_local_output and self._reconnect is not None:
            await asyncio.sleep(0.05)  # a script's lines go out once reconnected (or it ends)
        if not self._online:
            self._quitting = True
            if self._held:
                unsent = len(self._held)
                self._out.show(own_lines.unsent_at_quit(unsent), ERROR)
            return
        # Stored messages are deleted only once acknowledged: wait for the last page.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._offline_done.wait(), QUIT_TIMEOUT)
        await self._session.wait_idle()
        # What was sent includes files: wait for every transfer to end (new offers are
        # declined meanwhile), and for the replies to their last requests.
        self._transfers.stop_accepting()
        if self._transfers.active and not self._ordered_local_output:
            self._out.show(own_lines.WAITING_FOR_TRANSFERS)
        await self._transfers.wait_finished()
        await self._session.wait_idle()
        self._quitting = True
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError, ClientError):
            await asyncio.wait_for(self._session.request("quit"), QUIT_TIMEOUT)

    def _say(self, line: str) -> None:
        self._out.show(line, SYSTEM)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chore_done)

    def _chore_done(self, task: asyncio.Task[None]) -> None:
        self._chores.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._out.show(own_lines.internal_error(error), ERROR)
