"""Real Chromium driven by Playwright against a real ``chat-server`` process.

One Chromium per test worker (pytest-xdist), launched from Debian's ``/usr/bin/chromium``
(never ``playwright install``); a fresh browser context per test, so every test starts with
empty ``localStorage`` (no pinned key) and its own downloads. Each test gets a server
process on a free port with a key directory, database and working directory of its own,
and terminal users as the line mode of the real terminal client (local_chat.py's
``LocalClient``: ``chat.client.app.run_line_mode`` as a task, on a real socket).

The page is driven only through the hooks README "Web client and TLS" documents for tests
and screen readers: fields by label (``Username``, ``Password``, ``Message``, ``Send
file``), the ``Messages`` log, the ``Online``, ``Groups`` and ``Conversations`` lists, the
``Trust this server?`` dialog, buttons by name.

Playwright objects belong to the event loop that made them, so these tests and their
async fixtures all run in the session's loop (``pytestmark`` in the test modules).
Without Chromium the tests are skipped, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_harness import HOST, TIMEOUT, Process, ServerProcess
from local_chat import LocalChat, LocalClient

from chat.keys import fingerprint, generate_private_key, load_private_key, write_key_pair

CHROMIUM = Path("/usr/bin/chromium")
#: A name that is not localhost, resolved by Chromium alone to this machine (the plain
#: http page must then explain TLS instead of running the client).
OTHER_NAME = "chat.test"
LAUNCH_ARGS = [f"--host-resolver-rules=MAP {OTHER_NAME} {HOST}"]
#: Time to wait for the page to show something that should happen at once.
PAGE_TIMEOUT = 5.0
#: Recorded by an init script: when the Messages log first shows ``[Welcome <name>]``,
#: in ms since navigation start (``performance.now()``).
WELCOME_PROBE = """
(() => {
  const probe = new MutationObserver(() => {
    const log = document.querySelector('[role="log"]');
    if (log && /\\[Welcome [^\\]]+\\]/.test(log.textContent || "")) {
      window.__chatWelcomeAt = performance.now();
      probe.disconnect();
    }
  });
  probe.observe(document, { childList: true, subtree: true, characterData: true });
})();
"""
WEB_CLIENT = re.compile(r"Web client: (\S+)")


def need_chromium() -> Path:
    """Debian's Chromium; missing: skip, or fail under CI=true (.ci/run installs it)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)")
        pytest.skip(f"the browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


def launch_args() -> list[str]:
    """Chromium's sandbox needs user namespaces that root in a container lacks."""
    return [*LAUNCH_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    """One Chromium for this test worker."""
    executable = need_chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("the browser tests need playwright (pip install -e '.[test]')")

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(executable), args=launch_args())
        try:
            yield chromium
        finally:
            await chromium.close()


# --- the server ------------------------------------------------------------------------------


@functools.cache
def another_key() -> rsa.RSAPrivateKey:
    """A second server key for this test worker (not the session's ``key_pair``)."""
    return generate_private_key(2048)


def make_key_dir(directory: Path, source: tuple[Path, Path] | None = None) -> Path:
    """A key directory of its own for one server (a TLS certificate is written beside
    the key): a copy of ``source`` (private, public), or without it ``another_key()``.
    Returns private.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    if source is None:
        private, _ = write_key_pair(directory, another_key())
        return private
    for path in source:
        shutil.copyfile(path, directory / path.name)
        (directory / path.name).chmod(0o600)
    return directory / source[0].name


async def add_account(cwd: Path, name: str, password: str) -> None:
    """``chat-server --add-account NAME`` on ``cwd/chat.db``, the password on stdin."""
    args = ["-m", "chat.server", "--add-account", name, "--db", str(cwd / "chat.db")]
    process = await Process.spawn(f"add-account {name}", args, cwd, split_prompts=False)
    assert process.proc.stdin is not None
    process.proc.stdin.write(f"{password}\n".encode())
    process.proc.stdin.close()
    code = await process.wait_exit(30)
    assert code == 0, process.report()


class WebServer(ServerProcess):
    """``python -m chat.server`` (what ``chat-server`` runs) on 127.0.0.1: its key in
    ``cwd/keys``, its database ``cwd/chat.db``; ``url`` is the page's address."""

    scheme: str
    url: str
    private_pem: Path
    public_pem: Path
    fingerprint: str

    @classmethod
    async def launch(cls, cwd: Path, private_pem: Path, *extra: str, port: int = 0) -> WebServer:
        server = await cls.start(private_pem, cwd, "--db", str(cwd / "chat.db"), *extra, port=port)
        assert isinstance(server, WebServer)
        server.scheme = "https" if server.tls else "http"
        server.url = f"{server.scheme}://{HOST}:{server.port}/"
        server.private_pem = private_pem
        server.public_pem = private_pem.with_name("public.pem")
        server.fingerprint = fingerprint(load_private_key(private_pem).public_key())
        return server

    async def web_client_line(self) -> str:
        """The URL of the ``Web client: <url>`` line printed at start."""
        line = await self.out.wait_for(lambda s: WEB_CLIENT.search(s) is not None, timeout=TIMEOUT)
        assert line is not None, f"no 'Web client: <url>' line\n{self.report()}"
        match = WEB_CLIENT.search(line)
        assert match is not None
        return match.group(1)


# --- a user in the browser ---------------------------------------------------------------------


class BrowserUser:
    """One page of the chat in its own browser context, and what the test checks of it.

    Dialogs (``alert``, ``confirm``) and uncaught errors are recorded; a test asserts
    there were none where that matters (``assert_clean``)."""

    def __init__(self, page: Any, label: str) -> None:
        self.page = page
        self.label = label
        self.name: str | None = None
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.console: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))

    async def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    # --- the hooks ---

    @property
    def log(self) -> Any:
        return self.page.get_by_role("log", name="Messages", exact=True)

    @property
    def message_field(self) -> Any:
        return self.page.get_by_label("Message", exact=True)

    @property
    def username_field(self) -> Any:
        return self.page.get_by_label("Username", exact=True)

    def listing(self, name: str) -> Any:
        """A list by its accessible name (``Online``, ``Groups``, ``Conversations``)."""
        return self.page.get_by_role("list", name=name, exact=True)

    def conversation(self, name: str) -> Any:
        """The button of a conversation whose accessible name starts with ``name``."""
        pattern = re.compile(rf"^{re.escape(name)}(\s|$)")
        return self.listing("Conversations").get_by_role("button", name=pattern)

    async def items(self, list_name: str) -> list[str]:
        texts = await self.listing(list_name).get_by_role("listitem").all_inner_texts()
        return [text.strip() for text in texts]

    async def log_text(self) -> str:
        """The Messages log's text; empty while it is not shown."""
        if not await self.log.count():
            return ""
        return str(await self.log.text_content(timeout=1000) or "")

    # --- actions ---

    async def open(self, url: str) -> None:
        await self.page.goto(url)

    async def trust(self, expected_fingerprint: str) -> None:
        """Answer the first-visit dialog with Trust after checking the fingerprint."""
        dialog = self.page.get_by_role("dialog", name="Trust this server?", exact=True)
        await self.expect_visible(dialog, "the 'Trust this server?' dialog")
        text = str(await dialog.text_content() or "")
        assert expected_fingerprint in text, f"{self.label}: the dialog shows {text!r}"
        await dialog.get_by_role("button", name="Trust", exact=True).click()

    async def login(self, name: str) -> None:
        """Type the name in Username, press Enter, wait for ``[Welcome name]``."""
        await self.expect_visible(self.username_field, "the Username field")
        await self.username_field.fill(name)
        await self.username_field.press("Enter")
        self.name = name
        await self.expect_line(f"[Welcome {name}]")

    async def enter(self, url: str, name: str, expected_fingerprint: str) -> None:
        """First visit: open, trust the key, log in."""
        await self.open(url)
        await self.trust(expected_fingerprint)
        await self.login(name)

    async def type(self, line: str) -> None:
        """Type ``line`` in the Message field and press Enter."""
        await self.message_field.fill(line)
        await self.message_field.press("Enter")

    # --- expectations ---

    async def expect_visible(self, locator: Any, what: str, timeout: float = PAGE_TIMEOUT) -> None:
        try:
            await locator.wait_for(state="visible", timeout=timeout * 1000)
        except Exception as exc:
            await self.fail(f"{what} did not appear within {timeout}s ({type(exc).__name__})")

    async def wait_until(
        self, check: Callable[[], Awaitable[bool]], what: str, timeout: float = PAGE_TIMEOUT
    ) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                await self.fail(f"expected {what} within {timeout}s")
            await asyncio.sleep(0.03)

    async def expect_line(self, line: str, count: int = 1, timeout: float = PAGE_TIMEOUT) -> None:
        """The Messages log shows ``line`` (at least ``count`` times)."""

        async def shown() -> bool:
            return (await self.log_text()).count(line) >= count

        times = f" {count} times" if count > 1 else ""
        await self.wait_until(shown, f"{line!r} in the Messages log{times}", timeout)

    async def assert_no_text(self, text: str) -> None:
        shown = await self.log_text()
        if text in shown:
            await self.fail(f"the Messages log must not show {text!r}")

    async def expect_items(self, list_name: str, expected: list[str], timeout: float = PAGE_TIMEOUT) -> None:
        """The list ``list_name`` shows exactly ``expected`` (in any order)."""

        async def shown() -> bool:
            return sorted(await self.items(list_name)) == sorted(expected)

        await self.wait_until(shown, f"the {list_name} list to be {expected}", timeout)

    async def fail(self, message: str) -> None:
        log = "(no log)"
        with contextlib.suppress(Exception):
            log = await self.log.inner_text(timeout=1000)
        body = "(no body)"
        with contextlib.suppress(Exception):
            body = (await self.page.locator("body").inner_text(timeout=1000))[-3000:]
        pytest.fail(
            f"{self.label}: {message}\n--- Messages log:\n{log[-3000:]}\n--- page text:\n{body}\n"
            f"--- dialogs: {self.dialogs}\n--- page errors: {self.errors}\n--- console: {self.console[-20:]}"
        )

    def assert_clean(self) -> None:
        """No JavaScript dialog, no uncaught error, no Content-Security-Policy violation."""
        assert self.dialogs == [], f"{self.label}: dialogs fired: {self.dialogs}"
        assert self.errors == [], f"{self.label}: uncaught errors: {self.errors}"
        csp = [line for line in self.console if "Content Security Policy" in line]
        assert csp == [], f"{self.label}: CSP violations: {csp}"

    async def welcome_at(self) -> float:
        """Milliseconds from navigation start to ``[Welcome <name>]`` in the log."""
        value = await self.page.evaluate("window.__chatWelcomeAt")
        assert isinstance(value, int | float), f"the welcome probe recorded {value!r}"
        return float(value)


