"""Scale-out behind nginx (Debian's package, installed if missing): the deployment written by
``exchange_server.deploy.generate`` with TWO readhistory, TWO accesshttp and TWO accessws
instances, one matchengine (fresh MariaDB databases), marketprice (fresh Kafka topics, Redis
through Sentinel) and alertcenter, started by the generated ``start_all.sh`` (each instance
daemonised under its watchdog), and the generated nginx config in front of them:

* the trust model: the public TLS server (self-signed certificate made by openssl) reaches only
  accesshttp's public listeners: ``balance.update`` / ``balance.query`` are refused there and
  served on the internal plain-HTTP server; the public market-data methods, /openrpc.json,
  GET /, the market page and the WebSocket work on the public one; other paths are 404;
* JSON-RPC on both servers is spread over both accesshttp instances, and keeps working when
  one instance is stopped; the history keeps working when a readhistory instance is stopped
  (the gateways fail over);
* WebSocket clients over ws:// and wss:// on /ws are spread over both accessws instances and
  get market data that went matchengine -> Kafka -> marketprice; new connections keep working
  when one accessws instance is stopped.

Every process (the services' watchdogs and workers, nginx) is stopped at teardown.
"""

from __future__ import annotations

import asyncio
import fcntl
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from exchange_server.common.config import MysqlConfig
from exchange_server.deploy import DEFAULT_PORTS, Deployment, DeployOptions, Instance, generate
from tests.support.server import REPO
from tests.support.waiting import wait_port, wait_until

pytestmark = [pytest.mark.mysql]

#: Redis database of marketprice and alertcenter here (flushed before and after).
REDIS_DB = 9
MARKET = "BTCBCH"


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()



def lock_held(path: Path) -> bool:
    try:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False


def self_signed(openssl: str, directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    result = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return cert, key


@dataclass
class Nginx:
    binary: str
    deployment: Deployment
    http_port: int
    https_port: int
    cert: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dir(self) -> Path:
        return self.deployment.nginx_dir

    def args(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                "-e", str(self.dir / "logs" / "error.log"), *extra]

    def start(self) -> None:
        test = subprocess.run(self.args("-t"), capture_output=True, text=True, timeout=30)
        assert test.returncode == 0, test.stderr
        self.proc = subprocess.Popen(self.args("-g", "daemon off;"), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for port in (self.http_port, self.https_port):
            wait_port(port, 20, "(nginx)")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish their requests
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def access_log(self) -> list[str]:
        try:
            return (self.dir / "logs" / "access.log").read_text().splitlines()
        except FileNotFoundError:
            return []

    def upstreams(self, since: int, path: str = "POST / ") -> list[str]:
        """The instance that answered each request of the access log after line ``since``."""
        found = []
        for line in self.access_log()[since:]:
            if f'"{path}' in line:
                match = re.search(r"upstream=(\S+(?:, \S+)*) upstream_status", line)
                assert match, line
                found.append(match.group(1).split(", ")[-1])
        return found

    def wait_upstreams(self, since: int, count: int, path: str = "POST / ") -> list[str]:
        """:meth:`upstreams` once ``count`` requests are logged (nginx logs a request after
        its response is sent, a WebSocket connection when it closes)."""
        deadline = time.monotonic() + 60
        while True:
            found = self.upstreams(since, path)
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, (count, self.access_log()[since:])
            time.sleep(0.02)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def request(port: int, method: str, path: str, body: Any = None,
            tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """One HTTP request (a new connection): (status, body)."""
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("localhost", port, context=tls, timeout=30)
        if tls is not None else http.client.HTTPConnection("127.0.0.1", port, timeout=30))
    try:
        conn.request(method, path, None if body is None else json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def rpc(port: int, method: str, *params: Any, tls: ssl.SSLContext | None = None,
        timeout: float = 10.0, retry: bool = True) -> Any:
    """One JSON-RPC call through nginx (a new connection each time; retried while the
    services connect to each other, unless ``retry`` is False)."""
    deadline = time.monotonic() + timeout
    body = {"method": method, "params": list(params), "id": 1}
    while True:
        problem: object
        try:
            status, data = request(port, "POST", "/", body, tls)
            if status == 200:
                reply = json.loads(data)
                if reply.get("error") is None:
                    return reply["result"]
                problem = reply["error"]
            else:
                problem = (status, data[:200])
        except OSError as e:
            problem = e
        if not retry or time.monotonic() > deadline:
            raise AssertionError(f"{method}: {problem}")
        time.sleep(0.1)


def history_changes(port: int, expected: list[str], timeout: float = 60.0) -> list[str]:
    """balance.history of user 1 / BTC, waiting (up to ``timeout``) for the expected rows."""
    deadline = time.monotonic() + timeout
    while True:
        history = rpc(port, "balance.history", 1, "BTC", "", 0, 0, 0, 10)
        changes = [r["change"] for r in history["records"]]
        if changes == expected or time.monotonic() > deadline:
            return changes
        time.sleep(0.1)


async def ws_call(url: str, method: str, *params: Any, tls: ssl.SSLContext | None = None) -> Any:
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url, ssl=tls if tls is not None else False) as ws:
        await ws.send_json({"method": method, "params": list(params), "id": 7})
        while True:
            reply = await ws.receive_json(timeout=30)
            if reply.get("id") == 7:
                assert reply["error"] is None, reply
                return reply["result"]


@dataclass
class Scaled:
    deployment: Deployment
    nginx: Nginx

    def inst(self, name: str) -> Instance:
        return self.deployment.instance(name)

    def script(self, name: str, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.inst(name).dir / "shell" / script)], capture_output=True,
                              text=True, timeout=120)


