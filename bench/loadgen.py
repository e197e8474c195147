"""Load-generator roles. Each runs in its own process (see ``common.Worker``), on uvloop
when available (the generators must be cheap), and is driven by commands over a pipe:
the parent sends ``("run", args)`` / ``("stop", {})`` and gets one reply per command.

Times are wall-clock (``time.time_ns``), which all processes of the machine share; a
measurement window ``[t0, t1)`` is given in absolute time, and only events received
inside it are counted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench import chatclient, wsclient
from bench.serve import raise_nofile_limit
from chat.keys import fingerprint_bytes, load_public_key
from chat.protocol.errors import HandshakeFailed
from chat.protocol.handshake import ClientHandshake
from chat.protocol.records import SecureChannel
from chat.protocol.tickets import ClientTicket

TEXT_LEN = 100
#: Paced senders wake at most this often and send everything due (no busy waiting).
PACE_S = 0.001
#: Latency samples kept per process and phase (evenly thinned beyond this).
MAX_SAMPLES = 200_000
Client = chatclient.ChatConnection | wsclient.RawWebSocket


class Control:
    """The worker's end of the command pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def command(self) -> tuple[str, dict[str, Any]]:
        return await asyncio.to_thread(self.conn.recv)

    def reply(self, **data: Any) -> None:
        self.conn.send(("reply", data))


def run_role(conn: Connection, role: str, params: dict[str, Any]) -> None:
    """Entry point in the child process."""
    raise_nofile_limit()
    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    from bench.cluster_roles import CLUSTER_ROLES

    runner({**ROLES, **CLUSTER_ROLES}[role](Control(conn), params))


def make_text(now_ns: int, proc: int, seq: int) -> str:
    """A TEXT_LEN-character chat text carrying its send time and origin."""
    head = f"{now_ns:019d} {proc:03d} {seq:010d} "
    return head + "x" * (TEXT_LEN - len(head))


def thin(samples: list[float]) -> list[float]:
    if len(samples) <= MAX_SAMPLES:
        return samples
    step = len(samples) / MAX_SAMPLES
    return [samples[int(i * step)] for i in range(MAX_SAMPLES)]


async def connect_many(p: dict[str, Any], count: int, prefix: str, concurrency: int = 50) -> list[Client]:
    """``count`` clients: chat sessions logged in as ``{prefix}{i}``, or raw baseline connections."""
    host, port = p["host"], p["port"]
    key = load_public_key(Path(p["public_key"])) if p["kind"] == "chat" else None
    gate = asyncio.Semaphore(concurrency)
    login = p.get("login", True)

    async def one(i: int) -> Client:
        async with gate:
            if key is None:
                return await wsclient.connect(host, port)
            return await chatclient.connect(host, port, key, f"{prefix}{i}" if login else None)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def close_all(clients: list[Client]) -> None:
    for client in clients:
        ws = client.ws if isinstance(client, chatclient.ChatConnection) else client
        ws.abort()


# --- scenario 1: broadcast fan-out ----------------------------------------------------------


class Receipts:
    """Deliveries and latencies seen inside the window [t0, t1) (nanoseconds)."""

    def __init__(self, t0: int, t1: int) -> None:
        self.t0, self.t1 = t0, t1
        self.delivered = 0
        self.latencies_ms: list[float] = []

    def record(self, sent_ns: int) -> None:
        now = time.time_ns()
        if self.t0 <= now < self.t1:
            self.delivered += 1
            self.latencies_ms.append((now - sent_ns) / 1e6)


async def closed_loop(
    t1: int, window: int, send: Callable[[int], None], state: dict[str, int], wake: asyncio.Event
) -> int:
    """Keep ``window`` messages in flight until ``t1`` (ns): ``send(n)`` sends the n-th;
    whoever sees one come back lowers ``state["outstanding"]`` and sets ``wake``. Those
    not back within 2 s count as lost. Returns how many were sent."""
    seq = 0
    while time.time_ns() < t1:
        while state["outstanding"] < window:
            send(seq)
            seq += 1
            state["outstanding"] += 1
        wake.clear()
        try:
            async with asyncio.timeout(2.0):
                await wake.wait()
        except TimeoutError:
            state["lost"] += state["outstanding"]
            state["outstanding"] = 0
    return seq


