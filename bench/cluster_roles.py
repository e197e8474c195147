"""Load-generator roles of scenario 7, several nodes as one service (``bench/cluster.py``).

- ``fanout``: clients that broadcast in a closed loop. With 1,000 clients each broadcast
  is 999 deliveries, and on a 2-core machine the generators share the cores with the
  servers: so every client but one per process only counts the frames it receives
  (``RawWebSocket.counting``: no copy, no decryption), which costs far less than the
  server's sealing and writing of them; the one tracker decrypts what it gets, times it,
  and closes the loop on this process's own broadcasts.
- ``cross_private``: pairs whose sender is on one node and whose recipient is on another;
  paced private messages, each timed from send to receipt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import chatclient
from bench.loadgen import PACE_S, Control, Receipts, close_all, closed_loop, connect_many, make_text, thin


def _chat(client: Any) -> chatclient.ChatConnection:
    assert isinstance(client, chatclient.ChatConnection)
    return client


async def fanout_role(ctl: Control, p: dict[str, Any]) -> None:
    me = p["proc"]
    clients = [_chat(c) for c in await connect_many(p, p["clients"], f"f{me}_")]
    ctl.reply(connected=len(clients))
    while True:
        command, args = await ctl.command()
        if command != "run":
            break
        ctl.reply(**await _fanout_phase(clients, p["senders"], me, args))
    close_all(clients)


async def _fanout_phase(
    clients: list[chatclient.ChatConnection], senders: int, me: int, a: dict[str, Any]
) -> dict[str, Any]:
    t0, t1 = a["t0_ns"], a["t1_ns"]
    tracker = clients[senders]
    receipts = Receipts(t0, t1)
    state = {"outstanding": 0, "lost": 0}
    wake = asyncio.Event()
    mine = f" {me:03d} "

    def on_event(header: dict[str, Any], _body: bytes) -> None:
        if header["type"] != "broadcast":
            return
        text = header["text"]
        receipts.record(int(text[:19]))
        if text[19:24] == mine:
            state["outstanding"] -= 1
            wake.set()

    for client in clients:
        if client is tracker:
            client.on_event(on_event)
        else:
            client.ws.counting = True

    frames: dict[str, int] = {}

    async def count_at(name: str, at_ns: int) -> None:
        await asyncio.sleep(max(0.0, (at_ns - time.time_ns()) / 1e9))
        frames[name] = sum(c.ws.frames_in for c in clients)

    counters = [asyncio.create_task(count_at("t0", t0)), asyncio.create_task(count_at("t1", t1))]

    def send(n: int) -> None:
        clients[n % senders].send("broadcast", text=make_text(time.time_ns(), me, n), rid=False)

    seq = await closed_loop(t1, a["window"], send, state, wake)
    await asyncio.gather(*counters)
    await asyncio.sleep(a.get("tail_s", 0.5))
    return {
        "delivered": frames["t1"] - frames["t0"],
        "sent_total": seq,
        "lost": state["lost"],
        "latencies_ms": thin(receipts.latencies_ms),
    }


async def cross_private_role(ctl: Control, p: dict[str, Any]) -> None:
    me, pairs = p["proc"], p["pairs"]
    sending_port, receiving_port = p["ports"]
    senders = [_chat(c) for c in await connect_many({**p, "port": sending_port}, pairs, f"s{me}_")]
    receivers = [_chat(c) for c in await connect_many({**p, "port": receiving_port}, pairs, f"r{me}_")]
    ctl.reply(connected=2 * pairs)
    while True:
        command, a = await ctl.command()
        if command != "run":
            break
        ctl.reply(**await _cross_private_phase(senders, receivers, me, a))
    close_all([*senders, *receivers])


async def _cross_private_phase(
    senders: list[chatclient.ChatConnection], receivers: list[chatclient.ChatConnection], me: int,
    a: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    t0, t1 = a["t0_ns"], a["t1_ns"]
    receipts = Receipts(t0, t1)

    def on_event(header: dict[str, Any], _body: bytes) -> None:
        if header["type"] == "private":
            receipts.record(int(header["text"][:19]))

    for client in receivers:
        client.on_event(on_event)
    for client in senders:
        client.on_event(lambda _header, _body: None)  # private_sent: read, not looked at
    interval = 1e9 / a["rate"]
    due = float(time.time_ns())
    seq = sent = 0
    while (now := time.time_ns()) < t1:
        while due <= now:
            i = seq % len(senders)
            senders[i].send("private", to=f"r{me}_{i}", text=make_text(time.time_ns(), me, seq))
            seq += 1
            if t0 <= now:
                sent += 1
            due += interval
        await asyncio.sleep(max(PACE_S, (due - time.time_ns()) / 1e9))
    await asyncio.sleep(0.3)
    latencies = thin(receipts.latencies_ms)
    return {"delivered": receipts.delivered, "sent_in_window": sent, "latencies_ms": latencies}


CLUSTER_ROLES: dict[str, Callable[[Control, dict[str, Any]], Awaitable[None]]] = {
    "fanout": fanout_role,
    "cross_private": cross_private_role,
}