@pytest.fixture
def scaled(tmp_path: Path, mysql_config: Callable[..., MysqlConfig],
           kafka_topics: Callable[[], str], kafka_brokers: str,
           sentinel_server: tuple[list[str], str], nginx_binary: str,
           openssl_binary: str) -> Iterator[Scaled]:
    db_log, db_history = mysql_config("test_nginx_log"), mysql_config("test_nginx_history")
    prefix = kafka_topics()
    sentinels, master = sentinel_server
    cert, key = self_signed(openssl_binary, tmp_path)
    counts = {"readhistory": 2, "accesshttp": 2, "accessws": 2}
    p = free_ports(2 + sum(counts.get(k.split("_")[0], 1) for k in DEFAULT_PORTS))
    ports: dict[str, list[int]] = {}
    for name in DEFAULT_PORTS:
        n = counts.get(name.split("_")[0], 1)
        ports[name], p = p[:n], p[n:]
    dep = generate(tmp_path / "deploy", DeployOptions(
        mysql=db_log, db_log=db_log.name, db_history=db_history.name,
        sentinels=sentinels, sentinel_master=master, redis_db=REDIS_DB, kafka=kafka_brokers,
        topic_prefix=prefix, lock_dir=tmp_path / "locks",
        instances=counts, ports=ports,
        # this tree's code (the venv's console script would import the installed copy)
        command=[sys.executable, "-m", "exchange_server"], environment={"PYTHONPATH": str(REPO)},
        http_listen=f"127.0.0.1:{p[0]}", https_listen=f"127.0.0.1:{p[1]}",
        server_name="localhost", ssl_certificate=str(cert), ssl_certificate_key=str(key),
        nginx_workers="2", nginx_user="root" if _root() else None))
    nginx = Nginx(nginx_binary, dep, p[0], p[1], cert)
    client = redis.Redis(db=REDIS_DB)
    client.flushdb()
    try:
        init = subprocess.run(
            [sys.executable, "-m", "exchange_server", "db", "init", "-c",
             str(dep.instance("matchengine").config_path)],
            cwd=REPO, capture_output=True, text=True, timeout=60)
        assert init.returncode == 0, init.stdout + init.stderr
        start = subprocess.run([str(dep.root / "start_all.sh")], capture_output=True, text=True,
                               timeout=120, env={"WAIT_TIMEOUT": "30", "PATH": _path()})
        assert start.returncode == 0, start.stdout + start.stderr + _logs(dep)
        nginx.start()
        yield Scaled(dep, nginx)
    finally:
        nginx.stop()
        stop = subprocess.run([str(dep.root / "stop_all.sh")], capture_output=True, text=True,
                              timeout=300)
        leftovers = [i.name for i in dep.instances if lock_held(i.lock_file)]
        for inst in dep.instances:  # should not be needed: stop_all.sh stopped them
            if lock_held(inst.lock_file):
                _kill_tree(int(inst.lock_file.read_text()))
        client.flushdb()
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert not leftovers, f"still running after stop_all.sh: {leftovers}"