async def broadcast_role(ctl: Control, p: dict[str, Any]) -> None:
    """Clients that broadcast 100-character texts and time every delivery."""
    me = p["proc"]
    clients = await connect_many(p, p["clients"], f"b{me}_")
    senders = clients[: p["senders"]]
    tracker = clients[p["senders"]]  # sees this process's own messages come back
    chat = p["kind"] == "chat"
    ctl.reply(connected=len(clients))
    while True:
        command, args = await ctl.command()
        if command != "run":
            break
        ctl.reply(**await _broadcast_phase(clients, senders, tracker, chat, me, args))
    close_all(clients)


async def _broadcast_phase(
    clients: list[Client], senders: list[Client], tracker: Client, chat: bool, me: int, a: dict[str, Any]
) -> dict[str, Any]:
    t0, t1 = a["t0_ns"], a["t1_ns"]
    receipts = Receipts(t0, t1)
    state = {"outstanding": 0, "lost": 0}
    wake = asyncio.Event()
    mine = f" {me:03d} "

    def on_text(text: str, is_tracker: bool) -> None:
        receipts.record(int(text[:19]))
        if is_tracker and text[19:24] == mine:
            state["outstanding"] -= 1
            wake.set()

    for client in clients:
        is_tracker = client is tracker
        if chat:
            assert isinstance(client, chatclient.ChatConnection)

            def on_event(header: dict[str, Any], body: bytes, t: bool = is_tracker) -> None:
                if header["type"] == "broadcast":
                    on_text(header["text"], t)

            client.on_event(on_event)
        else:
            assert isinstance(client, wsclient.RawWebSocket)
            client.on_message = lambda payload, t=is_tracker: on_text(payload.decode(), t)

    def send(i: int, seq: int) -> None:
        client = senders[i % len(senders)]
        text = make_text(time.time_ns(), me, seq)
        if isinstance(client, chatclient.ChatConnection):
            # Without a rid, as the baseline's senders: no ok comes back (PROTOCOL.md 6).
            client.send("broadcast", text=text, rid=False)
        else:
            client.send(text.encode())

    seq = sent = 0
    if a["mode"] == "closed":
        seq = await closed_loop(t1, a["window"], lambda n: send(n, n), state, wake)
    else:
        interval = 1e9 / a["rate"]
        due = float(time.time_ns())
        while (now := time.time_ns()) < t1:
            while due <= now:
                send(seq, seq)
                seq += 1
                if t0 <= now:
                    sent += 1
                due += interval
            await asyncio.sleep(max(PACE_S, (due - time.time_ns()) / 1e9))
    await asyncio.sleep(a.get("tail_s", 0.2))
    return {
        "delivered": receipts.delivered,
        "sent_in_window": sent,
        "sent_total": seq,
        "lost": state["lost"],
        "latencies_ms": thin(receipts.latencies_ms),
    }


# --- scenario 2: private messages ----------------------------------------------------------------


async def private_role(ctl: Control, p: dict[str, Any]) -> None:
    """``pairs`` pairs; each first member sends paced private messages to its partner."""
    me = p["proc"]
    pairs = p["pairs"]
    clients = await connect_many(p, 2 * pairs, f"p{me}_")
    ctl.reply(connected=len(clients))
    while True:
        command, a = await ctl.command()
        if command != "run":
            break
        ctl.reply(**await _private_phase(clients, pairs, me, a))
    close_all(clients)


async def _private_phase(clients: list[Client], pairs: int, me: int, a: dict[str, Any]) -> dict[str, Any]:
    t0, t1 = a["t0_ns"], a["t1_ns"]
    receipts = Receipts(t0, t1)

    def on_event(header: dict[str, Any], body: bytes) -> None:
        if header["type"] == "private":
            receipts.record(int(header["text"][:19]))

    for client in clients:
        assert isinstance(client, chatclient.ChatConnection)
        client.on_event(on_event)
    interval = 1e9 / a["rate"]
    due = float(time.time_ns())
    seq = sent = 0
    while (now := time.time_ns()) < t1:
        while due <= now:
            i = seq % pairs
            sender = clients[2 * i]
            assert isinstance(sender, chatclient.ChatConnection)
            sender.send("private", to=f"p{me}_{2 * i + 1}", text=make_text(time.time_ns(), me, seq))
            seq += 1
            if t0 <= now:
                sent += 1
            due += interval
        await asyncio.sleep(max(PACE_S, (due - time.time_ns()) / 1e9))
    await asyncio.sleep(0.2)
    latencies = thin(receipts.latencies_ms)
    return {"delivered": receipts.delivered, "sent_in_window": sent, "latencies_ms": latencies}