# --- one test's world --------------------------------------------------------------------------


class WebWorld:
    """A server process, terminal users of it and browser users in fresh contexts."""

    def __init__(self, browser: Any, tmp_path: Path, key_pair: tuple[Path, Path]) -> None:
        self.browser = browser
        self.tmp_path = tmp_path
        self.key_pair = key_pair
        self.server: WebServer | None = None
        self.terminals: LocalChat | None = None
        self.contexts: list[Any] = []
        self.users: list[BrowserUser] = []
        self._servers: list[WebServer] = []
        self._spare: asyncio.Task[Any] | None = None
        self._count = 0

    async def start_server(
        self, *extra: str, new_key: bool = False, port: int = 0, accounts: dict[str, str] | None = None
    ) -> WebServer:
        """A server with ``extra`` options, in a directory of its own (a copy of the
        session's key, or with ``new_key`` another key), with registered ``accounts``
        (name: password) made by ``chat-server --add-account`` first."""
        self._count += 1
        cwd = self.tmp_path / f"server{self._count}"
        private = make_key_dir(cwd / "keys", None if new_key else self.key_pair)
        for name, password in (accounts or {}).items():
            await add_account(cwd, name, password)
        server = await WebServer.launch(cwd, private, *extra, port=port)
        self._servers.append(server)
        self.server = server
        self.terminals = LocalChat(server, server.public_pem, self.tmp_path / f"terminals{self._count}")  # type: ignore[arg-type]
        return server

    async def stop_server(self) -> None:
        """Stop the current server (as on SIGTERM); it must not have failed."""
        assert self.server is not None
        if self.terminals is not None:
            await self.terminals.shutdown()
        problems = await self.server.stop()
        assert problems == [], "; ".join(problems) + "\n" + self.server.report()
        self._servers.remove(self.server)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def terminal(self, name: str, *options: str) -> LocalClient:
        """A terminal user (line mode of the real client) logged in as ``name``."""
        assert self.terminals is not None
        client = await self.terminals.spawn(name, None, *options)
        client.downloads = client.cwd / "downloads"  # type: ignore[attr-defined]
        await client.expect(f"[Welcome {name}]")
        return client

    async def _page(self, **context_options: Any) -> Any:
        context_options.setdefault("accept_downloads", True)
        context = await self.browser.new_context(**context_options)
        self.contexts.append(context)
        context.set_default_timeout(PAGE_TIMEOUT * 1000)
        await context.add_init_script(WELCOME_PROBE)
        return await context.new_page()

    def prepare(self) -> None:
        """Make a page with the default options while the server starts (a context
        takes Chromium a few hundred ms); the first ``new_user`` without options takes it."""
        self._spare = asyncio.get_running_loop().create_task(self._page())

    async def new_user(self, label: str, **context_options: Any) -> BrowserUser:
        """A page in a fresh context (empty storage, downloads accepted)."""
        spare, self._spare = self._spare, None
        if spare is not None and not context_options:
            page = await spare
        else:
            page = await self._page(**context_options)
        user = BrowserUser(page, label)
        self.users.append(user)
        return user

    async def browser_user(self, name: str, **context_options: Any) -> BrowserUser:
        """A browser user who opened the page, trusted the key and logged in as ``name``."""
        assert self.server is not None
        user = await self.new_user(name, **context_options)
        await user.enter(self.url, name, self.server.fingerprint)
        return user

    async def close(self) -> list[str]:
        """Close the contexts, the terminal users and the servers, all at once."""
        if self._spare is not None:
            with contextlib.suppress(Exception):
                await self._spare

        async def close_context(context: Any) -> None:
            with contextlib.suppress(Exception):
                await context.close()

        async def stop(server: WebServer) -> list[str]:
            return [f"{problem}\n{server.report()}" for problem in await server.stop()]

        closing = [close_context(context) for context in self.contexts]
        if self.terminals is not None:
            closing.append(self.terminals.shutdown())
        await asyncio.gather(*closing)
        stopped = await asyncio.gather(*(stop(server) for server in self._servers))
        return [problem for problems in stopped for problem in problems]


@pytest_asyncio.fixture(loop_scope="session")
async def web(browser: Any, tmp_path: Path, key_pair: tuple[Path, Path]) -> AsyncIterator[WebWorld]:
    """The test's world; its servers are stopped at the end and must not have failed."""
    world = WebWorld(browser, tmp_path, key_pair)
    world.prepare()
    try:
        yield world
    finally:
        problems = await world.close()
    if problems:
        pytest.fail("\n".join(problems))


def record_measure(request: pytest.FixtureRequest, name: str, value: str) -> None:
    """A measurement for the report: a property in the JUnit XML, and a line in the
    terminal summary (conftest.py's ``pytest_terminal_summary``), with or without -s."""
    request.node.user_properties.append((f"measured: {name}", value))
