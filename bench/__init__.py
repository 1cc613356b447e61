"""Benchmarks, each a runnable module: ``python -m bench`` (engine bench) and ``python -m bench.bench_<name>``."""