# --- scenario 3: handshakes ------------------------------------------------------------------------


async def handshake_role(ctl: Control, p: dict[str, Any]) -> None:
    """``concurrency`` loops of connect, handshake, one request, close."""
    key = load_public_key(Path(p["public_key"]))
    ctl.reply()
    while True:
        command, a = await ctl.command()
        if command != "run":
            break
        ctl.reply(**await _handshake_phase(p, key, a))


#: Names for the logins that fetch session tickets, unique across runs of a generator.
_ticket_logins = itertools.count()


async def _fetch_ticket(p: dict[str, Any], key: Any) -> ClientTicket | None:
    """A full handshake and a login asking for ``ticket``: the ticket (sent just before
    the welcome) with the session's resumption secret; None from a server without them."""
    ws = await wsclient.connect(p["host"], p["port"])
    try:
        machine = ClientHandshake(key)
        ws.send(machine.client_hello())
        ws.send(machine.receive_server_hello(await ws.recv()))
        assert machine.keys is not None
        conn = chatclient.ChatConnection(ws, SecureChannel(machine.keys))
        conn.send("login", name=f"t{p['proc']}x{next(_ticket_logins)}", features=["ticket"])
        ticket = None
        while True:
            header, _ = await conn.recv_event()
            if header["type"] == "ticket":
                text = header["ticket"]
                ticket = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            elif header["type"] in ("welcome", "error"):
                break
    finally:
        ws.close()
    if ticket is None:
        return None
    return ClientTicket(ticket, machine.keys.resumption_secret, fingerprint_bytes(key), float("inf"))


async def _handshake_phase(p: dict[str, Any], key: Any, a: dict[str, Any]) -> dict[str, Any]:
    """Loops of connect, handshake, one request, close; with ``resume`` each loop first
    fetches a session ticket, then resumes with it every time (a ResumeHello: no RSA)."""
    t0, t1 = a["t0_ns"], a["t1_ns"]
    counts = {"done": 0, "failed": 0}
    latencies: list[float] = []
    errors: list[str] = []
    resume = bool(a.get("resume"))

    async def one_loop() -> None:
        ticket = None
        if resume:
            try:
                ticket = await _fetch_ticket(p, key)
            except (OSError, wsclient.WSClosed, TimeoutError) as exc:
                errors.append(f"fetching a ticket: {exc!r}")
            if ticket is None:
                counts["failed"] += 1
                if len(errors) < 5:
                    errors.append("no session ticket (a server without tickets?)")
                return
        while time.time_ns() < t1:
            start = time.time_ns()
            try:
                ws = await wsclient.connect(p["host"], p["port"])
                try:
                    machine = ClientHandshake(key, resume=ticket)
                    ws.send(machine.client_hello())
                    ws.send(machine.receive_server_hello(await ws.recv()))
                    assert machine.keys is not None
                    conn = chatclient.ChatConnection(ws, SecureChannel(machine.keys))
                    # Any answer proves the server finished its side of the handshake.
                    conn.send("list")
                    await conn.recv_event()
                finally:
                    ws.close()
            except (OSError, wsclient.WSClosed, TimeoutError, HandshakeFailed) as exc:
                counts["failed"] += 1
                if len(errors) < 5:
                    errors.append(repr(exc))
                await asyncio.sleep(0.01)
                continue
            end = time.time_ns()
            if t0 <= end < t1:
                counts["done"] += 1
                latencies.append((end - start) / 1e6)

    await asyncio.gather(*(one_loop() for _ in range(p["concurrency"])))
    return {**counts, "errors": errors, "latencies_ms": thin(latencies)}


def rsa_role_sync(p: dict[str, Any]) -> dict[str, Any]:
    """Bare RSA-OAEP decryptions with the server's key, single-threaded."""
    from chat.keys import load_private_key
    from chat.protocol.handshake import OAEP

    private = load_private_key(Path(p["private_key"]))
    wrapped = private.public_key().encrypt(os.urandom(32), OAEP)
    private.decrypt(wrapped, OAEP)
    count = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    deadline = start + p["seconds"]
    while time.perf_counter() < deadline:
        private.decrypt(wrapped, OAEP)
        count += 1
    wall = time.perf_counter() - start
    return {"decryptions": count, "seconds": wall, "cpu_s": time.process_time() - cpu0}


