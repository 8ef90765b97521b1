"""Every matchengine method's success and error paths, through the service, on both stores.

The service is the real one (engine + operation log + group commit); only the HTTP layer is
left out here (it is covered by test_http and test_golden).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from exchange_server.common.config import MatchEngineConfig, default_matchengine_data, load_matchengine
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import EngineStore

FEES = ("0.002", "0.001")


class Client:
    def __init__(self, service: MatchEngineService) -> None:
        self.service = service
        self.next_id = 0

    async def raw(self, method: str, *params: Any) -> dict[str, Any]:
        self.next_id += 1
        body = await self.service.call(method, list(params), self.next_id)
        reply: dict[str, Any] = json.loads(body)
        assert reply["id"] == self.next_id
        return reply

    async def ok(self, method: str, *params: Any) -> Any:
        reply = await self.raw(method, *params)
        assert reply["error"] is None, reply
        return reply["result"]

    async def err(self, method: str, *params: Any) -> int:
        reply = await self.raw(method, *params)
        assert reply["result"] is None
        assert reply["error"] is not None, reply
        code: int = reply["error"]["code"]
        return code

    async def deposit(self, user: int, asset: str, amount: str, bid: int) -> None:
        await self.ok("balance.update", user, asset, "deposit", bid, amount, {})


#: These services answer in process, behind no gateway's 1 s request timeout, so a slow commit
#: needs no refusal: a loaded CI run (other jobs' I/O beside it) saw a first commit take over the
#: default 0.7 s and the test's writes refused with code 3.  The timeout's own tests set theirs.
IN_PROCESS_COMMIT_TIMEOUT = 30.0


def config() -> MatchEngineConfig:
    data = default_matchengine_data()
    data["assets"].append({"name": "USDT", "prec_save": 12, "prec_show": 6})
    data["markets"].append({"name": "BTCUSDT", "stock": {"name": "BTC", "prec": 8},
                            "money": {"name": "USDT", "prec": 2}, "min_amount": "0.001"})
    data["commit_timeout"] = IN_PROCESS_COMMIT_TIMEOUT
    return load_matchengine(data, embedded=True)


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def engine_store(request: pytest.FixtureRequest, tmp_path: Any) -> Callable[[], EngineStore]:
    """Factory of stores of one backend, all on the same data (so a reopen sees it)."""
    if request.param == "sqlite":
        from exchange_server.matchengine.store_sqlite import SqliteEngineStore

        return lambda: SqliteEngineStore(tmp_path / "data")
    from exchange_server.matchengine.store_mysql import MysqlEngineStore

    cfg = request.getfixturevalue("mysql_config")("test_trade_log")
    return lambda: MysqlEngineStore(cfg)


@pytest.fixture
async def client(engine_store: Callable[[], EngineStore]) -> AsyncIterator[Client]:
    store = engine_store()
    store.open()
    service = MatchEngineService(config(), store)
    service.restore()
    await service.start()
    try:
        yield Client(service)
    finally:
        await service.stop(final_slice=False)
        store.close()


# -- balances ----------------------------------------------------------------------------------


async def test_balance_query_and_update(client: Client) -> None:
    result = await client.ok("balance.query", 7)
    assert list(result) == ["BCH", "BTC", "LTC", "ETH", "ETC", "ZEC", "XMR", "DSH", "USDT"]
    assert all(v == {"available": "0", "freeze": "0"} for v in result.values())
    assert await client.ok("balance.update", 7, "BTC", "deposit", 1, "1.5", {"tx": "a"}) == {
        "status": "success"}
    assert await client.ok("balance.query", 7, "BTC") == {"BTC": {"available": "1.5", "freeze": "0"}}
    # more decimals than prec_show are truncated, never rounded
    await client.ok("balance.update", 7, "USDT", "deposit", 2, "1.23456789", {})
    assert (await client.ok("balance.query", 7, "USDT"))["USDT"]["available"] == "1.234567"
    # listed assets come back in the listed order
    assert list(await client.ok("balance.query", 7, "USDT", "BTC")) == ["USDT", "BTC"]


async def test_balance_update_dedup_and_debit(client: Client) -> None:
    await client.ok("balance.update", 7, "BTC", "deposit", 1, "2", {})
    assert await client.err("balance.update", 7, "BTC", "deposit", 1, "2", {}) == 10
    # the key is (user, asset, business, id): another business or asset is a new update
    await client.ok("balance.update", 7, "BTC", "bonus", 1, "1", {})
    await client.ok("balance.update", 7, "LTC", "deposit", 1, "1", {})
    assert await client.err("balance.update", 7, "BTC", "withdraw", 2, "-3.00000001", {}) == 11
    assert await client.err("balance.update", 7, "ETH", "withdraw", 3, "-1", {}) == 11
    await client.ok("balance.update", 7, "BTC", "withdraw", 4, "-3", {})
    assert (await client.ok("balance.query", 7, "BTC"))["BTC"]["available"] == "0"
    # a failed update does not consume its business id
    await client.ok("balance.update", 7, "ETH", "withdraw", 3, "0", {})


@pytest.mark.parametrize("params", [
    [],
    [7, "BTC", "deposit", 1, "1"],                       # 5 params
    [7, "BTC", "deposit", 1, "1", {}, 1],                # 7 params
    ["7", "BTC", "deposit", 1, "1", {}],                 # user id as string
    [0, "BTC", "deposit", 1, "1", {}],                   # user 0
    [-1, "BTC", "deposit", 1, "1", {}],
    [2**32, "BTC", "deposit", 1, "1", {}],
    [7, "NOPE", "deposit", 1, "1", {}],
    [7, 5, "deposit", 1, "1", {}],
    [7, "BTC", 5, 1, "1", {}],
    [7, "BTC", "x" * 31, 1, "1", {}],                    # business too long to store
    [7, "BTC", "deposit", "1", "1", {}],
    [7, "BTC", "deposit", -1, "1", {}],
    [7, "BTC", "deposit", 1.5, "1", {}],
    [7, "BTC", "deposit", 1, 1, {}],                     # change as number
    [7, "BTC", "deposit", 1, "abc", {}],
    [7, "BTC", "deposit", 1, "NaN", {}],
    [7, "BTC", "deposit", 1, "Infinity", {}],
    [7, "BTC", "deposit", 1, "1e30", {}],                # too large to store
    [7, "BTC", "deposit", 1, "1_000", {}],
    [7, "BTC", "deposit", 1, " 1", {}],
    [7, "BTC", "deposit", 1, "", {}],
    [7, "BTC", "deposit", 1, "1", "notobject"],
    [7, "BTC", "deposit", 1, "1", []],
    [True, "BTC", "deposit", 1, "1", {}],
])
async def test_balance_update_invalid(client: Client, params: list[Any]) -> None:
    assert await client.err("balance.update", *params) == 1
    assert (await client.ok("balance.query", 7, "BTC"))["BTC"] == {"available": "0", "freeze": "0"}


@pytest.mark.parametrize("params", [[], ["1"], [0], [7, "NOPE"], [7, 1], [1.0]])
async def test_balance_query_invalid(client: Client, params: list[Any]) -> None:
    assert await client.err("balance.query", *params) == 1


async def test_asset_list_and_summary(client: Client) -> None:
    assets = await client.ok("asset.list")
    assert assets[0] == {"name": "BCH", "prec": 8} and assets[-1] == {"name": "USDT", "prec": 6}
    await client.deposit(1, "BCH", "10", 1)
    await client.deposit(2, "BCH", "5.5", 2)
    await client.deposit(1, "BTC", "1", 3)
    await client.ok("order.put_limit", 1, "BTCBCH", 2, "1", "2", *FEES, "t")   # freezes 2 BCH
    summary = await client.ok("asset.summary", "BCH")
    assert summary == [{"name": "BCH", "total_balance": "15.5", "available_count": 2,
                        "available_balance": "13.5", "freeze_count": 1, "freeze_balance": "2"}]
    assert [s["name"] for s in await client.ok("asset.summary")][:2] == ["BCH", "BTC"]
    assert await client.err("asset.summary", "NOPE") == 1
    assert await client.err("asset.summary", 5) == 1


# -- orders ------------------------------------------------------------------------------------


async def test_limit_orders_trade(client: Client) -> None:
    await client.deposit(1, "BTC", "10", 1)
    await client.deposit(2, "BCH", "1000", 2)
    ask = await client.ok("order.put_limit", 1, "BTCBCH", 1, "2", "100", *FEES, "api")
    assert (ask["id"], ask["left"], ask["deal_stock"]) == (1, "2", "0")
    bid = await client.ok("order.put_limit", 2, "BTCBCH", 2, "0.5", "101", *FEES, "web")
    assert (bid["left"], bid["deal_stock"], bid["deal_money"], bid["deal_fee"]) == (
        "0e-8", "0.5", "50", "0.001")
    assert await client.ok("order.pending_detail", "BTCBCH", 2) is None
    maker = await client.ok("order.pending_detail", "BTCBCH", 1)
    assert (maker["left"], maker["deal_money"], maker["deal_fee"]) == ("1.5", "50", "0.05")
    b1 = await client.ok("balance.query", 1, "BTC", "BCH")
    assert b1 == {"BTC": {"available": "8", "freeze": "1.5"},
                  "BCH": {"available": "49.95", "freeze": "0"}}
    b2 = await client.ok("balance.query", 2, "BTC", "BCH")
    assert b2 == {"BTC": {"available": "0.499", "freeze": "0"},
                  "BCH": {"available": "950", "freeze": "0"}}


async def test_price_time_priority_and_book(client: Client) -> None:
    await client.deposit(1, "BTC", "10", 1)
    await client.deposit(2, "BCH", "1000", 2)
    for price in ("101", "100", "100", "102"):
        await client.ok("order.put_limit", 1, "BTCBCH", 1, "1", price, *FEES, "a")
    book = await client.ok("order.book", "BTCBCH", 1, 0, 10)
    assert [(o["id"], o["price"]) for o in book["orders"]] == [(2, "100"), (3, "100"), (1, "101"),
                                                            (4, "102")]
    assert (book["offset"], book["limit"], book["total"]) == (0, 10, 4)
    page = await client.ok("order.book", "BTCBCH", 1, 1, 2)
    assert [o["id"] for o in page["orders"]] == [3, 1]
    assert (await client.ok("order.book", "BTCBCH", 1, 0, 0))["orders"] == []
    # a bid for 1.5 @ 100 takes order 2 whole, then half of order 3 (older first)
    await client.ok("order.put_limit", 2, "BTCBCH", 2, "1.5", "100", *FEES, "b")
    book = await client.ok("order.book", "BTCBCH", 1, 0, 10)
    assert [(o["id"], o["left"]) for o in book["orders"]] == [(3, "0.5"), (1, "1"), (4, "1")]
    pending = await client.ok("order.pending", 1, "BTCBCH", 0, 10)
    assert list(pending) == ["limit", "offset", "total", "records"]
    assert [o["id"] for o in pending["records"]] == [4, 3, 1]
    assert [o["id"] for o in (await client.ok("order.pending", 1, "BTCBCH", 1, 1))["records"]] == [3]
    assert (await client.ok("order.pending", 2, "BTCBCH", 0, 10))["total"] == 0


async def test_depth_merge(client: Client) -> None:
    await client.deposit(1, "BTC", "10", 1)
    await client.deposit(2, "BCH", "1000", 2)
    for price, amount in (("100.1", "1"), ("100.9", "2"), ("101", "0.5"), ("103.5", "1")):
        await client.ok("order.put_limit", 1, "BTCBCH", 1, amount, price, *FEES, "a")
    for price, amount in (("99.9", "1"), ("99.1", "1"), ("98", "3")):
        await client.ok("order.put_limit", 2, "BTCBCH", 2, amount, price, *FEES, "b")
    plain = await client.ok("order.depth", "BTCBCH", 10, "0")
    assert plain["asks"] == [["100.1", "1"], ["100.9", "2"], ["101", "0.5"], ["103.5", "1"]]
    assert plain["bids"] == [["99.9", "1"], ["99.1", "1"], ["98", "3"]]
    merged = await client.ok("order.depth", "BTCBCH", 10, "1")
    assert merged["asks"] == [["101", "3.5"], ["104", "1"]]
    assert merged["bids"] == [["99", "2"], ["98", "3"]]
    assert (await client.ok("order.depth", "BTCBCH", 1, "1"))["asks"] == [["101", "3.5"]]
    assert await client.ok("order.depth", "BTCBCH", 0, "0") == {"asks": [], "bids": []}


async def test_market_orders(client: Client) -> None:
    await client.deposit(1, "BTC", "10", 1)
    await client.deposit(2, "BCH", "1000", 2)
    assert await client.err("order.put_market", 2, "BTCBCH", 2, "10", "0.002", "m") == 12
    await client.ok("order.put_limit", 1, "BTCBCH", 1, "1", "100", *FEES, "a")
    await client.ok("order.put_limit", 1, "BTCBCH", 1, "1", "200", *FEES, "a")
    # below best_ask x min_amount (100 x 0.001)
    assert await client.err("order.put_market", 2, "BTCBCH", 2, "0.09", "0.002", "m") == 11
    assert await client.err("order.put_market", 2, "BTCBCH", 2, "1000.01", "0.002", "m") == 10
    order = await client.ok("order.put_market", 2, "BTCBCH", 2, "150", "0.002", "m")
    assert (order["type"], order["price"], order["maker_fee"]) == (2, "0", "0")
    assert (order["deal_stock"], order["deal_money"]) == ("1.25", "150")
    assert order["left"] in ("0", "0e-16")
    # market sell into an empty bid side
    assert await client.err("order.put_market", 1, "BTCBCH", 1, "1", "0.002", "m") == 12
    await client.ok("order.put_limit", 2, "BTCBCH", 2, "0.5", "90", *FEES, "b")
    assert await client.err("order.put_market", 1, "BTCBCH", 1, "0.0009", "0.002", "m") == 11
    assert await client.err("order.put_market", 3, "BTCBCH", 1, "1", "0.002", "m") == 10
    sell = await client.ok("order.put_market", 1, "BTCBCH", 1, "2", "0.002", "m")
    # the remainder of a market sell stays with the seller
    assert (sell["deal_stock"], sell["left"]) == ("0.5", "1.5")


async def test_cancel(client: Client) -> None:
    await client.deposit(1, "BCH", "100", 1)
    order = await client.ok("order.put_limit", 1, "BTCBCH", 2, "1", "50", *FEES, "a")
    assert (await client.ok("balance.query", 1, "BCH"))["BCH"] == {"available": "50", "freeze": "50"}
    assert await client.err("order.cancel", 2, "BTCBCH", order["id"]) == 11
    assert await client.err("order.cancel", 1, "LTCBCH", order["id"]) == 10
    cancelled = await client.ok("order.cancel", 1, "BTCBCH", order["id"])
    assert cancelled == order
    assert await client.err("order.cancel", 1, "BTCBCH", order["id"]) == 10
    assert (await client.ok("balance.query", 1, "BCH"))["BCH"] == {"available": "100", "freeze": "0"}


PUT_LIMIT_INVALID = [
    [1, "BTCBCH", 1, "1", "100", "0.002", "0.001"],
    [1, "BTCBCH", 1, "1", "100", "0.002", "0.001", "api", 1],
    [1, "NOPE", 1, "1", "100", "0.002", "0.001", "api"],
    [1, "BTCBCH", 0, "1", "100", "0.002", "0.001", "api"],
    [1, "BTCBCH", 3, "1", "100", "0.002", "0.001", "api"],
    [1, "BTCBCH", "1", "1", "100", "0.002", "0.001", "api"],
    [1, "BTCBCH", 1, "0", "100", "0.002", "0.001", "api"],
    [1, "BTCBCH", 1, "0.000000001", "100", "0.002", "0.001", "api"],   # truncates to 0
    [1, "BTCBCH", 1, "-1", "100", "0.002", "0.001", "api"],
    [1, "BTCBCH", 1, "1", "0", "0.002", "0.001", "api"],
    [1, "BTCBCH", 1, "1", "1e400", "0.002", "0.001", "api"],
    [1, "BTCBCH", 1, "1", "100", "1", "0.001", "api"],
    [1, "BTCBCH", 1, "1", "100", "-0.001", "0.001", "api"],
    [1, "BTCBCH", 1, "1", "100", "0.002", "2", "api"],
    [1, "BTCBCH", 1, "1", "100", "0.002", "0.001", 5],
    [1, "BTCBCH", 1, "1", "100", "0.002", "0.001", "s" * 31],
    [1, "BTCBCH", 1, "1", "100", "0.002", "0.001", None],
    # not the JSON types the readers take (accepted texts are looked up first: these must
    # still be refused, hashable or not)
    [True, "BTCBCH", 1, "1", "100", "0.002", "0.001", "api"],
    [1, ["BTCBCH"], 1, "1", "100", "0.002", "0.001", "api"],
    [1, "BTCBCH", True, "1", "100", "0.002", "0.001", "api"],
    [1, "BTCBCH", 1, 1, "100", "0.002", "0.001", "api"],
    [1, "BTCBCH", 1, ["1"], "100", "0.002", "0.001", "api"],
    [1, "BTCBCH", 1, "1", {"p": "100"}, "0.002", "0.001", "api"],
    [1, "BTCBCH", 1, "1", "100", ["0.002"], "0.001", "api"],
    [1, "BTCBCH", 1, "1", "100", "0.002", 0.001, "api"],
    [1, "BTCBCH", 1, "1", "100", "0.002", "0.001", "中" * 11],  # 33 bytes
]


@pytest.mark.parametrize("params", PUT_LIMIT_INVALID)
async def test_put_limit_invalid(client: Client, params: list[Any]) -> None:
    await client.deposit(1, "BTC", "10", 1)
    assert await client.err("order.put_limit", *params) == 1
    assert (await client.ok("order.book", "BTCBCH", 1, 0, 10))["total"] == 0


async def test_a_text_reads_at_each_markets_precision(client: Client) -> None:
    """The same texts are truncated to each market's own precisions (an accepted text is
    remembered per precision), and a text accepted as an amount is no fee."""
    await client.deposit(1, "BTC", "10", 1)
    params = ["0.123456789", "100.129", "0.002", "0.001", "a"]
    bch = await client.ok("order.put_limit", 1, "BTCBCH", 1, *params)
    usdt = await client.ok("order.put_limit", 1, "BTCUSDT", 1, *params)
    assert (bch["amount"], bch["price"]) == ("0.12345678", "100.129")
    assert (usdt["amount"], usdt["price"]) == ("0.12345678", "100.12")
    assert await client.err("order.put_limit", 1, "BTCBCH", 1, "0.1", "100", "0.1", "100.129",
                            "a") == 1


async def test_put_limit_business_errors(client: Client) -> None:
    # balance is checked before the minimum amount (the original's order)
    assert await client.err("order.put_limit", 1, "BTCBCH", 1, "0.0001", "100", *FEES, "a") == 10
    await client.deposit(1, "BTC", "1", 1)
    assert await client.err("order.put_limit", 1, "BTCBCH", 1, "0.0001", "100", *FEES, "a") == 11
    assert await client.err("order.put_limit", 1, "BTCBCH", 1, "1.1", "100", *FEES, "a") == 10
    assert await client.err("order.put_limit", 1, "BTCBCH", 2, "1", "100", *FEES, "a") == 10
    # source of 30 bytes is the longest accepted
    await client.ok("order.put_limit", 1, "BTCBCH", 1, "1", "100", *FEES, "s" * 30)


@pytest.mark.parametrize("method,params", [
    ("order.put_market", [1, "BTCBCH", 1, "1", "0.002"]),
    ("order.put_market", [1, "BTCBCH", 3, "1", "0.002", "m"]),
    ("order.put_market", [1, "BTCBCH", 1, "0", "0.002", "m"]),
    ("order.put_market", [1, "BTCBCH", 1, "1", "1", "m"]),
    ("order.cancel", [1, "BTCBCH"]),
    ("order.cancel", [1, "BTCBCH", "1"]),
    ("order.cancel", [1, "NOPE", 1]),
    ("order.book", ["BTCBCH", 3, 0, 10]),
    ("order.book", ["NOPE", 1, 0, 10]),
    ("order.book", ["BTCBCH", 1, 0, 102]),
    ("order.book", ["BTCBCH", 1, -1, 10]),
    ("order.depth", ["BTCBCH", 102, "0"]),
    ("order.depth", ["BTCBCH", 10, "-1"]),
    ("order.depth", ["BTCBCH", 10, 1]),
    ("order.pending", [1, "BTCBCH", 0, 102]),
    ("order.pending", [1, "NOPE", 0, 10]),
    ("order.pending", [0, "BTCBCH", 0, 10]),
    ("order.pending_detail", ["BTCBCH"]),
    ("order.pending_detail", ["BTCBCH", "1"]),
    ("market.summary", ["NOPE"]),
])
async def test_invalid_arguments(client: Client, method: str, params: list[Any]) -> None:
    assert await client.err(method, *params) == 1


async def test_market_list_and_summary(client: Client) -> None:
    markets = await client.ok("market.list")
    assert markets[0] == {"name": "BTCBCH", "stock": "BTC", "money": "BCH", "fee_prec": 4,
                          "stock_prec": 8, "money_prec": 8, "min_amount": "0.001"}
    await client.deposit(1, "BTC", "10", 1)
    await client.ok("order.put_limit", 1, "BTCBCH", 1, "1.5", "100", *FEES, "a")
    await client.ok("order.put_limit", 1, "BTCBCH", 1, "2", "100", *FEES, "a")
    summary = await client.ok("market.summary", "BTCBCH")
    assert summary == [{"name": "BTCBCH", "ask_count": 2, "ask_amount": "3.5", "bid_count": 0,
                        "bid_amount": "0"}]
    assert len(await client.ok("market.summary")) == 8


async def test_fee_truncated_to_stored_precision(client: Client) -> None:
    """BTCUSDT: price (2) x amount (8) x fee (4) has 14 decimals, USDT stores 12."""
    await client.deposit(1, "BTC", "1", 1)
    await client.deposit(2, "USDT", "1000", 2)
    await client.ok("order.put_limit", 2, "BTCUSDT", 2, "0.12345678", "99.99", *FEES, "b")
    taker = await client.ok("order.put_limit", 1, "BTCUSDT", 1, "0.12345678", "99.99", "0.0013",
                            "0", "a")
    # deal = 12.3444434322, fee = deal x 0.0013 = 0.01604777646186 -> 0.016047776461
    assert taker["deal_fee"] == "0.016047776461"
    usdt = await client.ok("balance.query", 1, "USDT")
    assert usdt["USDT"]["available"] == "12.328395"  # 12.328395655739 shown at prec_show 6
