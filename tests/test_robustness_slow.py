"""A client that stops reading while 30 others chat.

The slow client logs in and then never reads (its transport is paused and its socket
receive buffer is small, so the server's unsent data piles up on the server side). The
30 others broadcast short messages to each other and write long private messages to the
slow client (about 2.4 MiB in all). With --max-backlog 1 MiB the server must cut the slow
client off (the others see ``user_exited``), keep its own memory bounded, and deliver
every broadcast of the 30 others, exactly once and in each sender's order.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import psutil
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e_harness import HOST
from robust_helpers import NO_ADDRESS_LIMITS, Peer, assert_fresh_pair_chats, running_server, server_ps

from chat.keys import load_public_key

CHATTERS = 30
ROUNDS = 20
#: Private messages to the slow reader are about 4 KiB each: it is owed ~2.4 MiB in all.
LONG = "x" * 4000
MAX_BACKLOG = 1 << 20
#: Allowed growth of the server's resident memory over the run.
RSS_BOUND = 64 << 20


def _small_buffer_socket(port: int) -> socket.socket:
    """A connected TCP socket whose receive buffer is small (set before connecting)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect((HOST, port))
    sock.setblocking(False)
    return sock


async def _sample_rss(process: psutil.Process, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        await asyncio.sleep(0.05)


async def test_a_client_that_never_reads_is_cut_off_and_others_get_everything(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """30 clients each broadcast 20 short messages and write 20 private messages of
    ~4 KiB to a logged-in client that never reads: every broadcast reaches every other
    chatter once and in order, every request is answered, the server's RSS grows by less
    than 64 MiB, and the slow client is cut off and announced as exited."""
    public_key: rsa.RSAPublicKey = load_public_key(key_pair[1])
    # The kernel's send buffer is capped: with autotuning it can absorb megabytes for a
    # reader that stopped (net.ipv4.tcp_wmem), more than this test sends, before the
    # server's own --max-backlog bound is reached.
    extra = ["--max-backlog", str(MAX_BACKLOG), "--rate-limit", "0", "--max-per-ip", "0", *NO_ADDRESS_LIMITS,
             "--socket-send-buffer", str(256 * 1024)]  # fmt: skip
    async with running_server(key_pair[0], tmp_path / "server", *extra, process=True) as server:
        process = server_ps(server)
        sloth = await Peer.join(server.port, public_key, "sloth", sock=_small_buffer_socket(server.port))
        sloth.session.ws.transport.pause_reading()
        chatters = await asyncio.gather(
            *(Peer.join(server.port, public_key, f"chat{i:02d}") for i in range(CHATTERS))
        )
        for peer in chatters:
            await peer.sync()
        baseline = process.memory_info().rss
        peak = [baseline]
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(process, peak, stop))
        start = time.monotonic()

        async def chatter(peer: Peer) -> None:
            for k in range(ROUNDS):
                await peer.send("broadcast", text=f"{peer.name} {k:03d} hello everyone")
                await peer.send("private", to="sloth", text=f"{peer.name} {k:03d} {LONG}")
                await asyncio.sleep(0.01)

        await asyncio.gather(*(chatter(p) for p in chatters))
        want = (CHATTERS - 1) * ROUNDS

        async def all_delivered(peer: Peer) -> None:
            await peer.wait_until(
                lambda: len(peer.notifications("broadcast")) >= want, f"{want} broadcasts", timeout=30
            )

        await asyncio.gather(*(all_delivered(p) for p in chatters))
        delivered_after = time.monotonic() - start
        for peer in chatters:
            await peer.sync()
            by_sender: dict[str, list[str]] = {}
            for event in peer.notifications("broadcast"):
                by_sender.setdefault(event["sender"], []).append(event["text"].split(" ")[1])
            expected = {p.name: [f"{k:03d}" for k in range(ROUNDS)] for p in chatters if p is not peer}
            wrong = {n for n in set(by_sender) | set(expected) if by_sender.get(n) != expected.get(n)}
            assert not wrong, f"{peer.name}: wrong broadcasts from {sorted(wrong)}"
            replies = [e for e in peer.events if "re" in e.fields]
            assert len(replies) == 2 * ROUNDS + 2, f"{peer.name}: {peer.tally()}"
        assert delivered_after < 20, f"the others' messages took {delivered_after:.1f}s"

        assert peak[0] - baseline < RSS_BOUND, f"server RSS grew by {(peak[0] - baseline) >> 20} MiB"
        cut = [line for line in server.err.lines if "sloth" in line]
        try:
            await asyncio.gather(*(p.wait_presence("user_exited", "sloth", timeout=8) for p in chatters))
        except AssertionError as exc:
            raise AssertionError(
                f"the slow reader was not disconnected: {exc}\nserver log about it: {cut}"
            ) from None
        stop.set()
        await sampler
        assert peak[0] - baseline < RSS_BOUND, f"server RSS grew by {(peak[0] - baseline) >> 20} MiB"
        users = await chatters[0].request("list")
        assert "sloth" not in users["users"], users

        sloth.session.abort()
        await sloth.close()
        await asyncio.gather(*(p.close() for p in chatters))
        await assert_fresh_pair_chats(server, public_key)


async def test_a_slow_reader_misses_broadcasts_and_is_told_instead_of_cut_off(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """Review M4: broadcasts to a reader that has fallen behind by half of --max-backlog
    are dropped for it, not queued, and once it catches up it gets one ``missed`` event
    with their number. It stays online, and what it did get is in each sender's order."""
    public_key: rsa.RSAPublicKey = load_public_key(key_pair[1])
    backlog, senders, rounds = 256 * 1024, 10, 40
    extra = ["--max-backlog", str(backlog), "--rate-limit", "0", "--max-per-ip", "0", *NO_ADDRESS_LIMITS,
             "--socket-send-buffer", str(64 * 1024)]  # fmt: skip
    async with running_server(key_pair[0], tmp_path / "server", *extra) as server:
        sloth = await Peer.join(
            server.port, public_key, "sloth", ["missed"], sock=_small_buffer_socket(server.port)
        )
        chatters = await asyncio.gather(
            *(Peer.join(server.port, public_key, f"chat{i}") for i in range(senders))
        )
        for peer in chatters:
            await peer.sync()
        await sloth.sync()
        sloth.session.ws.transport.pause_reading()

        async def chatter(peer: Peer) -> None:
            for k in range(rounds):
                await peer.send("broadcast", text=f"{peer.name} {k:03d} {LONG[:3000]}")

        await asyncio.gather(*(chatter(p) for p in chatters))
        for peer in chatters:
            await peer.sync()
        sloth.session.ws.transport.resume_reading()
        total = senders * rounds

        def accounted() -> int:
            missed = sum(event["count"] for event in sloth.notifications("missed"))
            return len(sloth.notifications("broadcast")) + missed

        await sloth.wait_until(lambda: accounted() >= total, f"{total} broadcasts or missed", timeout=20)
        await sloth.sync()
        assert accounted() == total
        missed = sloth.notifications("missed")
        print(f"slow reader: {len(sloth.notifications('broadcast'))} of {total} broadcasts delivered, "
              f"missed {[e['count'] for e in missed]}, still online")
        assert missed and all(event["count"] > 0 for event in missed), sloth.tally()
        by_sender: dict[str, list[int]] = {}
        for event in sloth.notifications("broadcast"):
            by_sender.setdefault(event["sender"], []).append(int(event["text"].split(" ")[1]))
        assert all(seq == sorted(set(seq)) for seq in by_sender.values()), by_sender
        # Still online and chatting: its own broadcast reaches the others.
        assert sloth.close_code is None
        await sloth.send("broadcast", text="sorry, slow wifi")
        await chatters[0].wait_until(
            lambda: any(e["text"] == "sorry, slow wifi" for e in chatters[0].notifications("broadcast")),
            "sloth's broadcast",
        )
        assert any("broadcasts dropped for a slow reader" in line for line in server.err.lines)
        await asyncio.gather(sloth.close(), *(p.close() for p in chatters))
