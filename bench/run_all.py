"""Run every benchmark in turn and print their figures (``make bench``)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys

BENCHMARKS = [
    ("bench.bench_engine", "main"),
    ("bench.bench_engine_ext", "main"),
    ("bench.bench_http", "run"),
    ("bench.bench_batch", "main"),
    ("bench.bench_e2e", "main"),
    ("bench.bench_paced", "main"),
    ("bench.bench_stall", "main"),
    ("bench.bench_restart", "main"),
    ("bench.bench_kill_restart", "main"),
    ("bench.bench_memory", "main"),
    ("bench.bench_history", "main"),
    ("bench.bench_bus", "main"),
    ("bench.bench_rpc", "main"),
    ("bench.bench_ws", "main"),
    ("bench.bench_topology", "run"),
]


def main() -> int:
    for module_name, func in BENCHMARKS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            print(f"== {module_name}: not available ({e})")
            continue
        result = getattr(module, func)()
        if inspect.iscoroutine(result):
            asyncio.run(result)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