async def rsa_role(ctl: Control, p: dict[str, Any]) -> None:
    ctl.reply(**rsa_role_sync(p))
    await ctl.command()


# --- scenario 4: capacity ----------------------------------------------------------------------------


async def capacity_role(ctl: Control, p: dict[str, Any]) -> None:
    """Connect (and log in) ``clients`` idle clients; keep reading, never look."""
    ctl.reply()
    command, _ = await ctl.command()
    if command != "run":
        return
    counter = {"frames": 0}

    def count(_record: bytes) -> None:
        counter["frames"] += 1

    start = time.perf_counter()
    host, port = p["host"], p["port"]
    key = load_public_key(Path(p["public_key"])) if p["kind"] == "chat" else None
    gate = asyncio.Semaphore(p["concurrency"])
    clients: list[Client] = []
    deadline = time.monotonic() + p["time_limit_s"]
    failures: list[str] = []
    failed = [0]

    async def one(i: int) -> None:
        async with gate:
            for attempt in range(3):  # a busy server may time a handshake out: try again
                if time.monotonic() > deadline:
                    return
                try:
                    if key is None:
                        ws = await wsclient.connect(host, port)
                        ws.on_message = count
                        clients.append(ws)
                    else:
                        name = f"c{p['proc']}_{i}r{attempt}" if p.get("login", True) else None
                        conn = await chatclient.connect(host, port, key, name)
                        conn.count_only(count)
                        clients.append(conn)
                    return
                except Exception as exc:  # counted and reported, never fatal here
                    failed[0] += 1
                    if len(failures) < 5:
                        failures.append(repr(exc))
                    await asyncio.sleep(0.5)

    await asyncio.gather(*(one(i) for i in range(p["clients"])))
    seconds = time.perf_counter() - start
    ctl.reply(connected=len(clients), seconds=seconds, failures=failures, failed_attempts=failed[0])
    await ctl.command()
    open_now = sum(1 for c in clients if not (c.ws if isinstance(c, chatclient.ChatConnection) else c).closed)
    ctl.reply(still_open=open_now, frames=counter["frames"])
    await ctl.command()
    close_all(clients)


# --- scenario 5: file relay ----------------------------------------------------------------------------

CHUNK = 256 * 1024
#: A transfer that makes no progress for this long is a failure, not a hang.
TRANSFER_TIMEOUT_S = 120.0


