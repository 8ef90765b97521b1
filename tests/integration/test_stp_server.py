"""Self-trade prevention on a real ``exchange-server run`` process.

Why: the default must be the original's behaviour end to end (a user's bid meets their own ask:
a deal, fees as usual, the order history shows both), and a log written under one
``self_trade_prevention`` config must rebuild the same state when the server restarts (after a
crash, so the log is replayed) under another.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from tests.support.server import SHARED, ServerProcess

FEES = ("0.002", "0.001")


def write_config(path: Path, mode: str | None) -> Path:
    data = json.loads((SHARED / "golden" / "matchengine.json").read_text())
    if mode is not None:
        data["self_trade_prevention"] = mode
    path.write_text(json.dumps(data))
    return path


def state(server: ServerProcess) -> dict[str, Any]:
    """What a restart must give back, read through the public methods."""
    return {
        "balances": [server.call("balance.query", user) for user in (1, 2)],
        "pending": [server.call("order.pending", user, "BTCBCH", 0, 100) for user in (1, 2)],
        "book": [server.call("order.book", "BTCBCH", side, 0, 100) for side in (1, 2)],
    }


def wait_for(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_default_a_users_bid_meets_their_own_ask(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", config=write_config(tmp_path / "me.json", None))
    server.start()
    try:
        server.call("balance.update", 1, "BTC", "deposit", 1, "10", {})
        server.call("balance.update", 1, "BCH", "deposit", 2, "1000", {})
        ask = server.call("order.put_limit", 1, "BTCBCH", 1, "1", "100", *FEES, "mm")
        bid = server.call("order.put_limit", 1, "BTCBCH", 2, "1", "100", *FEES, "mm")
        assert "stp_cancelled" not in bid and "option" not in bid
        assert (D(bid["deal_stock"]), D(bid["deal_money"]), D(bid["left"])) == (1, 100, 0)
        assert D(bid["deal_fee"]) == D("0.002")  # taker fee in BTC
        # ask: 100 BCH in, 0.1 maker fee; bid: 100 BCH out, 1 BTC in, 0.002 taker fee
        assert server.call("balance.query", 1)["BTC"] == {"available": "9.998", "freeze": "0"}
        assert server.call("balance.query", 1)["BCH"] == {"available": "999.9", "freeze": "0"}
        assert server.call("order.pending", 1, "BTCBCH", 0, 10)["total"] == 0
        finished = wait_for(lambda: [r["id"] for r in server.call(
            "order.finished", 1, "BTCBCH", 0, 0, 0, 10)["records"]])
        assert sorted(finished) == sorted([ask["id"], bid["id"]])
    finally:
        server.stop()


def test_log_replays_the_same_after_the_config_changed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, config=write_config(tmp_path / "taker.json", "cancel_taker"))
    server.start()
    try:
        server.call("balance.update", 1, "BTC", "deposit", 1, "10", {})
        server.call("balance.update", 1, "BCH", "deposit", 2, "1000", {})
        server.call("balance.update", 2, "BTC", "deposit", 3, "10", {})
        server.call("order.put_limit", 1, "BTCBCH", 1, "1", "100", *FEES, "mm")
        server.call("order.put_limit", 2, "BTCBCH", 1, "1", "100", *FEES, "mm")
        taker = server.call("order.put_limit", 1, "BTCBCH", 2, "2", "100", *FEES, "mm")
        assert taker["stp_cancelled"] is True and D(taker["deal_stock"]) == 0
        # not pending, but in the history although nothing was dealt
        assert wait_for(lambda: [r["id"] for r in server.call(
            "order.finished", 1, "BTCBCH", 0, 0, 0, 10)["records"]]) == [taker["id"]]
        server.call("order.put_limit", 1, "BTCBCH", 2, "0.5", "100", *FEES, "mm", None, None)
        before = state(server)
    finally:
        server.kill()  # no slice at exit: the restart replays the log
    # under "none" these orders would have traded with user 1's own ask
    server = ServerProcess(data, config=write_config(tmp_path / "none.json", "none"))
    server.start()
    try:
        assert state(server) == before
        # new orders follow the new config
        bid = server.call("order.put_limit", 1, "BTCBCH", 2, "0.5", "100", *FEES, "mm")
        assert D(bid["deal_stock"]) == D("0.5") and "stp_cancelled" not in bid
    finally:
        server.stop()
