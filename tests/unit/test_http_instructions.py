"""bench/http_instructions.py's measured loop runs on this tree (valgrind itself is not needed
here: the loop is what would rot unnoticed when the gateway's, the service's or the bus's API
moves), and its requests are wrk's."""

from __future__ import annotations

import subprocess
import sys

from bench.http_instructions import wrk_request
from tests.support.server import REPO


def test_the_measured_loop_answers_every_order_over_http() -> None:
    out = subprocess.run([sys.executable, "bench/http_instructions.py", "--child", "http", "200",
                          "300"], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout
    words = out.split()
    assert words[:6] == ["mode", "http", "orders", "200", "refused", "0"]
    # one group commit per round of BATCH requests: 200 deposits, then 200 orders
    assert words[6:8] == ["commits", str(7 + 7)]


def test_the_engine_loop_places_the_same_orders() -> None:
    out = subprocess.run([sys.executable, "bench/http_instructions.py", "--child", "engine", "200",
                          "300"], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout
    assert out.split() == ["mode", "engine", "orders", "200"]


def test_requests_are_what_wrk_orders_lua_sends() -> None:
    body = (b'{"method":"order.put_limit","params":[8,"BTCBCH",2,"0.01","97","0.002","0.001",'
            b'"wrk"],"id":5}')
    assert wrk_request([8, "BTCBCH", 2, "0.01", "97", "0.002", "0.001", "wrk"], 5) == (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
