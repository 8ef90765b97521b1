"""bench_kill_restart's pure helpers: the orders it puts never cross where they must not, the
slice child is told from the follower, the restore line, balance sums and the figures.

Why: the benchmark and tests/system/test_kill_restart.py judge "nothing lost, money conserved"
and "killed during a slice write" with these; a wrong helper would pass a broken restart.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

from bench.bench_kill_restart import (
    DEPOSITS,
    PROBE,
    Kill,
    balance_sums,
    conservation_errors,
    fill_orders,
    is_slice_child,
    kind_figures,
    listen_inodes,
    load_order,
    logged_since,
    order_matches,
    plan,
    restored_line,
    started_line,
    write_config,
)

ENGINE = b"/venv/bin/python\0-m\0exchange_server\0run\0--data-dir\0/tmp/x/data\0"


def test_fill_rests_apart_from_the_load_and_the_probe() -> None:
    orders = fill_orders(2_000, users=50)
    asks = [Decimal(o[4]) for o in orders if o[2] == 1]
    bids = [Decimal(o[4]) for o in orders if o[2] == 2]
    assert len(asks) == len(bids) == 1_000
    assert min(asks) >= 110 and max(bids) <= 90  # the book never crosses itself
    rng = random.Random(1)
    load = [Decimal(load_order(rng, 50)[4]) for _ in range(1_000)]
    assert min(load) > 90 and max(load) < 110  # the load trades among its own orders only
    assert max(bids) < Decimal(PROBE[4]) < min(load)  # the probe bid never trades
    assert all(o[5] == o[6] == "0" for o in orders)  # fees 0: balances sum to the deposits
    assert {o[0] for o in orders} <= set(range(1, 51))


def test_the_slice_child_is_a_fork_of_the_engine() -> None:
    follower = b"/venv/bin/python\0-c\0from multiprocessing.spawn import spawn_main\0"
    assert is_slice_child(ENGINE, ENGINE)
    assert not is_slice_child(follower, ENGINE)
    assert not is_slice_child(b"", ENGINE)  # a zombie has no command line
    assert not is_slice_child(None, ENGINE)  # gone


def test_restore_line() -> None:
    log = ("... INFO exchange_server.matchengine: restored: slice 1796167554, 2461 operations "
           "replayed, last operation id 12345\n")
    assert restored_line(log) == ("1796167554", 2461)
    assert restored_line("restored: slice none, 0 operations replayed") == ("none", 0)
    assert restored_line("nothing") is None


def test_listen_inodes_reads_the_listening_sockets_only() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0"
        "        0 4242 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0"
        "        0 4343 1 0000000000000000 20 4 30 10 -1\n")
    assert listen_inodes(table) == {4242}


def test_balances_sum_to_the_deposits() -> None:
    users = 2
    results = [
        {"BTC": {"available": "999999.5", "freeze": "0.5"},
         "BCH": {"available": "100000000", "freeze": "0"}},
        {"BTC": {"available": "1000000", "freeze": "0"},
         "BCH": {"available": "99999950.25", "freeze": "49.75"}},
    ]
    sums = balance_sums(results)
    assert sums == {"BTC": DEPOSITS["BTC"] * 2, "BCH": DEPOSITS["BCH"] * 2}
    assert conservation_errors(sums, users) == []
    sums["BCH"] -= Decimal("0.00000001")
    assert len(conservation_errors(sums, users)) == 1


def test_order_matches_by_value() -> None:
    order = {"id": 7, "side": 1, "amount": "1.500", "price": "110.10"}
    assert order_matches(order, (1, "1.5", "110.1"))
    assert not order_matches(order, (2, "1.5", "110.1"))
    assert not order_matches(order, (1, "1.4", "110.1"))
    assert not order_matches(None, (1, "1.5", "110.1"))


def test_plan_alternates_and_figures() -> None:
    kills: list[Kill] = []
    assert plan(kills, 2, True) == "between"
    kills.append(Kill("between", 2.0, 100, 100_000, "1", 10))
    assert plan(kills, 2, True) == "during"
    assert plan(kills, 2, False) == "between"  # no slices by count: between only
    kills.append(Kill("during", 1.0, 50, 50_000, "1", 20, True))
    kills.append(Kill("between", 1.0, 300, 100_000, "2", 30))
    assert plan(kills, 2, True) == "during"
    kills.append(Kill("during", 3.0, 10, 100_000, "2", 40, False, cpu_seconds=1.0))
    assert plan(kills, 2, True) is None
    figures = kind_figures("between", kills)
    assert figures["between: kills"] == 2
    assert figures["between: restart seconds, worst"] == 2.0
    assert figures["between: restart seconds, mean"] == 1.5
    assert figures["between: restart us per open order"] == 20.0
    assert figures["between: operations replayed, max"] == 300
    during = kind_figures("during", kills)
    assert during["during: restart us per open order"] == 30.0
    assert during["during: child outlived the restart"] == 1
    assert during["during: restart CPU seconds, mean"] == 0.5
    assert all(len(label) <= 34 for label in [*figures, *during])


def test_the_start_up_line_is_found_whole() -> None:
    log = ("... restored: slice 17, 5 operations replayed, last operation id 9\n"
           "2026-12-02 INFO started in 1.728 s (2.52 s after exec): restore 1.613 s, "
           "history follower 0.050 s\nnext line\n")
    assert started_line(log) == ("started in 1.728 s (2.52 s after exec): restore 1.613 s, "
                                 "history follower 0.050 s")
    assert started_line("an older checkout logs no such line\n") == ""


def test_the_config_leaves_the_interval_to_the_checkout_unless_given(tmp_path: Path) -> None:
    """The restart goal is about the default ``slice_oper_interval``: each checkout's own."""
    default = json.loads(write_config(tmp_path).read_text())
    assert "slice_oper_interval" not in default and default["slice_interval"] == 86400
    assert json.loads(write_config(tmp_path, 300).read_text())["slice_oper_interval"] == 300


def test_logged_since_reads_from_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_bytes(b"before\nstarted in 1.0 s\n")
    assert logged_since(log, 7) == "started in 1.0 s\n"
