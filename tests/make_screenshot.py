"""Make ``docs/web-client.png``, README's picture of the browser client.

A real server in a temporary directory, alice in Chromium (Debian's ``/usr/bin/chromium``
through Playwright, as in the browser tests), bob and carol as terminal clients in line
mode; they chat a little, make a group, and the page is photographed.

    .venv/bin/python tests/make_screenshot.py [OUTPUT.png]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser_helpers import WebWorld, launch_args, need_chromium

from chat.keys import generate_private_key, write_key_pair

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "web-client.png"


async def scene(world: WebWorld, output: Path) -> None:
    """bob and carol in terminals, alice in the browser: a few lines, a group, two
    unread private messages; then the picture."""
    await world.start_server()
    bob = await world.terminal("bob")
    carol = await world.terminal("carol")
    alice = await world.browser_user("alice", viewport={"width": 1000, "height": 620})
    bob.send("Morning all! Stand-up in ten minutes?")
    await alice.expect_line("[Broadcast from bob]: Morning all! Stand-up in ten minutes?")
    await alice.type("Sounds good, I'll bring the notes ☕")
    await carol.expect("[Broadcast from alice]: Sounds good, I'll bring the notes ☕")
    await alice.type("/create release bob,carol")
    await carol.expect("[You have been added to the release group]")
    carol.send("/group release Build 1.4 is green on every platform")
    await alice.expect_line("Build 1.4 is green on every platform")
    bob.send("/group release Great, tagging it now.")
    await alice.expect_line("Great, tagging it now.")
    carol.send("/msg alice Could you send me the slides afterwards?")
    await alice.expect_line("Could you send me the slides afterwards?")
    carol.send("/msg alice No rush.")
    await alice.expect_line("Private message from carol: No rush.")
    await alice.message_field.fill("/msg carol Sure, right after the meeting")
    await alice.page.wait_for_timeout(300)  # fonts and layout settle
    output.parent.mkdir(parents=True, exist_ok=True)
    await alice.page.screenshot(path=str(output))


async def photograph(output: Path) -> None:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as temporary:
        tmp = Path(temporary)
        key_pair = write_key_pair(tmp / "keys", generate_private_key(2048))
        async with async_playwright() as playwright:
            executable = str(need_chromium())
            chromium = await playwright.chromium.launch(executable_path=executable, args=launch_args())
            world = WebWorld(chromium, tmp, key_pair)
            try:
                await scene(world, output)
            finally:
                problems = await world.close()
                await chromium.close()
    if problems:
        raise SystemExit("\n".join(problems))
    print(f"wrote {output}")


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT
    asyncio.run(photograph(output))


if __name__ == "__main__":
    main()
