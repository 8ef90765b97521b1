"""Fund users 1..100 with BTC and BCH on a ViaBTC-style HTTP endpoint: fund.py URL

A copy of ../shared/bench/fund.py (the load that measured the original side by side), so a
clone stands alone; the same deposits, split into a function for the linter.
"""
import json
import sys
import urllib.request


def fund(url: str) -> None:
    for u in range(1, 101):
        for i, (a, amt) in enumerate((("BTC", "100000"), ("BCH", "100000000"))):
            body = json.dumps({"method": "balance.update",
                               "params": [u, a, "deposit", 7_000_000 + u * 2 + i, amt, {}],
                               "id": 1}).encode()
            request = urllib.request.Request(url, data=body, method="POST")
            r = json.loads(urllib.request.urlopen(request, timeout=10).read())
            assert r.get("error") is None or r["error"]["code"] == 10, r


if __name__ == "__main__":
    fund(sys.argv[1])
