"""Run every benchmark in turn and print their figures (``make bench``)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = [
    ("bench.bench_engine", "main"),
    ("bench.bench_http", "run"),
    ("bench.bench_restart", "main"),
    ("bench.bench_memory", "main"),
]


def main() -> int:
    for module_name, func in BENCHMARKS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            print(f"== {module_name}: not available ({e})")
            continue
        getattr(module, func)()
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
