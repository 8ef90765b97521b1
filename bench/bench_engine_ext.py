"""(a') Engine core with the CoinEx fork's extensions: the mixed limit-order stream of
``bench_engine`` where 20% of the orders carry options or are stop orders.

Run: ``.venv/bin/python -m bench.bench_engine_ext [N]`` (default 200,000 orders).  Of every 100
orders: 5 immediate-or-cancel, 4 fill-or-kill, 4 post-only, 2 with self-trade prevention
"cancel maker", 5 stop-limit orders (sell stops below the price, buy stops above, so the
stream's swings fire them); the other 80 are the plain stream's orders.  The plain stream runs
in the same process, alternating with the extended one (best of ``--rounds``, CPU time, so
other processes on the machine disturb the comparison less); the figure to watch is the ratio
(target: the extended stream within 15% of the plain one).
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from typing import Any

from bench.common import bench_config, mixed_orders, report, rss_mb
from exchange_server.common import gctune
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import (
    OPTION_FOK,
    OPTION_IOC,
    OPTION_MAKER_ONLY,
    STOP_EVENT_ACTIVE,
    STP_CANCEL_MAKER,
    Deal,
    StopChanged,
)
from exchange_server.matchengine.methods import MatchEngineMethods, present

USERS = 1000


def ext_orders(n: int, seed: int = 1) -> list[tuple[str, list[Any]]]:
    """The plain stream with 20% of the orders turned into option orders or stops."""
    rng = random.Random(seed + 1)
    out: list[tuple[str, list[Any]]] = []
    for params in mixed_orders(n, USERS, seed):
        r = rng.randrange(100)
        if r < 80:
            out.append(("order.put_limit", params))
            continue
        user, market, side, amount, price, taker_fee, maker_fee, source = params
        if r < 95:
            option = (OPTION_IOC if r < 85 else OPTION_FOK if r < 89 else
                      OPTION_MAKER_ONLY if r < 93 else STP_CANCEL_MAKER)
            out.append(("order.put_limit", [*params, None, None, option, "c"]))
        else:
            # sell stops below 100, buy stops above: the +-2 swings of the stream fire them
            offset = rng.randint(5, 20) / 10
            stop = f"{100 - offset if side == 1 else 100 + offset:.1f}"
            out.append(("order.put_stop_limit", [user, market, side, amount, stop, price,
                                                 taker_fee, maker_fee, source, None, None]))
    return out


def new_engine() -> tuple[Engine, MatchEngineMethods]:
    engine = Engine.from_config(bench_config())
    methods = MatchEngineMethods(engine)
    for u in range(1, USERS + 2):
        methods.balance_update(0.0, [u, "BTC", "deposit", u, "1000000", {}])
        methods.balance_update(0.0, [u, "BCH", "deposit", u, "100000000", {}])
    # a first deal (stops need a last price), between users outside the stream
    methods.order_put_limit(0.0, [USERS + 1, "BTCBCH", 1, "0.01", "100", "0", "0", "b"])
    methods.order_put_limit(0.0, [USERS, "BTCBCH", 2, "0.01", "100", "0", "0", "b"])
    engine.take_events()
    return engine, methods


def run(stream: list[tuple[str, list[Any]]]) -> dict[str, float]:
    engine, methods = new_engine()
    writes = {name: w.run for name, w in methods.writes.items()}
    take = engine.take_events
    trades = fired = errors = 0
    gc.collect()
    clock = time.process_time
    now = 1_800_000_000.0
    start = clock()
    for method, params in stream:
        try:
            present(writes[method](now, params))
        except RpcError:
            errors += 1
        for e in take():
            t = type(e)
            if t is Deal:
                trades += 1
            elif t is StopChanged and e.event == STOP_EVENT_ACTIVE:
                fired += 1
    elapsed = clock() - start
    return {"elapsed": elapsed, "trades": trades, "fired": fired, "errors": errors,
            "open": sum(len(m.orders) for m in engine.markets.values()),
            "stops": sum(len(m.stops) for m in engine.markets.values())}


def main(n: int = 200_000, rounds: int = 3) -> dict[str, float]:
    gctune.tune()
    plain_stream = [("order.put_limit", p) for p in mixed_orders(n, USERS)]
    ext_stream = ext_orders(n)
    plain: dict[str, float] = {}
    ext: dict[str, float] = {}
    for _ in range(rounds):
        p = run(plain_stream)
        if not plain or p["elapsed"] < plain["elapsed"]:
            plain = p
        e = run(ext_stream)
        if not ext or e["elapsed"] < ext["elapsed"]:
            ext = e
    kinds = {"IOC": 0, "FOK": 0, "post-only": 0, "STP cancel maker": 0, "stop-limit": 0}
    for method, params in ext_stream:
        if method == "order.put_stop_limit":
            kinds["stop-limit"] += 1
        elif len(params) > 8:
            option = params[10]
            kinds["IOC" if option == OPTION_IOC else "FOK" if option == OPTION_FOK else
                  "post-only" if option == OPTION_MAKER_ONLY else "STP cancel maker"] += 1
    figures: dict[str, Any] = {
        "orders": n,
        "plain orders/s (CPU)": n / plain["elapsed"],
        "extended orders/s (CPU)": n / ext["elapsed"],
        "extended / plain": ext["elapsed"] and plain["elapsed"] / ext["elapsed"],
        "plain trades": int(plain["trades"]),
        "extended trades": int(ext["trades"]),
        "extended refused orders": int(ext["errors"]),
        "stops fired": int(ext["fired"]),
        "stops pending at end": int(ext["stops"]),
        "open orders at end (plain / ext)": f"{int(plain['open'])} / {int(ext['open'])}",
        "RSS (MiB)": rss_mb(),
    }
    for kind, count in kinds.items():
        figures[f"  {kind} orders"] = count
    report("engine core, 20% of orders with options or stops (best of "
           f"{rounds}, plain stream alongside)", figures)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    main(args.n, args.rounds)
