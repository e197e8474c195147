"""Scenario 7: several nodes as one service (README "Running a cluster"; BENCHMARKS.md).

- workers: broadcasts per second, saturated (a closed loop of broadcasts in flight),
  1,000 clients: one server process against ``--workers 2`` on the same port, both with
  Redis and PostgreSQL, and a single SQLite node for reference. The load generators run
  on the same two cores and are counted in every figure; every client but one per
  generator only counts its frames (``bench/cluster_roles.py``).
- cross_node: private messages at 2,000/s from users of one node to users of another
  (and, for reference, both on one node): latency from send to receipt, p50/p99.
- idle: 10,000 idle logged-in clients on one node, then spread over three nodes: RSS
  growth per connection, the nodes' RSS summed.

Redis is a ``redis-server`` of the benchmark's own on a free port; PostgreSQL is the
machine's (``CHAT_BENCH_PG``, default ``postgresql://postgres@127.0.0.1:5432/postgres``),
in databases created for each server and dropped at the end. Without them the scenario
is skipped with a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    CpuWindow,
    ServerProcess,
    Worker,
    latency_summary,
    recv_all,
    sleep_until,
    stop_all,
    wait_idle,
    wait_quiet,
)
from bench.scenarios import CHAT, Settings, _broadcast_row, _measure_row, _median_row, _us, _window

PG_ADMIN = os.environ.get("CHAT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
HOST = "127.0.0.1"


@dataclass
class ClusterSizes:
    fanout_clients: int = 1000
    #: Broadcasts in flight per generator: 16 left two workers short of saturation (their
    #: CPU 115 %, with a quarter of a core idle; 32 gave them 5 to 15 % more while one
    #: process stayed where it was, at 100 %). 32 still left a sixth of the machine idle
    #: (workers 124 %, generators 50 %, Redis and PostgreSQL 10 %); 64 fills it (132, 47
    #: and 11 %), and 128 measured the same as 64, as did one process at all three.
    fanout_window: int = 64
    #: Interleaved rounds of the three workers targets; each one's median is reported,
    #: since one process's rate moved from 190 to 270 broadcasts/s between 4 s runs.
    fanout_rounds: int = 3
    cross_pairs: int = 100
    cross_rate: float = 2000.0
    idle_clients: int = 10_000
    #: Interleaved rounds of the idle part (one node, three nodes, ...): the round with
    #: the median figure is reported, since the allocator's slack moves a single reading
    #: by 0.2 to 0.4 KiB per connection.
    idle_rounds: int = 3


def sizes(settings: Settings) -> ClusterSizes:
    if settings.quick:
        return ClusterSizes(fanout_clients=20, fanout_window=4, fanout_rounds=1, cross_pairs=5,
                            cross_rate=100.0, idle_clients=60, idle_rounds=1)
    return ClusterSizes(idle_clients=settings.capacity_clients)


class ServerTree(ServerProcess):
    """A server process with its worker processes (``--workers``): CPU and RSS of all."""

    def _processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu(self) -> float:
        total = 0.0
        for process in self._processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> int:
        total = 0
        for process in self._processes():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total


class Nodes:
    """Several servers measured as one (what ``CpuWindow`` and ``wait_idle`` need)."""

    def __init__(self, servers: list[ServerTree]) -> None:
        self.servers = servers
        self.proc = servers[0].proc

    def cpu(self) -> float:
        return sum(server.cpu() for server in self.servers)

    def rss(self) -> int:
        return sum(server.rss() for server in self.servers)

    def wait_idle(self, threshold: float = 0.05, interval: float = 0.25, timeout: float = 300.0) -> float:
        return wait_idle(self.cpu, threshold * len(self.servers), interval, timeout)


def _pause(settings: Settings) -> float:
    """Seconds a server must stay idle before a measurement starts."""
    return settings.idle_interval_s if settings.quick else max(0.5, settings.idle_interval_s)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def unavailable() -> str | None:
    """Why the scenario cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on the PATH"
    try:
        import asyncpg  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed"
    try:
        socket.create_connection((HOST, 5432), 2).close()
    except OSError:
        return "no PostgreSQL answers on 127.0.0.1:5432"
    return None


