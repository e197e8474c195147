"""Smoke run of the benchmark suite (``python -m bench --quick``): every scenario runs end
to end and produces its numbers. Benchmarks are not timed tests: no threshold is checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import services

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # ``bench`` is a top-level directory, not an installed package
    sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.slow

procstat = pytest.importorskip("bench.procstat")
if not procstat.available():
    pytest.skip("process measurements need psutil or /proc", allow_module_level=True)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: The scenarios the quick run measures: scenario 7 (several nodes) in a run of its own,
#: so that the two runs go in parallel under pytest-xdist.
SINGLE_NODE = ["storage", "broadcast", "private", "handshake", "capacity", "file"]
CLUSTER = ["cluster"]


#: Where the bench installs ``ws`` for the Node relay: the default place of full runs, kept
#: between test runs (git-ignored), so that npm installs it once per checkout.
NODE_RELAY_DIR = REPO / "bench-results" / "node-relay"


def quick_run(out: Path, key: Path, scenarios: list[str]) -> dict:
    output = out / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", ",".join(scenarios), "--private-key", str(key),
         "--results-dir", str(out), "--output", str(output), "--node-relay-dir", str(NODE_RELAY_DIR)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Targets" in run.stdout or "skipped: needs Redis and PostgreSQL" in run.stdout
    return json.loads(output.read_text())


@pytest.fixture
def results(tmp_path_factory: pytest.TempPathFactory, key_pair: tuple[Path, Path]) -> dict:
    return quick_run(tmp_path_factory.mktemp("bench"), key_pair[0], SINGLE_NODE)


def _check_every_scenario_ran(results: dict, scenarios: list[str]) -> None:
    assert results["errors"] == {}
    assert list(results["scenarios"]) == scenarios
    assert results["machine"]["cpu_model"] and results["machine"]["python"]


def _check_broadcast_numbers(results: dict) -> None:
    rows = results["scenarios"]["broadcast"]["rows"]
    assert {r["target"] for r in rows} >= {"chat", "baseline"}
    for row in rows:
        assert row["delivered"] > 0
        for key in ("delivered_per_s", "server_cpu_us_per_delivery", "p50_ms", "p99_ms", "server_util"):
            assert _number(row[key]), (key, row)
    assert any(r["target"] == "chat" for r in results["scenarios"]["broadcast"]["ratios"])


def _check_node_relay(results: dict) -> None:
    """The Node ``ws`` relay is measured beside the baseline, or skipped with its reason."""
    scenario = results["scenarios"]["broadcast"]
    node = scenario["node"]
    listed = [t for t in results["targets"] if "Node ws relay" in t["metric"]]
    if shutil.which("node") is None:
        assert node == {"skipped": "node is not installed (not on the PATH)"}
        assert [t["value"] for t in listed] == ["skipped: node is not installed (not on the PATH)"]
        assert not any(r["target"] == "node ws" for r in scenario["rows"])
        return
    if "skipped" in node and not os.environ.get("CI"):
        # node without npm, or without the registry, on a developer's machine: said so.
        assert node["skipped"].startswith(("npm is not installed", "npm install ws@8")), node
        return
    assert node["ws"].startswith("8.") and node["node"].startswith("v"), node
    phases = [r["phase"] for r in scenario["rows"] if r["target"] == "node ws"]
    assert phases == ["saturated", "fixed rate"]
    (versus,) = [r for r in scenario["versus_node"] if r["target"] == "chat" and r["phase"] == "fixed rate"]
    assert _number(versus["cpu_per_delivery_ratio"]) and _number(versus["p99_ratio"])
    assert [t["metric"] for t in listed] == ["CPU/delivery vs Node ws relay, 10 clients",
                                             "p99 latency vs Node ws relay, 10 clients"]
    assert all(_number(t["value"]) for t in listed)


def _check_private_numbers(results: dict) -> None:
    (row,) = [r for r in results["scenarios"]["private"]["rows"] if r["target"] == "chat"]
    assert row["delivered"] > 0 and _number(row["p99_ms"])


def _check_handshake_numbers(results: dict) -> None:
    scenario = results["scenarios"]["handshake"]
    assert scenario["rsa"]["decryptions_per_s"] > 0
    (row, resumed) = [r for r in scenario["rows"] if r["target"] == "chat"]
    assert row["mode"] == "full" and row["handshakes"] > 0 and _number(row["ratio_to_rsa"])
    # Resumed with a session ticket, on the same server, and compared with the full ones.
    assert resumed["mode"] == "resumed" and resumed["handshakes"] > 0 and resumed["failed"] == 0
    assert _number(resumed["ratio_to_full"])
    # The handshake work alone, timed in-process: a resumption skips the RSA decryption.
    core = scenario["core"]
    assert core["count"] > 0 and 0 < core["resumed_us"] < core["full_us"]


def _check_capacity_numbers(results: dict) -> None:
    rows = results["scenarios"]["capacity"]["rows"]
    assert {r["target"] for r in rows} >= {"chat", "baseline"}
    for row in rows:
        assert row["connected"] == row["clients"] == row["still_open"]
        assert _number(row["rss_per_conn_kib"]) and _number(row["connects_per_s"])


def _check_file_numbers(results: dict) -> None:
    scenario = results["scenarios"]["file"]
    assert {r["target"] for r in scenario["rows"]} >= {"chat", "baseline"}
    for row in scenario["rows"]:
        assert row["intact"] and row["mb_per_s"] > 0
    assert _number(scenario["ratio_to_plaintext"]["chat"])


def _check_storage_numbers(results: dict) -> None:
    scenario = results["scenarios"]["storage"]
    assert scenario["append"]["messages"] > 0 and scenario["append"]["per_s"] > 0
    assert scenario["search"]["queries"] > 0 and scenario["search"]["results"] > 0
    assert _number(scenario["search"]["p95_ms"]) and _number(scenario["resume"]["p95_ms"])
    assert scenario["restart"]["clients"] > 0 and _number(scenario["restart"]["all_live_s"])


def _check_cluster_numbers(results: dict) -> None:
    scenario = results["scenarios"]["cluster"]
    if "skipped" in scenario:  # as the cluster tests: only where a service is missing, never under CI
        assert services.missing() and not os.environ.get("CI"), scenario["skipped"]
        assert scenario["skipped"].startswith("needs Redis and PostgreSQL: ")
        return
    rows = {r["target"]: r for r in scenario["rows"]}
    assert set(rows) == {"1 process, SQLite", "1 process, cluster", "2 workers, cluster"}
    for row in rows.values():
        assert row["delivered"] > 0 and row["lost"] == 0 and _number(row["broadcasts_per_s"])
    assert _number(scenario["speedup"])
    for row in scenario["cross_node"]["rows"]:
        assert row["delivered"] > 0 and row["sent_in_window"] > 0 and _number(row["p99_ms"])
    for row in scenario["idle"]["rows"]:
        assert row["connected"] == row["clients"] == row["still_open"]
        assert _number(row["rss_per_conn_kib"]) and _number(row["marginal_kib_per_conn"])
    assert [r["nodes"] for r in scenario["idle"]["rows"]] == [1, 3]


def _check_targets_listed(results: dict) -> None:
    ran = {name for name, scenario in results["scenarios"].items() if "skipped" not in scenario}
    assert {t["scenario"] for t in results["targets"]} == ran


def test_a_quick_run_measures_every_scenario(results: dict) -> None:
    """One run of the quick bench (it takes seconds), every part of its report checked."""
    _check_every_scenario_ran(results, SINGLE_NODE)
    _check_broadcast_numbers(results)
    _check_node_relay(results)
    _check_private_numbers(results)
    _check_handshake_numbers(results)
    _check_capacity_numbers(results)
    _check_file_numbers(results)
    _check_storage_numbers(results)
    _check_targets_listed(results)


def test_a_quick_run_measures_several_nodes(tmp_path: Path, key_pair: tuple[Path, Path]) -> None:
    """Scenario 7 quick: workers, cross-node latency, idle memory on one node and three."""
    results = quick_run(tmp_path, key_pair[0], CLUSTER)
    _check_every_scenario_ran(results, CLUSTER)
    _check_cluster_numbers(results)
    _check_targets_listed(results)
