"""Plain-text tables of the results, and the targets (from issue 6 and issue 4) checked."""

from __future__ import annotations

from typing import Any


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A left-aligned text table."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 100:
            return f"{value:.0f}"
        return f"{value:.3g}" if value < 1 else f"{value:.1f}"
    if isinstance(value, list):
        return "+".join(_fmt(v) for v in value)
    return str(value)


def _runs(row: dict[str, Any]) -> str:
    return " ".join(f"{x:.0f}" for x in row.get("mb_per_s_runs", [row["mb_per_s"]]))


def _pct(util: float | None) -> str:
    return "-" if util is None else f"{util * 100:.0f}%"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met."""
    checks: list[dict[str, Any]] = []
    s = results["scenarios"]

    def add(scenario: str, metric: str, value: Any, goal: str, met: bool | None) -> None:
        checks.append({"scenario": scenario, "metric": metric, "value": value, "target": goal, "met": met})

    if "storage" in s:
        st = s["storage"]
        add("storage", f"messages stored/s, search index on ({st['append']['messages']:,})",
            st["append"]["per_s"], ">= 5000", st["append"]["per_s"] >= 5000)
        add("storage", f"search p95 ms over {st['search']['messages']:,} messages", st["search"]["p95_ms"],
            "< 50", st["search"]["p95_ms"] < 50)
        add("storage", f"resume: {st['resume']['missed']:,} missed replayed, p95 ms", st["resume"]["p95_ms"],
            "< 300", st["resume"]["p95_ms"] < 300)
        restart = st["restart"]
        add("storage", f"{restart['clients']:,} clients live again after kill -9 and restart (s)",
            restart["all_live_s"], "< 10", restart["all_live_s"] < 10)
    if "broadcast" in s:
        for r in s["broadcast"].get("storing", []):
            if r["phase"] == "fixed rate" and r["clients"] >= 100:
                add("broadcast", f"CPU/delivery storing every message vs not, {r['clients']} clients",
                    r["ratio"], "<= 1.15x", r["ratio"] <= 1.15)
        for r in s["broadcast"]["ratios"]:
            if r["target"] == "chat" and r["phase"] == "fixed rate":
                ratio = r["cpu_per_delivery_ratio"]
                add("broadcast", f"CPU/delivery vs baseline, {r['clients']} clients", ratio, "<= 1.25x",
                    ratio <= 1.25)
        _node_targets(s["broadcast"], add)
    if "private" in s:
        for r in s["private"]["rows"]:
            if r["target"] == "chat":
                add("private", f"p99 latency, {r['pairs']} pairs at {r['offered_per_s']:.0f}/s", r["p99_ms"],
                    "< 10 ms", r["p99_ms"] is not None and r["p99_ms"] < 10)
    if "handshake" in s:
        for r in s["handshake"]["rows"]:
            if r["target"] == "chat" and r.get("mode", "full") == "full":
                add("handshake", "handshakes/s vs bare RSA-OAEP decryptions/s", r["ratio_to_rsa"],
                    ">= 0.85", r["ratio_to_rsa"] >= 0.85)
            elif r["target"] == "chat":
                ratio = r.get("ratio_to_full")
                add("handshake", "resumed (session ticket) vs full handshakes/s", ratio, ">= 5x",
                    None if ratio is None else ratio >= 5)
        core = s["handshake"].get("core")
        if core:
            add("handshake", "the handshake work alone: resumed vs full, per CPU second", core["ratio"],
                ">= 5x", core["ratio"] >= 5)
    if "capacity" in s:
        for r in s["capacity"]["rows"]:
            if r["target"] == "chat" and r["login"]:
                add("capacity", f"connected of {r['clients']}", r["connected"], f"= {r['clients']}",
                    r["connected"] == r["clients"] and r["still_open"] == r["clients"])
                add("capacity", "RSS per connection (KiB)", r["rss_per_conn_kib"], "<= 16",
                    r["rss_per_conn_kib"] <= 16)
                if r["clients"] >= 10_000:
                    add("capacity", f"seconds to log in {r['clients']} clients", r["connect_s"], "< 10",
                        r["connect_s"] < 10)
    if "file" in s:
        for r in s["file"]["rows"]:
            if r["target"] == "chat":
                add("file", f"MB/s end to end, {r['bytes'] // 2**20} MiB", r["mb_per_s"], ">= 300",
                    r["mb_per_s"] >= 300 and r["intact"])
                growth = r["peak_rss_growth_mib"]
                add("file", "server peak RSS growth (MiB)", growth, "< 64",
                    None if growth is None else growth < 64)
        ratio = s["file"]["ratio_to_plaintext"].get("chat")
        if ratio is not None:
            add("file", "throughput vs plaintext websockets relay", ratio, ">= 0.8", ratio >= 0.8)
    if "cluster" in s and "skipped" not in s["cluster"]:
        c = s["cluster"]
        clients = c["rows"][0]["clients"]
        add("cluster", f"broadcasts/s, 2 workers vs 1 process, {clients} clients", c["speedup"], ">= 1.6x",
            c["speedup"] is not None and c["speedup"] >= 1.6)
        apart = c["cross_node"]["rows"][0]
        add("cluster", f"cross-node private p99 at {apart['offered_per_s']:.0f}/s", apart["p99_ms"],
            "< 10 ms", apart["p99_ms"] is not None and apart["p99_ms"] < 10)
        one, three = c["idle"]["rows"]
        add("cluster", f"KiB per more idle connection, 3 nodes vs 1 ({one['clients']:,} clients)",
            f"{three['marginal_kib_per_conn']} vs {one['marginal_kib_per_conn']}", "no worse",
            three["marginal_kib_per_conn"] <= one["marginal_kib_per_conn"]
            and three["connected"] == three["clients"])
    return checks


def _rounds(row: dict[str, Any], name: str) -> str:
    """The median round's figure, and every round's where there were several."""
    rounds = row.get(f"{name}_runs", [])
    figure = str(row[name])
    return figure if len(rounds) < 2 else f"{figure} ({' '.join(map(str, rounds))})"


def _node_targets(broadcast: dict[str, Any], add: Any) -> None:
    """Issue 17: the chat server against the Node ``ws`` relay at the fixed rate (equal load)."""
    node = broadcast.get("node")
    if node is None:  # results from before the Node relay was a target
        return
    if "skipped" in node:
        add("broadcast", "CPU/delivery and p99 vs Node ws relay", f"skipped: {node['skipped']}", "-", None)
        return
    for r in broadcast.get("versus_node", []):
        if r["target"] != "chat" or r["phase"] != "fixed rate":
            continue
        limit = 1.2 if r["clients"] < 100 else 1.0
        cpu, p99 = r["cpu_per_delivery_ratio"], r["p99_ratio"]
        add("broadcast", f"CPU/delivery vs Node ws relay, {r['clients']} clients", cpu, f"<= {limit}x",
            None if cpu is None else cpu <= limit)
        add("broadcast", f"p99 latency vs Node ws relay, {r['clients']} clients", p99, "<= 1.5x",
            None if p99 is None else p99 <= 1.5)


def render(results: dict[str, Any]) -> str:
    """The whole report as text."""
    m = results["machine"]
    pk = m["packages"]
    out = [
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, {m['memory_gib']} GiB, {m['os']}",
        f"Server code: {m.get('code')}",
        f"Python {m['python']}; websockets {pk.get('websockets')}, cryptography {pk.get('cryptography')} "
        f"({pk.get('openssl')}), uvloop {pk.get('uvloop')}; RSA key {results['config']['key_bits']} bits"
        + ("; QUICK run (smoke sizes)" if results["config"]["quick"] else ""),
        "Utilisation columns: share of one core used in the measurement window by the server, the",
        "load generators, and everything else on the machine (other processes).",
    ]
    s = results["scenarios"]
    if "storage" in s:
        st = s["storage"]
        out += ["", "6. Stored conversations"]
        append, search, resume = st["append"], st["search"], st["resume"]
        out.append(table(
            ["measure", "size", "result"],
            [["stored messages/s (batched commits, index on)",
              f"{append['messages']:,} by {append['senders']} senders", f"{append['per_s']:,.0f}/s"],
             ["search, p50 / p95", f"{search['messages']:,} messages",
              f"{search['p50_ms']:.1f} / {search['p95_ms']:.1f} ms"],
             ["resume: reconnect to end of replay, p50 / p95", f"{resume['missed']:,} missed, "
              f"{resume['rounds']} rounds", f"{resume['p50_ms']:.0f} / {resume['p95_ms']:.0f} ms"],
             ["kill -9, restart: every client live again", f"{st['restart']['clients']:,} clients",
              f"{st['restart']['all_live_s']:.2f} s (server back in {st['restart']['restart_s']:.2f} s)"]],
        ))  # fmt: skip
    if "broadcast" in s:
        out += ["", "1. Broadcast fan-out, 100-character texts"]
        out.append(table(
            ["clients", "target", "phase", "deliv/s", "CPU us/deliv", "p50 ms", "p99 ms", "server", "gens",
             "other", "limit"],
            [[r["clients"], r["target"], r["phase"], r["delivered_per_s"], r["server_cpu_us_per_delivery"],
              r["p50_ms"], r["p99_ms"], _pct(r["server_util"]), _pct(r["gen_util_total"]),
              _pct(r["other_util"]), r["limit"]] for r in s["broadcast"]["rows"]],
        ))
        out.append("CPU per delivery relative to the baseline: " + ", ".join(
            f"{r['target']} {r['clients']} clients {r['phase']}: {r['cpu_per_delivery_ratio']}x"
            for r in s["broadcast"]["ratios"]))
        node = s["broadcast"].get("node")
        if node and "skipped" in node:
            out.append(f"Node ws relay: skipped: {node['skipped']}")
        elif node:
            out.append(f"Node ws relay: node {node['node']}, ws {node['ws']}. Relative to it, CPU per "
                       "delivery and p99: " + ", ".join(
                           f"{r['target']} {r['clients']} clients {r['phase']}: "
                           f"{_fmt(r['cpu_per_delivery_ratio'])}x and {_fmt(r['p99_ratio'])}x"
                           for r in s["broadcast"].get("versus_node", [])))
        runs = [r for r in s["broadcast"]["rows"] if r.get("rounds", 1) > 1]
        if runs:
            out.append("Fixed rate: the median of rounds with CPU us/deliv " + "; ".join(
                f"{r['target']} {r['clients']}: " + " ".join(map(str, r["server_cpu_us_per_delivery_runs"]))
                for r in runs))
    if "private" in s:
        out += ["", "2. Private messages"]
        out.append(table(
            ["target", "pairs", "offered/s", "deliv/s", "p50 ms", "p99 ms", "max ms", "CPU us/msg", "server",
             "gens", "other"],
            [[r["target"], r["pairs"], r["offered_per_s"], r["delivered_per_s"], r["p50_ms"], r["p99_ms"],
              r["max_ms"], r["server_cpu_us_per_message"], _pct(r["server_util"]), _pct(r["gen_util_total"]),
              _pct(r["other_util"])] for r in s["private"]["rows"]],
        ))
    if "handshake" in s:
        h = s["handshake"]
        out += ["", f"3. Handshakes (bare RSA-OAEP decryption: {h['rsa']['decryptions_per_s']}/s, "
                    f"{h['rsa']['us_per_decryption']} us each)"]
        out.append(table(
            ["target", "handshake", "clients", "handshakes/s", "ratio to RSA", "vs full", "CPU us/handshake",
             "p50 ms", "p99 ms", "failed", "server", "gens", "other", "limit"],
            [[r["target"], r.get("mode", "full"), r["clients"], r["handshakes_per_s"], r["ratio_to_rsa"],
              r.get("ratio_to_full", ""), r["server_cpu_us_per_handshake"], r["p50_ms"], r["p99_ms"],
              r["failed"], _pct(r["server_util"]), _pct(r["gen_util_total"]), _pct(r["other_util"]),
              r["limit"]]
             for r in h["rows"]],
        ))
        if h.get("core"):
            core = h["core"]
            out.append(f"The handshake work alone (the server's session, in one thread, no network): "
                       f"full {core['full_us']} us, resumed {core['resumed_us']} us: {core['ratio']}x")
    if "capacity" in s:
        out += ["", "4. Capacity: idle connections (chat: handshake + login; baseline: bare websockets)"]
        out.append(table(
            ["target", "login", "clients", "connected", "retries", "connect s", "conn/s", "server CPU s",
             "events", "RSS before MiB", "RSS after MiB", "KiB/conn", "server", "gens", "other"],
            [[r["target"], {True: "yes", False: "no", None: "-"}[r["login"]], r["clients"], r["connected"],
              r.get("failed_attempts"), r["connect_s"], r["connects_per_s"], r["server_cpu_s"],
              r["events_received"], r["rss_before_mib"], r["rss_after_mib"], r["rss_per_conn_kib"],
              _pct(r["server_util"]), _pct(r["gen_util_total"]), _pct(r["other_util"])]
             for r in s["capacity"]["rows"]],
        ))
    if "file" in s:
        f = s["file"]
        out += ["", "5. File relay, sender -> server -> receiver (MB = 10^6 bytes; the median of the runs)"]
        out.append(table(
            ["target", "MiB", "MB/s", "runs MB/s", "intact", "server ms/MiB", "faults/chunk", "peak RSS +MiB",
             "server", "sender", "receiver", "other", "limit"],
            [[r["target"], r["bytes"] // 2**20, r["mb_per_s"], _runs(r),
              r["intact"], r["server_cpu_ms_per_mib"], r["server_page_faults_per_chunk"],
              r["peak_rss_growth_mib"], _pct(r["server_util"]), _pct(r["sender_util"]),
              _pct(r["receiver_util"]), _pct(r["other_util"]), r["limit"]]
             for r in f["rows"]],
        ))
        out.append("Throughput relative to the plaintext relay: " + ", ".join(
            f"{k} {v}x" for k, v in f["ratio_to_plaintext"].items()))
    if "cluster" in s:
        out += ["", "7. Several nodes as one service (Redis and PostgreSQL)"]
        c = s["cluster"]
        if "skipped" in c:
            out.append(f"skipped: {c['skipped']}")
        else:
            out.append(table(
                ["target", "clients", "broadcasts/s (rounds)", "deliv/s", "CPU us/deliv", "p50 ms", "p99 ms",
                 "lost", "server", "gens", "redis+pg", "other", "limit"],
                [[r["target"], r["clients"], _rounds(r, "broadcasts_per_s"), r["delivered_per_s"],
                  r["server_cpu_us_per_delivery"], r["p50_ms"], r["p99_ms"], r["lost"],
                  _pct(r["server_util"]), _pct(r["gen_util_total"]), _pct(r.get("services_util")),
                  _pct(r["other_util"]), r["limit"]] for r in c["rows"]],
            ))
            out.append(f"Broadcasts per second, 2 workers / 1 process: {c['speedup']}x")
            out.append(table(
                ["private messages", "pairs", "offered/s", "delivered", "p50 ms", "p99 ms", "max ms",
                 "CPU us/msg", "servers", "gens", "redis+pg"],
                [[r["target"], r["pairs"], r["offered_per_s"], r["delivered"], r["p50_ms"], r["p99_ms"],
                  r["max_ms"], r["server_cpu_us_per_message"], _pct(r["server_util"]),
                  _pct(r["gen_util_total"]), _pct(r.get("services_util"))]
                 for r in c["cross_node"]["rows"]],
            ))
            out.append(table(
                ["idle clients", "nodes", "connected", "open", "connect s", "logins/s",
                 "RSS MiB: before, half, all", "KiB/conn", "KiB/conn, 2nd half"],
                [[r["clients"], r["nodes"], r["connected"], r["still_open"], r["connect_s"],
                  r["logins_per_s"], " / ".join(map(str, r["rss_mib"])), r["rss_per_conn_kib"],
                  _rounds(r, "marginal_kib_per_conn")] for r in c["idle"]["rows"]],
            ))  # fmt: skip
    checks = results.get("targets", [])
    if checks:
        out += ["", "Targets"]
        out.append(table(
            ["scenario", "metric", "value", "target", "met"],
            [[c["scenario"], c["metric"], c["value"], c["target"],
              {True: "yes", False: "NO", None: "n/a"}[c["met"]]] for c in checks],
        ))
    return "\n".join(out)


def _find_profiles(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "profile" in node and isinstance(node["profile"], dict):
            label = f"{path} {node.get('target', '')} {node.get('clients', '')}".strip()
            found.append((label, node["profile"]))
        for key, value in node.items():
            if key != "profile":
                found += _find_profiles(value, path or key)
    elif isinstance(node, list):
        for item in node:
            found += _find_profiles(item, path)
    return found


def profiles(results: dict[str, Any], top: int = 15) -> str:
    """The py-spy summaries: where the chat server's samples were (self time)."""
    out = ["", "Server profiles (py-spy, share of samples; self = innermost frame)"]
    for name, scenario in results["scenarios"].items():
        for label, prof in _find_profiles(scenario, name):
            if "error" in prof:
                out.append(f"\n{label}: py-spy failed: {prof['error']}")
                continue
            out.append(f"\n{label}: {prof.get('samples', 0)} busy samples ({prof.get('file', '')})")
            for frame, share in prof.get("self", [])[:top]:
                out.append(f"  {share:6.1%}  {frame}")
    return "\n".join(out)