class Services:
    """A Redis of the benchmark's own and databases on the machine's PostgreSQL."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.databases: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def __enter__(self) -> Services:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(250):
            with contextlib.suppress(OSError):
                socket.create_connection((HOST, self.port), 1).close()
                return self
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        if self.databases:
            drops = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self.databases]
            asyncio.run(self._admin(drops))

    def cpu(self) -> float:
        """CPU seconds used so far by our Redis and by every PostgreSQL process."""
        processes = [p for p in psutil.process_iter(["name"]) if str(p.info["name"]).startswith("postgres")]
        if self.proc is not None:
            processes.append(psutil.Process(self.proc.pid))
        total = 0.0
        for process in processes:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def fresh(self) -> tuple[str, str]:
        """An empty Redis and a new, empty database: (redis URL, database URL)."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            client.flushall()
        finally:
            client.close()
        name = f"chat_bench_{secrets.token_hex(6)}"
        asyncio.run(self._admin([f'CREATE DATABASE "{name}"']))
        self.databases.append(name)
        return self.redis_url, PG_ADMIN.rsplit("/", 1)[0] + "/" + name

    async def _admin(self, statements: list[str]) -> None:
        import asyncpg

        connection = await asyncpg.connect(PG_ADMIN)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()


def start_node(settings: Settings, *extra: str, port: int = 0) -> ServerTree:
    args = settings.chat_args(CHAT, "--port", str(port), *extra)
    # On uvloop where the run has it, as chat-server picks it by itself when installed.
    server = ServerTree("chat", args, uvloop=settings.uvloop, log_path=settings.log_path,
                        tree=settings.server_tree)
    server.start(timeout=120)
    return server


@contextlib.contextmanager
def running(servers: list[ServerTree], workers: list[Worker]) -> Iterator[None]:
    try:
        yield
    finally:
        stop_all(workers)
        for server in servers:
            server.stop()


def cluster(settings: Settings) -> dict[str, Any]:
    why = unavailable()
    if why is not None:
        return {"skipped": f"needs Redis and PostgreSQL: {why}"}
    size = sizes(settings)
    with tempfile.TemporaryDirectory(prefix="redis-", dir=settings.results_dir) as directory, \
            Services(Path(directory)) as services:  # fmt: skip
        # Latency first, before the fan-out leaves PostgreSQL busy writing out what it stored.
        cross_node = _cross_node(settings, services, size)
        workers = _workers(settings, services, size)
        idle = _idle(settings, services, size)
    one = next(r for r in workers["rows"] if r["target"] == "1 process, cluster")
    two = next(r for r in workers["rows"] if r["target"] == "2 workers, cluster")
    speedup = round(two["broadcasts_per_s"] / one["broadcasts_per_s"], 2) if one["broadcasts_per_s"] else None
    return {**workers, "speedup": speedup, "cross_node": cross_node, "idle": idle}


# --- workers: broadcasts per second, one process against two ------------------------------


