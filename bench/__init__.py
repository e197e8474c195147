"""Benchmark suite: ``python -m bench [--quick]`` (see BENCHMARKS.md)."""