def _root() -> bool:
    return os.geteuid() == 0


def _path() -> str:
    return os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")


def _kill_tree(pid: int) -> None:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                              text=True).stdout.split()
    for p in [pid, *map(int, children)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _logs(dep: Deployment) -> str:
    out = []
    for inst in dep.instances:
        for f in sorted((inst.dir / "log").glob("*.log")):
            out.append(f"--- {f}\n{f.read_text()[-1500:]}")
    return "\n".join(out)


def test_scale_out_behind_nginx(scaled: Scaled) -> None:
    nginx = scaled.nginx
    port = nginx.http_port
    tls = nginx.ssl_context()
    http_instances = {f"127.0.0.1:{i.port}" for i in scaled.deployment.of("accesshttp")}
    public_instances = {f"127.0.0.1:{i.ports['public']}"
                        for i in scaled.deployment.of("accesshttp")}
    ws_instances = {f"127.0.0.1:{i.port}" for i in scaled.deployment.of("accessws")}

    # -- a trading session through nginx's internal server (the back office)
    rpc(port, "balance.update", 1, "BTC", "deposit", 1, "10", {}, timeout=20)
    rpc(port, "balance.update", 2, "BCH", "deposit", 2, "10000", {})
    rpc(port, "order.put_limit", 1, MARKET, 1, "2", "100", "0.002", "0.001", "ng")
    deal = rpc(port, "order.put_limit", 2, MARKET, 2, "0.5", "100", "0.002", "0.001", "ng")
    assert deal["deal_stock"] == "0.5"
    expected = {"BTC": {"available": "8", "freeze": "1.5"},
                "BCH": {"available": "49.95", "freeze": "0"}}
    depth = rpc(port, "order.depth", MARKET, 10, "0")
    assert len(depth["asks"]) == 1 and depth["bids"] == []  # user 1 sells 1.5 more at 100

    # -- the public TLS server: public market data only
    check_public_server(scaled, expected, depth)

    # -- spread over both accesshttp instances: the full API on the internal server, the
    #    public listeners behind the TLS server
    mark = len(nginx.access_log())
    for _ in range(6):
        assert rpc(port, "balance.query", 1, "BTC", "BCH", retry=False) == expected
    assert set(nginx.wait_upstreams(mark, 6)) == http_instances
    mark = len(nginx.access_log())
    for _ in range(6):
        assert rpc(nginx.https_port, "order.depth", MARKET, 10, "0", tls=tls,
                   retry=False) == depth
    assert set(nginx.wait_upstreams(mark, 6)) == public_instances
    # the history (readhistory instances behind both gateways; written in the background)
    assert history_changes(port, ["-0.5", "10"]) == ["-0.5", "10"]

    # -- WebSocket on /ws (ws:// and wss://): market data went through Kafka to marketprice
    ws_url, wss_url = f"ws://127.0.0.1:{port}/ws", f"wss://localhost:{nginx.https_port}/ws"

    async def spread() -> list[Any]:
        """Four connections open at once: least_conn puts two on each instance."""
        sessions = [aiohttp.ClientSession() for _ in range(4)]
        try:
            sockets = [await s.ws_connect(wss_url if i % 2 else ws_url,
                                          ssl=tls if i % 2 else False)
                       for i, s in enumerate(sessions)]
            results = []
            for ws in sockets:
                await ws.send_json({"method": "server.ping", "params": [], "id": 1})
                results.append((await ws.receive_json(timeout=30))["result"])
            for ws in sockets:
                await ws.close()
            return results
        finally:
            for s in sessions:
                await s.close()

    mark = len(nginx.access_log())
    assert asyncio.run(spread()) == ["pong"] * 4
    assert set(nginx.wait_upstreams(mark, 4, "GET /ws")) == ws_instances
    deadline = time.monotonic() + 60
    while True:
        deals = asyncio.run(ws_call(wss_url, "deals.query", MARKET, 10, 0, tls=tls))
        if [d["amount"] for d in deals] == ["0.5"]:
            break
        assert time.monotonic() < deadline, f"the deal never reached marketprice: {deals}"
        time.sleep(0.2)
    assert rpc(port, "market.last", MARKET) == "100.00000000"

    # -- every process serves its Prometheus metrics where its config says
    for inst in scaled.deployment.instances:
        conn = http.client.HTTPConnection("127.0.0.1", inst.ports["metrics"], timeout=30)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            assert resp.status == 200 and b"# TYPE" in resp.read(), inst.name
        finally:
            conn.close()

    # -- one accesshttp instance stopped: every request still answered by the other one
    stopped = scaled.inst("accesshttp-2")
    result = scaled.script("accesshttp-2", "stop.sh")
    assert result.returncode == 0 and "stopped" in result.stdout, result.stdout + result.stderr
    mark = len(nginx.access_log())
    for _ in range(4):
        assert rpc(port, "balance.query", 1, "BTC", "BCH", retry=False) == expected
    for _ in range(4):
        assert rpc(nginx.https_port, "order.depth", MARKET, 10, "0", tls=tls,
                   retry=False) == depth
    first = scaled.inst("accesshttp")
    assert set(nginx.wait_upstreams(mark, 8)) == {f"127.0.0.1:{first.port}",
                                                  f"127.0.0.1:{first.ports['public']}"}
    # check_alive.sh (cron) brings it back
    result = scaled.script("accesshttp-2", "check_alive.sh")
    assert result.returncode == 0 and "starting it" in result.stdout, result.stdout
    wait_port(stopped.port)

    # -- one readhistory instance stopped: the gateways fail over to the other one
    result = scaled.script("readhistory", "stop.sh")
    assert result.returncode == 0, result.stdout + result.stderr
    for _ in range(4):
        assert history_changes(port, ["-0.5", "10"]) == ["-0.5", "10"]

    # -- one accessws instance stopped: new WebSocket connections go to the other one
    result = scaled.script("accessws-2", "stop.sh")
    assert result.returncode == 0, result.stdout + result.stderr
    mark = len(nginx.access_log())
    for url, ctx in ((ws_url, None), (wss_url, tls), (ws_url, None), (wss_url, tls)):
        assert asyncio.run(ws_call(url, "server.ping", tls=ctx)) == "pong"
    assert set(nginx.wait_upstreams(mark, 4, "GET /ws")) == \
        {f"127.0.0.1:{scaled.inst('accessws').port}"}

    # writes still work and nothing acknowledged was lost
    rpc(port, "order.cancel", 1, MARKET, 1)
    assert rpc(port, "balance.query", 1, "BTC") == {"BTC": {"available": "9.5", "freeze": "0"}}


REFUSED = {"error": {"code": 6, "message": "require authentication"}, "result": None, "id": 1}


def check_public_server(scaled: Scaled, expected: dict[str, Any], depth: Any) -> None:
    """The public TLS server refuses the back-office methods (which the internal server
    served) and serves the public market-data methods, the pages and the WebSocket."""
    nginx = scaled.nginx
    tls, public = nginx.ssl_context(), nginx.https_port

    def post(body: Any) -> tuple[int, Any]:
        status, data = request(public, "POST", "/", body, tls)
        return status, json.loads(data) if data else None

    # refused, whatever the caller claims
    for method, params in (("balance.update", [1, "BTC", "deposit", 99, "1000", {}]),
                           ("balance.query", [1, "BTC", "BCH"]),
                           ("order.put_limit", [1, MARKET, 1, "1", "1", "0", "0", "x"]),
                           ("order.cancel", [1, MARKET, 1]),
                           ("config.update_asset", [{"name": "X", "prec_save": 2}])):
        assert post({"method": method, "params": params, "id": 1}) == (403, REFUSED), method
    # marketprice takes the deal from the bus in the background: wait until it has it, so the
    # batch below can check a mixed answer against a known last price
    wait_until(lambda: rpc(public, "market.last", MARKET, tls=tls) == "100.00000000", 30, 0.1,
               "the deal's price in marketprice")
    status, replies = post([{"method": "market.last", "params": [MARKET], "id": 1},
                            {"method": "balance.update",
                             "params": [1, "BTC", "deposit", 98, "1000", {}], "id": 2}])
    assert status == 200 and replies[0]["result"] == "100.00000000"
    assert replies[1] == {**REFUSED, "id": 2}
    # ... and nothing moved: the internal server still shows the same balances
    assert rpc(nginx.http_port, "balance.query", 1, "BTC", "BCH", retry=False) == expected
    # every public market-data method is served (market data is written in the background)
    assert rpc(public, "order.depth", MARKET, 10, "0", tls=tls) == depth
    assert rpc(public, "order.book", MARKET, 1, 0, 10, tls=tls)["total"] == 1
    assert MARKET in [m["name"] for m in rpc(public, "market.list", tls=tls)]
    assert rpc(public, "market.summary", tls=tls)
    assert {"name": "BTC", "prec": 8} in rpc(public, "asset.list", tls=tls)
    assert rpc(public, "market.last", MARKET, tls=tls, timeout=20) == "100.00000000"
    deadline = time.monotonic() + 20
    while rpc(public, "market.deals", MARKET, 10, 0, tls=tls) == []:
        assert time.monotonic() < deadline, "the deal never reached marketprice"
        time.sleep(0.1)
    assert Decimal(rpc(public, "market.status", MARKET, 86400, tls=tls)["last"]) == 100
    assert Decimal(rpc(public, "market.status_today", MARKET, tls=tls)["last"]) == 100
    now = int(time.time())
    assert rpc(public, "market.kline", MARKET, now - 3600, now + 60, 60, tls=tls)
    # the pages: /openrpc.json, the market page and its files, /market-config.json, GET /
    status, body = request(public, "GET", "/openrpc.json", tls=tls)
    assert status == 200 and "balance.update" in {m["name"] for m in json.loads(body)["methods"]}
    status, body = request(public, "GET", f"/market/{MARKET}", tls=tls)
    assert status == 200 and MARKET.encode() in body
    assert request(public, "GET", "/static/market.js", tls=tls)[0] == 200
    status, body = request(public, "GET", "/market-config.json", tls=tls)
    assert status == 200
    page_ws_url = json.loads(body)["ws_url"]  # the deploy kit's public wss:// address
    assert page_ws_url == f"wss://localhost:{public}/ws"
    direct = request(scaled.inst("accesshttp").ports["public"], "GET", "/")
    assert request(public, "GET", "/", tls=tls) == direct
    # anything else is not public
    for path in ("/metrics", "/balance", "/x/market/BTCBCH", "/openrpc.json/x"):
        assert request(public, "GET", path, tls=tls)[0] == 404, path
    # the WebSocket API is public, where the market page looks for it
    assert asyncio.run(ws_call(page_ws_url, "server.ping", tls=tls)) == "pong"


def test_generated_config_passes_nginx_t(tmp_path: Path, nginx_binary: str,
                                         openssl_binary: str) -> None:
    """The config as an operator gets it (default ports, TLS on 443), with real certificates:
    ``nginx -t`` accepts it."""
    cert, key = self_signed(openssl_binary, tmp_path)
    dep = generate(tmp_path / "d", DeployOptions(
        instances={"accesshttp": 3, "accessws": 2},
        ssl_certificate=str(cert), ssl_certificate_key=str(key)))
    text = (dep.nginx_dir / "exchange.conf").read_text()
    # 3 accesshttp instances (full API), their 3 public listeners, 2 accessws instances
    assert text.count("    server 127.0.0.1:") == 8
    for inst in dep.of("accesshttp"):
        assert f"server 127.0.0.1:{inst.ports['public']} " in text
    result = subprocess.run([nginx_binary, "-t", "-p", str(dep.nginx_dir), "-c",
                             str(dep.nginx_dir / "nginx.conf"), "-e",
                             str(dep.nginx_dir / "logs" / "error.log")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
