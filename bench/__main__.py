"""``python -m bench [--quick]``: run the benchmark suite, print a table, write JSON.

See BENCHMARKS.md for what each scenario measures and the latest results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report
from bench.common import REPO, machine_info, snapshot
from bench.scenarios import SCENARIOS, Settings, dump


def ensure_key(directory: Path, bits: int) -> tuple[Path, Path]:
    """The benchmark's own server key pair (made once, kept in the results directory)."""
    from chat.keys import generate_private_key, write_key_pair

    directory = directory / f"keys-{bits}"
    private, public = directory / "private.pem", directory / "public.pem"
    if not (private.exists() and public.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        write_key_pair(directory, generate_private_key(bits), overwrite=True)
    return private, public


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run with tiny sizes")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument("--no-uvloop", action="store_true", help="skip the chat-server-on-uvloop variant")
    parser.add_argument("--uvloop", action="store_true",
                        help="include the uvloop variant in --quick runs too")
    parser.add_argument("--profile", action="store_true",
                        help="sample the chat server with py-spy (into RESULTS_DIR/profiles/)")
    parser.add_argument("--server-rev", metavar="REV",
                        help="measure chat/ as of this git revision (a snapshot), not the working tree")
    parser.add_argument("--key-bits", type=int, default=3072,
                        help="RSA size of the key made for the benchmark (default: 3072, as chat-keygen)")
    parser.add_argument("--private-key", type=Path, metavar="PEM",
                        help="use this server key (public.pem beside it) instead of making one")
    parser.add_argument("--capacity-clients", type=int, help="idle clients in scenario 4 (default 10000)")
    parser.add_argument("--file-mib", type=int, help="file size in MiB in scenario 5 (default 256)")
    parser.add_argument("--fanouts", metavar="N,N", help="client counts in scenario 1 (default 10,100,1000)")
    parser.add_argument("--handshake-concurrency", type=int, metavar="N",
                        help="handshake loops per generator process in scenario 3 (default 16)")
    parser.add_argument("--results-dir", type=Path, default=REPO / "bench-results",
                        help="where JSON, logs and profiles go (default: bench-results/)")
    parser.add_argument("--output", type=Path,
                        help="JSON file to write (default: a dated file in --results-dir)")
    parser.add_argument("--node-relay-dir", type=Path, metavar="DIR",
                        help="where npm installs ws 8 for the Node relay (default: RESULTS_DIR/node-relay)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = list(SCENARIOS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.private_key:
        private, public = args.private_key, args.private_key.parent / "public.pem"
    else:
        private, public = ensure_key(results_dir, args.key_bits)
    overrides: dict[str, Any] = {}
    if args.capacity_clients:
        overrides["capacity_clients"] = args.capacity_clients
    if args.file_mib:
        overrides["file_size"] = args.file_mib * 2**20
    if args.fanouts:
        overrides["fanouts"] = [int(n) for n in args.fanouts.split(",")]
    if args.handshake_concurrency:
        overrides["handshake_concurrency"] = args.handshake_concurrency
    settings = Settings.make(results_dir, private, public, quick=args.quick,
                             log_path=results_dir / f"servers-{stamp}.log", profile=args.profile)
    settings.node_dir = args.node_relay_dir
    settings.uvloop = not args.no_uvloop and (args.uvloop or not args.quick) and _has_uvloop()
    for key, value in overrides.items():
        setattr(settings, key, value)
    code = machine_info()["code"]
    if args.server_rev:
        settings.server_tree, commit = snapshot(args.server_rev, results_dir / "trees")
        code = f"{commit} (snapshot of chat/ at {args.server_rev})"
    results: dict[str, Any] = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {**machine_info(), "code": code},
        "config": {"quick": args.quick, "key_bits": _key_bits(private), "uvloop_variant": settings.uvloop,
                   "scenarios": names, "settings": {k: v for k, v in vars(settings).items()
                                                    if isinstance(v, int | float | bool | list)}},
        "scenarios": {},
        "errors": {},
    }
    output = args.output or results_dir / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            results["scenarios"][name] = SCENARIOS[name](settings)
        except Exception:
            results["errors"][name] = traceback.format_exc()
            print(f"[bench] {name} FAILED:\n{results['errors'][name]}", file=sys.stderr, flush=True)
        results.setdefault("durations_s", {})[name] = round(time.perf_counter() - start, 1)
        print(f"[bench] {name} took {results['durations_s'][name]} s", file=sys.stderr, flush=True)
        dump(output, results)
    results["targets"] = report.targets(results)
    dump(output, results)
    dump(results_dir / "latest.json", results)
    print(report.render(results))
    if args.profile:
        print(report.profiles(results))
    print(f"\nJSON: {output}")
    return 1 if results["errors"] else 0


def _key_bits(private: Path) -> int:
    from chat.keys import load_private_key

    return load_private_key(private).key_size


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