def _workers(settings: Settings, services: Services, size: ClusterSizes) -> dict[str, Any]:
    clients = size.fanout_clients
    procs = 2
    per_proc = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    senders = min(4, max(1, clients // 8))
    variants: list[tuple[str, list[str]]] = [
        ("1 process, SQLite", []),
        ("1 process, cluster", ["cluster"]),
        ("2 workers, cluster", ["cluster", "--workers", "2"]),
    ]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in variants}
    for _ in range(size.fanout_rounds):
        for label, options in variants:
            runs[label].append(_workers_once(settings, services, size, label, options, senders, per_proc))
    rows = [_median_row(found, "broadcasts_per_s") for found in runs.values()]
    return {"rows": rows}


def _workers_once(
    settings: Settings, services: Services, size: ClusterSizes, label: str, options: list[str], senders: int,
    per_proc: list[int],
) -> dict[str, Any]:
    extra = [o for o in options if o != "cluster"]
    if "cluster" in options:
        redis_url, db_url = services.fresh()
        extra += ["--redis", redis_url, "--db", db_url]
    server = start_node(settings, *extra, port=free_port())
    gens: list[Worker] = []
    with running([server], gens):
        gens += [
            Worker("fanout", settings.params(server, proc=i, clients=n, senders=senders))
            for i, n in enumerate(per_proc)
        ]
        recv_all(gens, timeout=600)
        server.wait_idle(interval=_pause(settings), timeout=120)
        base = {"target": label, "clients": sum(per_proc), "window": size.fanout_window * len(per_proc)}
        used, start = services.cpu(), time.perf_counter()
        closed = {"window": size.fanout_window}
        row = _measure_row(settings, server, gens, closed, _broadcast_row(sum(per_proc)), base)
        # Redis and PostgreSQL over the whole measurement (warm-up and tail included).
        row["services_util"] = round((services.cpu() - used) / (time.perf_counter() - start), 3)
        return row


# --- cross-node private messages: latency ------------------------------------------------


def _cross_node(settings: Settings, services: Services, size: ClusterSizes) -> dict[str, Any]:
    rows = []
    for label, nodes in (("2 nodes, sender and recipient apart", 2), ("1 node, cluster", 1)):
        redis_url, db_url = services.fresh()
        servers = [start_node(settings, "--redis", redis_url, "--db", db_url) for _ in range(nodes)]
        gens: list[Worker] = []
        with running(servers, gens):
            ports = [servers[0].port, servers[-1].port]
            params = settings.params(servers[0], proc=0, pairs=size.cross_pairs, ports=ports)
            gens.append(Worker("cross_private", params))
            recv_all(gens, timeout=600)
            group = Nodes(servers)
            group.wait_idle(interval=_pause(settings), timeout=120)
            ours = [p for p in [*(server.proc for server in servers), *(gen.proc for gen in gens)] if p]
            wait_quiet(ours, timeout=settings.quiet_timeout_s)  # PostgreSQL's background work too
            t0, t1 = _window(settings, gens, {"rate": size.cross_rate})
            sleep_until(t0)
            window = CpuWindow(group, gens).start()  # type: ignore[arg-type]
            used = services.cpu()
            sleep_until(t1)
            cpu = window.stop().summary()
            cpu["services_util"] = round((services.cpu() - used) / cpu["wall_s"], 3)
            replies = recv_all(gens, timeout=120)
            delivered = sum(r["delivered"] for r in replies)
            rows.append({
                "target": label, "pairs": size.cross_pairs, "offered_per_s": size.cross_rate,
                "sent_in_window": sum(r["sent_in_window"] for r in replies), "delivered": delivered,
                "server_cpu_us_per_message": _us(cpu["server_cpu_s"], delivered),
                **latency_summary([x for r in replies for x in r["latencies_ms"]]), **cpu,
            })  # fmt: skip
    return {"rows": rows}


# --- idle clients: memory per connection on one node and on three -----------------------


def _idle(settings: Settings, services: Services, size: ClusterSizes) -> dict[str, Any]:
    """Rounds of one node then three; each node count's median round is reported, with
    every round's figure."""
    runs: dict[int, list[dict[str, Any]]] = {1: [], 3: []}
    for _ in range(size.idle_rounds):
        for nodes in runs:
            runs[nodes].append(_idle_once(settings, services, size, nodes))
    return {"rows": [_median_row(found, "marginal_kib_per_conn") for found in runs.values()]}


def _idle_once(settings: Settings, services: Services, size: ClusterSizes, nodes: int) -> dict[str, Any]:
    """Two waves of half the clients each: the RSS growth of the second wave per
    connection is what one more connection costs (the first pays for what every process
    grows by once: its heap's slack, caches), and it is what is compared."""
    redis_url, db_url = services.fresh()
    servers = [start_node(settings, "--redis", redis_url, "--db", db_url) for _ in range(nodes)]
    gens: list[Worker] = []
    with running(servers, gens):
        group = Nodes(servers)
        procs = settings.capacity_procs if nodes == 1 else 2 * nodes
        if settings.quick:
            procs = nodes
        settle = 0.1 if settings.quick else 1.0  # seconds the servers must stay idle
        group.wait_idle(interval=_pause(settings), timeout=120)
        readings, waves = [group.rss()], []
        half = size.idle_clients // 2
        for clients in (half, size.idle_clients - half):
            shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
            wave = [
                Worker("capacity", settings.params(
                    servers[i % nodes], proc=len(gens) + i, clients=n,
                    concurrency=settings.capacity_concurrency,
                    time_limit_s=settings.capacity_time_limit_s,
                ))
                for i, n in enumerate(shares)
            ]  # fmt: skip
            gens += wave
            recv_all(wave, timeout=120)
            start = time.perf_counter()
            for gen in wave:
                gen.send("run")
            replies = recv_all(wave, timeout=settings.capacity_time_limit_s + 300)
            connected = sum(r["connected"] for r in replies)
            waves.append((connected, time.perf_counter() - start))
            group.wait_idle(threshold=0.02, interval=settle, timeout=settings.capacity_time_limit_s)
            time.sleep(settle)
            readings.append(group.rss())
        for gen in gens:
            gen.send("check")
        checks = recv_all(gens, timeout=60)
        total = sum(count for count, _ in waves)
        seconds = sum(took for _, took in waves)
        return {
            "nodes": nodes, "clients": size.idle_clients, "connected": total,
            "still_open": sum(c["still_open"] for c in checks),
            "connect_s": round(seconds, 2), "logins_per_s": round(total / seconds, 1),
            "rss_mib": [round(r / 2**20, 1) for r in readings],
            "rss_per_conn_kib": round((readings[2] - readings[0]) / max(1, total) / 1024, 1),
            "marginal_kib_per_conn": round((readings[2] - readings[1]) / max(1, waves[1][0]) / 1024, 1),
        }  # fmt: skip
