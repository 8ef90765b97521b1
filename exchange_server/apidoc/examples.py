"""Record the docs' examples from a real run: ``python -m exchange_server.apidoc.examples``.

Starts ``exchange-server run`` (fresh data directory, free ports, a stub auth service), runs a
scripted session that calls every HTTP method, every WebSocket method and waits for every push,
and writes each method's first recorded request and reply to ``docs/api/examples.json``
(``--out`` to write elsewhere).  Fails (exit 1) when a documented method or push got no
example: add a call for it to the session below; fails when accessws sent a push that the push
table (``WS_PUSHES`` in common/methods.py) does not declare.

Users: 1 (token ``token-of-user-1``, API key ``key-1``) sells BTC; 2 buys with BCH; 3 sells a
little BTC to fire a stop.  The server runs with ``--admin-token`` (:data:`ADMIN_TOKEN`) for the
admin methods (config.*).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from exchange_server.api.registry import http_methods, ws_methods, ws_pushes
from exchange_server.apidoc.liveserver import REPO, AuthStub, LiveServer
from exchange_server.common.methods import WS_PUSHES

DEFAULT_OUT = REPO / "docs" / "api" / "examples.json"
MARKET = "BTCBCH"
TOKEN = "token-of-user-1"
ADMIN_TOKEN = "admin-token-of-the-examples"
WAIT = 10.0


class Recorder:
    def __init__(self, server: LiveServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.http: dict[str, Any] = {}
        self.ws: dict[str, Any] = {}
        self.pushes: dict[str, Any] = {}
        #: the name of every notification any connection received
        self.push_names: set[str] = set()
        self.errors: list[dict[str, Any]] = []
        self._id = 0

    def next_id(self) -> int:
        self._id += 1
        return self._id

    async def post(self, method: str, *params: Any, record: bool = True,
                   error: str = "", admin: bool = False) -> Any:
        """``admin``: send ``Authorization: Bearer <ADMIN_TOKEN>`` (the admin methods)."""
        request = {"method": method, "params": list(params), "id": self.next_id()}
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if admin else {}
        async with self.session.post(self.server.url, data=json.dumps(request),
                                     headers=headers) as resp:
            status = resp.status
            body = await resp.read()
        reply = json.loads(body) if body else None
        entry = {"request": request, "status": status, "response": reply}
        if error:
            self.errors.append({"transport": "http", "when": error, **entry})
        elif reply is None or reply.get("error") is not None:
            raise RuntimeError(f"{method} {params}: HTTP {status} {body!r}")
        elif record and method not in self.http:
            self.http[method] = entry
        return reply["result"] if reply else None


class WsConn:
    """One recorded WebSocket connection."""

    def __init__(self, rec: Recorder, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.rec = rec
        self.ws = ws
        self.pushes: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self._event = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if data.get("id") is None:
                self.pushes.append(data)
                self.rec.push_names.add(str(data.get("method")))
            else:
                self._replies[data["id"]] = data
            self._event.set()

    async def call(self, method: str, *params: Any, record: bool = True,
                   error: str = "") -> Any:
        req_id = self.rec.next_id()
        request = {"method": method, "params": list(params), "id": req_id}
        await self.ws.send_str(json.dumps(request))
        async with asyncio.timeout(WAIT):
            while req_id not in self._replies:
                self._event.clear()
                await self._event.wait()
        reply = self._replies.pop(req_id)
        entry = {"request": request, "response": reply}
        if error:
            self.rec.errors.append({"transport": "websocket", "when": error, **entry})
        elif reply.get("error") is not None:
            raise RuntimeError(f"ws {method} {params}: {reply}")
        elif record and method not in self.rec.ws:
            self.rec.ws[method] = entry
        return reply.get("result")

    async def push(self, name: str, accept: Callable[[list[Any]], bool] = lambda p: True,
                   record: bool = True, label: str = "") -> list[Any]:
        """Wait for a push (already received or coming) that ``accept`` takes."""
        deadline = time.monotonic() + WAIT
        seen = 0
        while True:
            for note in self.pushes[seen:]:
                if note["method"] == name and accept(note["params"]):
                    if record:
                        self.rec.pushes.setdefault(name, [])
                        if len(self.rec.pushes[name]) < 2:
                            self.rec.pushes[name].append({"label": label, "notification": note})
                    return list(note["params"])
            seen = len(self.pushes)
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {name} push ({label}) in {WAIT}s")
            self._event.clear()
            try:
                async with asyncio.timeout(left):
                    await self._event.wait()
            except TimeoutError:
                pass

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def _until(get: Callable[[], Any], ok: Callable[[Any], bool], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = await get()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}: {value!r}")
        await asyncio.sleep(0.1)


async def session(server: LiveServer) -> Recorder:
    async with aiohttp.ClientSession() as http:
        rec = Recorder(server, http)
        post = rec.post
        # -- reference data, deposits --------------------------------------------------------------
        await post("asset.list")
        await post("market.list")
        await post("balance.update", 1, "BTC", "deposit", 1, "10", {"txid": "0xabc"})
        await post("balance.update", 2, "BCH", "deposit", 2, "5000", {})
        await post("balance.update", 1, "BCH", "deposit", 3, "100", {})
        await post("balance.query", 1, "BTC", "BCH")

        ws_market = WsConn(rec, await http.ws_connect(server.ws_url))
        ws_user = WsConn(rec, await http.ws_connect(server.ws_url))
        ws_anon = WsConn(rec, await http.ws_connect(server.ws_url))
        await ws_market.call("server.ping")
        await ws_market.call("server.time")
        await ws_user.call("server.auth", TOKEN, "web")
        ws_sign = WsConn(rec, await http.ws_connect(server.ws_url))
        await ws_sign.call("server.sign", "key-1", "signature-of-the-request",
                           int(time.time() * 1000))
        await ws_user.call("order.subscribe", MARKET)
        await ws_user.call("asset.subscribe", "BTC", "BCH")

        # -- a book, then trades -------------------------------------------------------------------
        ask1 = await post("order.put_limit", 1, MARKET, 1, "1", "100", "0.002", "0.001", "web",
                          record=False)
        await ws_user.push("order.update", lambda p: p[0] == 1 and p[1]["id"] == ask1["id"],
                           label="event 1 (PUT): an ask placed on the book")
        await ws_user.push("asset.update", lambda p: "BTC" in p[0],
                           label="user 1's BTC frozen by the ask")
        await post("order.put_limit", 1, MARKET, 1, "2", "110", "0.002", "0.001", "web",
                   record=False)
        await ws_market.call("depth.subscribe", MARKET, 10, "0")
        await ws_market.push("depth.update", lambda p: p[0] is True and len(p[1]["asks"]) == 2,
                             label="first push: the full book (clean = true)")
        await ws_market.call("price.subscribe", MARKET)
        await ws_market.call("state.subscribe", MARKET)
        await ws_market.call("today.subscribe", MARKET)
        await ws_market.call("deals.subscribe", MARKET)
        await ws_market.call("kline.subscribe", MARKET, 60)

        bid = await post("order.put_limit", 2, MARKET, 2, "0.5", "100", "0.002", "0.001",
                         "web")
        await ws_user.push("order.update", lambda p: p[0] == 2 and p[1]["id"] == ask1["id"],
                           label="event 2 (UPDATE): the ask partly filled")
        await ws_market.push("depth.update", lambda p: p[0] is False,
                             label="later pushes: only the changed levels (clean = false)")
        await post("order.put_market", 2, MARKET, 2, "60", "0.002", "web")
        await ws_user.push("order.update", lambda p: p[0] == 3 and p[1]["id"] == ask1["id"],
                           label="event 3 (FINISH): the ask filled completely", record=False)
        await ws_market.push("price.update", label="the last price after the trades")
        await ws_market.push("deals.update", label="new deals, newest first")
        await ws_market.push("kline.update", label="the current minute's candle")
        await ws_market.push("state.update", lambda p: p[1]["volume"] != "0",
                             label="24 h statistics")
        await ws_market.push("today.update", lambda p: p[1]["volume"] != "0",
                             label="today's statistics")

        extra = await post("order.put_limit", 1, MARKET, 1, "1", "120", "0.002", "0.001",
                           "web", record=False)
        await post("order.pending", 1, MARKET, 0, 10)
        await post("order.pending_detail", MARKET, extra["id"])
        await post("order.book", MARKET, 1, 0, 10)
        await post("order.depth", MARKET, 10, "0")
        await post("asset.summary", "BTC", "BCH")
        await post("market.summary", MARKET)
        await post("order.cancel", 1, MARKET, extra["id"])

        # -- market data (marketprice follows the deals through the bus) ---------------------------
        await _until(lambda: post("market.last", MARKET, record=False), lambda v: v != "0",
                     "market.last")
        await post("market.last", MARKET)
        await post("market.deals", MARKET, 10, 0)
        now = int(time.time())
        await post("market.kline", MARKET, now - 180, now, 60)
        await post("market.status", MARKET, 86400)
        await post("market.status_today", MARKET)

        # -- history (written by the follower process shortly after) -------------------------------
        await _until(lambda: post("order.finished", 2, MARKET, 0, 0, 0, 10, record=False),
                     lambda v: len(v["records"]) >= 2, "order.finished")
        await post("order.finished", 2, MARKET, 0, 0, 0, 10)
        await post("order.finished_detail", bid["id"])
        await post("order.deals", bid["id"], 0, 10)
        await post("market.user_deals", 2, MARKET, 0, 10)
        await _until(lambda: post("balance.history", 1, "", "", 0, 0, 0, 3, record=False),
                     lambda v: len(v["records"]) >= 3, "balance.history")
        await post("balance.history", 1, "BTC", "", 0, 0, 0, 3)

        # -- WebSocket queries ---------------------------------------------------------------------
        await ws_market.call("kline.query", MARKET, now - 120, now, 60)
        await ws_market.call("depth.query", MARKET, 5, "0")
        await ws_market.call("price.query", MARKET)
        await ws_market.call("state.query", MARKET, 86400)
        await ws_market.call("today.query", MARKET)
        await ws_market.call("deals.query", MARKET, 3, 0)
        await ws_user.call("order.query", MARKET, 0, 10)
        await ws_user.call("order.history", MARKET, 0, 0, 0, 2, 0)
        await ws_user.call("asset.query", "BTC", "BCH")
        await ws_user.call("asset.history", "BTC", "", 0, 0, 0, 2)
        # -- the CoinEx fork's stop orders, bulk cancels and options (last price: 110) -------------
        stop = await post("order.put_stop_limit", 1, MARKET, 1, "1", "105", "105", "0.002",
                          "0.001", "web", None, None, 0, "stop-loss-1")
        await ws_user.push("order.update_stop", lambda p: p[0] == 1 and p[1]["id"] == stop["id"],
                           label="event 1: a stop placed (funds frozen)")
        stop_market = await post("order.put_stop_market", 2, MARKET, 2, "50", "115", "0.002",
                                 "web", None, None)
        await post("order.pending_stop", 1, MARKET, 0, 0, 10)
        await post("order.stop_book", MARKET, 1, 0, 10)
        await ws_user.call("order.query_stop", MARKET, 0, 0, 10)
        await post("market.detail", MARKET)
        await post("order.cancel_stop", 2, MARKET, stop_market["id"])
        # a deal at 105 (user 3 sells to user 2) fires user 1's stop: a new ask at 105
        await post("balance.update", 3, "BTC", "deposit", 4, "1", {}, record=False)
        await post("order.put_limit", 2, MARKET, 2, "0.1", "105", "0.002", "0.001", "web",
                   record=False)
        await post("order.put_limit", 3, MARKET, 1, "0.1", "105", "0.002", "0.001", "web",
                   record=False)
        await ws_user.push("order.update_stop", lambda p: p[0] == 2 and p[1]["id"] == stop["id"],
                           label="event 2: the stop fired (status 1: its order was placed)")
        tagged = await post("order.put_limit", 1, MARKET, 1, "0.5", "150", "0.002", "0.001",
                            "web", None, None, 0x80, "my-order-1", record=False)
        await post("order.cancel_batch", 1, MARKET, [tagged["id"], 999999])
        await post("order.cancel_all", 1, MARKET, 0)
        await post("order.put_stop_limit", 1, MARKET, 1, "0.5", "100", "100", "0.002", "0.001",
                   "web", None, None, record=False)
        await post("order.cancel_stop_all", 1, MARKET)
        await _until(lambda: post("order.finished_stop", 1, "", 0, 0, 0, 0, 10, record=False),
                     lambda v: len(v["records"]) >= 2, "order.finished_stop")
        await post("order.finished_stop", 1, "", 0, 0, 0, 0, 10)
        # -- admin (the server runs with --admin-token) --------------------------------------------
        await post("config.update_asset", {"name": "USDT", "prec_save": 20, "prec_show": 8},
                   admin=True)
        await post("config.update_market", {"name": "BTCUSDT", "stock": {"name": "BTC", "prec": 8},
                                            "money": {"name": "USDT", "prec": 8},
                                            "fee_prec": 4, "min_amount": "0.001"}, admin=True)
        await post("config.suspend_market", MARKET, admin=True)
        await post("order.put_limit", 1, MARKET, 1, "1", "100", "0.002", "0.001", "web",
                   error="a new order in a suspended market")
        await post("config.resume_market", MARKET, admin=True)
        for kind in ("kline", "depth", "price", "state", "today", "deals"):
            await ws_market.call(f"{kind}.unsubscribe")
        await ws_user.call("order.unsubscribe")
        await ws_user.call("asset.unsubscribe")

        # -- errors --------------------------------------------------------------------------------
        await post("order.put_limit", 2, MARKET, 2, "1000", "100", "0.002", "0.001", "web",
                   error="not enough money for the bid (a method-specific code)")
        await post("order.put_limit", 2, MARKET, 3, "1", "100", "0.002", "0.001", "web",
                   error="side 3 does not exist")
        await post("order.put", 1, error="an unknown method")
        await post("balance.update", 1, "BTC", "deposit", 1, "10", {"txid": "0xabc"},
                   error="the same business id again")
        await post("order.put_limit", 1, MARKET, 1, "1", "100", "0.002", "0.001", "web", None,
                   None, 0x10, error="fill-or-kill (option 0x10) that cannot fill completely")
        await post("config.suspend_market", MARKET,
                   error="an admin method without the admin token (HTTP 403)")
        await ws_anon.call("asset.query", error="a user method before server.auth")
        await WsConn(rec, await http.ws_connect(server.ws_url)).call(
            "server.auth", "bad-token", "web", error="the auth service rejects the token")
        await ws_anon.call("depth.subscribe", MARKET, 7, "0",
                           error="7 is not one of the configured depth limits")
        for conn in (ws_market, ws_user, ws_anon, ws_sign):
            await conn.close()
        return rec


def _ordered(recorded: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {name: recorded[name] for name in names if name in recorded}


async def record() -> dict[str, Any]:
    auth = AuthStub({TOKEN: 1}, {"key-1": 1}).start()
    try:
        with tempfile.TemporaryDirectory(prefix="apidoc-examples-") as tmp:
            server = LiveServer(Path(tmp) / "data",
                                ws_config=auth.ws_config(cache_timeout=0.1),
                                extra=["--admin-token", ADMIN_TOKEN]).start()
            try:
                rec = await session(server)
            except Exception:
                sys.stderr.write(server.log())
                raise
            finally:
                server.stop()
    finally:
        auth.stop()
    undeclared = sorted(rec.push_names - set(WS_PUSHES))
    if undeclared:
        raise RuntimeError(f"accessws sent pushes that WS_PUSHES (common/methods.py) does not "
                           f"declare: {', '.join(undeclared)}")
    return {
        "comment": "Recorded from a real run by python -m exchange_server.apidoc.examples; "
                   "times and ids are whatever that run produced.",
        "http": _ordered(rec.http, list(http_methods())),
        "websocket": _ordered(rec.ws, list(ws_methods())),
        "pushes": _ordered(rec.pushes, list(ws_pushes())),
        "errors": rec.errors,
    }


def missing(examples: dict[str, Any]) -> list[str]:
    out = [f"HTTP {m}" for m in http_methods() if m not in examples.get("http", {})]
    out += [f"WebSocket {m}" for m in ws_methods() if m not in examples.get("websocket", {})]
    out += [f"push {m}" for m in ws_pushes() if m not in examples.get("pushes", {})]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exchange_server.apidoc.examples",
                                     description=__doc__)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the examples")
    args = parser.parse_args(argv)
    examples = asyncio.run(record())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(examples, indent=1, ensure_ascii=False) + "\n")
    gaps = missing(examples)
    print(f"wrote {out}: {len(examples['http'])} HTTP methods, {len(examples['websocket'])} "
          f"WebSocket methods, {len(examples['pushes'])} pushes, {len(examples['errors'])} errors")
    if gaps:
        print("no example for: " + ", ".join(gaps), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