def file_digest(block: bytes, size: int) -> str:
    """SHA-256 of ``size`` bytes made of ``block`` repeated."""
    digest = hashlib.sha256()
    for _ in range(size // len(block)):
        digest.update(block)
    return digest.hexdigest()


async def file_receiver_role(ctl: Control, p: dict[str, Any]) -> None:
    """Receives one file, acknowledging every chunk, and checks its SHA-256."""
    chat = p["kind"] == "chat"
    if chat:
        key = load_public_key(Path(p["public_key"]))
        name = p.get("receiver_name", "receiver")
        client: Client = await chatclient.connect(p["host"], p["port"], key, name)
    else:
        client = await wsclient.connect(p["host"], p["port"])
    size = p["size"]
    digest = hashlib.sha256()
    finished: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    got = 0
    if isinstance(client, chatclient.ChatConnection):
        conn = client
        tid = ""

        def on_event(header: dict[str, Any], body: bytes) -> None:
            nonlocal got, tid
            kind = header["type"]
            if kind == "file_chunk":
                digest.update(body)
                got += len(body)
                conn.send("file_ack", rid=False, id=tid, received=got)
            elif kind == "file_incoming":
                tid = header["id"]
                conn.send("file_accept", id=tid)
            elif kind == "file_end":
                ok = header["sha256"] == digest.hexdigest() and got == size
                if ok:
                    conn.send("file_done", id=tid)
                else:
                    conn.send("file_failed", id=tid, detail="bad digest")
                finished.set_result({"received": got, "intact": ok})
            elif kind in ("file_aborted", "error"):
                finished.set_result({"received": got, "intact": False, "error": header})

        conn.on_event(on_event)
    else:
        ws = client

        def on_message(payload: bytes) -> None:
            nonlocal got
            if len(payload) > 256:
                digest.update(payload)
                got += len(payload)
                ws.send(b"A%d" % got)
            elif payload.startswith(b"END "):
                ok = payload[4:].decode() == digest.hexdigest() and got == size
                ws.send(b"DONE" if ok else b"FAIL")
                finished.set_result({"received": got, "intact": ok})

        ws.on_message = on_message
    ctl.reply()  # ready: the handlers above are in place before anything is offered
    await ctl.command()
    ctl.reply(**await asyncio.wait_for(finished, TRANSFER_TIMEOUT_S))
    await ctl.command()
    close_all([client])


async def file_sender_role(ctl: Control, p: dict[str, Any]) -> None:
    """Sends one file of ``size`` bytes (a random block repeated) within the flow-control window."""
    chat = p["kind"] == "chat"
    size, window = p["size"], p["window"]
    block = os.urandom(CHUNK)
    sha = file_digest(block, size)
    if chat:
        key = load_public_key(Path(p["public_key"]))
        name = p.get("sender_name", "sender")
        client: Client = await chatclient.connect(p["host"], p["port"], key, name)
    else:
        client = await wsclient.connect(p["host"], p["port"])
    ctl.reply()
    await ctl.command()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[dict[str, Any]] = loop.create_future()
    progress = asyncio.Event()
    state = {"acked": 0, "go": False, "tid": "", "t0": 0.0}

    def on_ack(received: int) -> None:
        state["acked"] = received
        progress.set()

    if isinstance(client, chatclient.ChatConnection):
        conn = client

        def on_event(header: dict[str, Any], body: bytes) -> None:
            kind = header["type"]
            if kind == "file_ack":
                on_ack(header["received"])
            elif kind == "file_go":
                state["go"], state["t0"] = True, time.perf_counter()
                progress.set()
            elif kind == "file_offered":
                state["tid"] = header["id"]
            elif kind == "file_result" and not done.done():
                done.set_result({"delivered": header["delivered"], "failed": header["failed"]})
            elif kind in ("error", "file_aborted") and not done.done():
                done.set_exception(RuntimeError(f"transfer failed: {header}"))
            progress.set()

        conn.on_event(on_event)
        conn.send("file_offer", name="bench.bin", size=size, to=p.get("receiver_name", "receiver"))
        async with asyncio.timeout(TRANSFER_TIMEOUT_S):
            while not state["go"]:
                if done.done():
                    raise RuntimeError(f"the transfer ended before it started: {done.result()}")
                progress.clear()
                await progress.wait()

        def send_chunk(offset: int) -> None:
            conn.send("file_chunk", block, rid=False, id=state["tid"], offset=offset)

        def finish() -> None:
            conn.send("file_end", id=state["tid"], sha256=sha)

        ws = conn.ws
    else:
        ws = client

        def on_message(payload: bytes) -> None:
            if payload.startswith(b"A"):
                on_ack(int(payload[1:]))
            elif payload in (b"DONE", b"FAIL") and not done.done():
                done.set_result({"intact": payload == b"DONE"})

        ws.on_message = on_message
        state["t0"] = time.perf_counter()

        def send_chunk(offset: int) -> None:
            ws.send(block)

        def finish() -> None:
            ws.send(b"END " + sha.encode())

    sent = 0
    while sent < size:
        while sent < size and sent + CHUNK - state["acked"] <= window:
            send_chunk(sent)
            sent += CHUNK
            await ws.drain()
        if sent < size:
            progress.clear()
            if sent + CHUNK - state["acked"] > window:
                await progress.wait()
    finish()
    outcome = await asyncio.wait_for(done, TRANSFER_TIMEOUT_S)
    seconds = time.perf_counter() - state["t0"]
    ctl.reply(seconds=seconds, bytes=size, **outcome)
    await ctl.command()
    close_all([client])


ROLES: dict[str, Callable[[Control, dict[str, Any]], Awaitable[None]]] = {
    "broadcast": broadcast_role,
    "private": private_role,
    "handshake": handshake_role,
    "rsa": rsa_role,
    "capacity": capacity_role,
    "file_sender": file_sender_role,
    "file_receiver": file_receiver_role,
}
