"""Scenario 6: stored conversations (BENCHMARKS.md).

- append: messages stored per second through the server's own MessageStore (batched
  commits on the database thread, the trigram search index kept up to date), with many
  senders waiting at once, into a database file;
- search: p50/p95 of ``search`` queries (one word or two, of 5,000 that the 12-word
  messages are made of; one user's readable set: everyone, its private conversations, 10
  groups of 500) over 1,000,000 messages in 1,000 conversations;
- resume: a real server on loopback and a real client session: the time from connecting
  again to the end of the replay (``replayed``) of 1,000 missed messages, p50/p95;
- restart: 1,000 logged-in clients of a server process that is killed (``kill -9``) and
  started again on the same port and database: the time until every one of them is
  connected, logged in and has its replay (each tries again every 50 ms, then less
  often, while the server is down; one address, so the per-address limits are lifted).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import percentile
from chat.client.transport import ClientSession, open_session
from chat.keys import load_private_key, load_public_key
from chat.server.app import ChatServer
from chat.server.config import ServerConfig
from chat.server.conversations import BROADCASTS, Readable, group_conversation, private_conversation
from chat.server.storage import Storage

WORDS = [f"w{n:04d}" for n in range(5000)]
INSERT = "INSERT INTO message (conv, seq, sender, text, sent_at, sender_key) VALUES (?,?,?,?,?,?)"


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(12))


async def _appends(path: Path, count: int, senders: int) -> dict[str, Any]:
    storage = Storage(str(path), history_limit=1_000_000)
    await storage.open()
    rng = random.Random(1)
    conversations = [BROADCASTS, *(group_conversation(f"g{n}") for n in range(20))]
    per_sender = count // senders

    async def sender(n: int) -> None:
        for _ in range(per_sender):
            conversation = rng.choice(conversations)
            await storage.messages.append(conversation, f"user{n}", _text(rng), sender_key=f"user{n}")

    try:
        start = time.perf_counter()
        await asyncio.gather(*(sender(n) for n in range(senders)))
        elapsed = time.perf_counter() - start
    finally:
        await storage.close()
    stored = per_sender * senders
    return {"messages": stored, "senders": senders, "seconds": round(elapsed, 2), "per_s": stored / elapsed}


def _fill(path: Path, count: int) -> None:
    """``count`` messages in 1,000 conversations, written in bulk through the same schema
    (indexed for search at the first search, as a server indexes them in batches)."""
    rng = random.Random(2)
    db = sqlite3.connect(path)
    try:
        conversations = [BROADCASTS] + [group_conversation(f"g{n}") for n in range(499)]
        conversations += [private_conversation(f"user{n}", f"user{n + 1}") for n in range(500)]
        seqs = dict.fromkeys(conversations, 0)
        batch = []
        for n in range(count):
            conv = conversations[n % len(conversations)]
            seqs[conv] += 1
            batch.append((conv, seqs[conv], f"user{n % 500}", _text(rng), time.time(), f"user{n % 500}"))
            if len(batch) == 10_000:
                db.executemany(INSERT, batch)
                db.commit()
                batch.clear()
        if batch:
            db.executemany(INSERT, batch)
        db.executemany(
            "INSERT INTO conversation (conv, last_seq) VALUES (?, ?) ON CONFLICT (conv) DO UPDATE"
            " SET last_seq = excluded.last_seq",
            seqs.items(),
        )
        db.commit()
    finally:
        db.close()


async def _searches(path: Path, count: int, queries: int) -> dict[str, Any]:
    storage = Storage(str(path), history_limit=1_000_000)
    await storage.open()  # the schema
    await storage.close()
    start = time.perf_counter()
    _fill(path, count)
    filled = time.perf_counter() - start
    storage = Storage(str(path), history_limit=1_000_000)
    await storage.open()
    start = time.perf_counter()
    await storage.messages.search(["w0000"], Readable("nobody", 0), 1)  # indexes them all
    indexed = time.perf_counter() - start
    rng = random.Random(3)
    readable = Readable("user7", 0, tuple((group_conversation(f"g{n}"), 0) for n in range(10)))
    times, found = [], 0
    try:
        for n in range(queries):
            words = [rng.choice(WORDS) for _ in range(1 + n % 2)]  # one word, or two
            start = time.perf_counter()
            found += len(await storage.messages.search(words, readable, 20))
            times.append(time.perf_counter() - start)
    finally:
        await storage.close()
    ms = sorted(t * 1000 for t in times)
    return {
        "messages": count, "fill_s": round(filled, 1), "index_s": round(indexed, 1), "queries": queries,
        "results": found,
        "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
    }  # fmt: skip


async def _login(port: int, key: Any, name: str, **fields: Any) -> tuple[ClientSession, Any]:
    session = await open_session("127.0.0.1", port, key)
    rid = await session.send("login", name=name, features=["resume"], **fields)
    while True:
        event = await session.recv()
        if event.get("re") == rid:
            return session, event


async def _resumes(private_key: Path, public_key: Path, missed: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        config = ServerConfig(host="127.0.0.1", port=0, db_path=str(Path(directory) / "chat.db"),
                              rate_limit=0, network_rate_limit=0, wrong_password_delay=0)  # fmt: skip
        server = ChatServer(load_private_key(private_key), config)
        port = await server.start()
        key = load_public_key(public_key)
        times = []
        try:
            sender, _ = await _login(port, key, "sender")
            draining = asyncio.create_task(_drain(sender))  # its replies are read
            reader, welcome = await _login(port, key, "reader")
            token, head, seq = welcome["token"], welcome["head"], 0
            for _ in range(rounds):
                await reader.close()
                for n in range(missed):
                    await sender.send("broadcast", text=f"missed {n}")
                await sender.wait_idle()  # every one stored
                start = time.perf_counter()
                cursors = [{"target": "*", "seq": seq}] if seq else []
                reader, welcome = await _login(port, key, "reader", token=token, since=head, cursors=cursors)
                count = await _replay(reader, head, seq)
                times.append(time.perf_counter() - start)
                assert count == missed, count
                token, seq = welcome["token"], seq + missed
            await reader.close()
            draining.cancel()
            await sender.close()
        finally:
            await server.stop()
    ms = sorted(t * 1000 for t in times)
    return {"missed": missed, "rounds": rounds, "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95)}


async def _replay(session: ClientSession, since: int, seq: int) -> int:
    """Receive a whole replay, asking for each next page as the client does; its size."""
    count = 0
    while True:
        event = await session.recv()
        if event.type == "broadcast":
            seq = max(seq, event["seq"])
        elif event.type == "replayed":
            count += event["count"]
            if not event.get("more"):
                return count
            await session.send("replay", since=since, cursors=[{"target": "*", "seq": seq}])


async def _drain(session: ClientSession) -> None:
    while True:
        await session.recv()


def storage(settings: Any) -> dict[str, Any]:
    quick = settings.quick
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        appends = asyncio.run(_appends(base / "append.db", 2_000 if quick else 50_000, 200))
        searched = 10_000 if quick else 1_000_000
        searches = asyncio.run(_searches(base / "search.db", searched, 50 if quick else 200))
    missed, rounds = (100, 3) if quick else (1000, 20)
    resumes = asyncio.run(_resumes(settings.private_key, settings.public_key, missed, rounds))
    restart = asyncio.run(_restart(settings, 50 if quick else 1000))
    return {"append": appends, "search": searches, "resume": resumes, "restart": restart}


async def _reconnect(port: int, key: Any, name: str, since: int) -> float:
    """Connect (retrying while the server is down), log in resuming; when it is live."""
    delay = 0.05
    while True:
        try:
            session, welcome = await _login(port, key, name, since=since)
            break
        except Exception:  # the server is not back yet, or busy
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
    assert welcome.type == "welcome", welcome
    await _replay(session, since, 0)
    done = time.perf_counter()
    await session.close()
    return done


async def _restart(settings: Any, clients: int) -> dict[str, Any]:
    import os
    import signal
    import socket

    from bench.common import ServerProcess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = Path(tempfile.mkdtemp(prefix="restart-", dir=settings.results_dir))
    args = [str(settings.private_key), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING",
            "--db", str(directory / "chat.db"), "--rate-limit", "0", "--max-per-ip", "0",
            "--max-upgrading-per-ip", "0", "--handshakes-per-ip", "0", "--handshakes-per-second", "0",
            "--handshake-queue", "100000", "--network-rate-limit", "0",
            "--network-byte-rate", "0"]  # fmt: skip
    key = load_public_key(settings.public_key)
    server = ServerProcess("chat", args, log_path=settings.log_path).start()
    sessions = []
    try:
        for n in range(clients):
            session, welcome = await _login(port, key, f"user{n}")
            sessions.append((session, welcome["head"]))
        os.kill(server.pid, signal.SIGKILL)
        assert server.popen is not None
        server.popen.wait()
        killed = time.perf_counter()
        server = ServerProcess("chat", args, log_path=settings.log_path).start()
        started = time.perf_counter()
        finished = await asyncio.gather(
            *(_reconnect(port, key, f"user{n}", head) for n, (_, head) in enumerate(sessions))
        )
    finally:
        for session, _ in sessions:
            with contextlib.suppress(Exception):
                await session.close()
        server.stop()
    last = max(finished)
    return {
        "clients": clients, "restart_s": round(started - killed, 2), "all_live_s": round(last - killed, 2),
        "all_live_after_start_s": round(last - started, 2),
    }  # fmt: skip
