"""Server wrapper for benchmarks: ``python -m bench.serve [options] {chat,baseline} ARGS...``.

It raises the open-file limit (10,000 connections need more than the usual 1,024
descriptors), optionally installs uvloop, optionally runs the server under cProfile or
pyinstrument, and then runs ``chat.server.__main__.main`` (or the baseline relay) with
the remaining arguments. SIGTERM stops the server cleanly, so profiles are written.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1 << 20:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def _entry(kind: str) -> Callable[[list[str]], int]:
    if kind == "chat":
        from chat.server.__main__ import main as chat_main

        return chat_main
    from bench.baseline import main as baseline_main

    return baseline_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.serve", description=__doc__)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    parser.add_argument("--cprofile", metavar="PATH", help="write a cProfile dump (pstats) to PATH")
    parser.add_argument("--pyinstrument", metavar="PATH", help="write a pyinstrument text report to PATH")
    parser.add_argument("kind", choices=["chat", "baseline"])
    args, rest = parser.parse_known_args(argv)
    raise_nofile_limit()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    entry = _entry(args.kind)
    if args.kind == "chat":
        # The server picks uvloop by itself when installed; the benchmark decides instead.
        rest = ["--event-loop", "uvloop" if args.uvloop else "asyncio", *rest]
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile()
        try:
            return profiler.runcall(entry, rest)
        finally:
            profiler.dump_stats(args.cprofile)
    if args.pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
        profiler.start()
        try:
            return entry(rest)
        finally:
            profiler.stop()
            with open(args.pyinstrument, "w") as out:
                out.write(profiler.output_text(unicode=False, color=False, show_all=False))
    return entry(rest)


if __name__ == "__main__":
    sys.exit(main())
