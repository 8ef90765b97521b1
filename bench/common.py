"""Helpers shared by the benchmarks: figures printed in one format, RSS, order streams."""

from __future__ import annotations

import os
import platform
import random
import time
from typing import Any

from exchange_server.common.config import MatchEngineConfig, default_matchengine_data, load_matchengine


def rss_mb() -> float:
    """Resident set size of this process in MiB (from /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def machine() -> str:
    return f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"


def report(title: str, figures: dict[str, Any]) -> None:
    print(f"== {title}  ({time.strftime('%Y-%m-%d')}, {machine()})")
    for key, value in figures.items():
        if isinstance(value, float):
            value = f"{value:,.2f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        print(f"   {key:<34} {value}")


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def bench_config() -> MatchEngineConfig:
    return load_matchengine(default_matchengine_data(), embedded=True)


def mixed_orders(n: int, users: int, seed: int = 1) -> list[list[Any]]:
    """put_limit params around price 100: alternating sides with a spread such that about
    half of the orders cross the book."""
    rng = random.Random(seed)
    orders = []
    for i in range(n):
        side = 1 + (i & 1)
        offset = rng.randint(-20, 20) / 10  # +-2.0 around 100
        price = 100 + offset if side == 2 else 100 - offset
        amount = rng.randint(1, 100) / 100
        orders.append([rng.randint(1, users), "BTCBCH", side, f"{amount:.2f}", f"{price:.1f}",
                       "0.002", "0.001", "bench"])
    return orders
