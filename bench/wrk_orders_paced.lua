-- wrk load: order.put_limit on BTCBCH from users 1..100 (pre-funded), random side, price 95..105
-- (about half cross), each body distinct. Counts replies with "error": null vs other replies.
-- Paced: each connection waits the script argument's milliseconds after a reply before its next
-- request (wrk ... -s wrk_orders_paced.lua URL -- 16), so the offered load is about
-- connections / (pause + latency) whatever the server's speed (bench/bench_paced.py).
local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  pause = tonumber(args[1] or "0")
  ok, bad, n = 0, 0, 0
  math.randomseed(id * 7919 + os.time())
end
function delay()
  return pause
end
function request()
  n = n + 1
  local user = (n * 7 + id) % 100 + 1
  local side = math.random(1, 2)
  local price = 95 + math.random(0, 10)
  local body = string.format('{"method":"order.put_limit","params":[%d,"BTCBCH",%d,"0.01","%d","0.002","0.001","wrk"],"id":%d}', user, side, price, n)
  return wrk.format("POST", "/", {["Content-Type"] = "application/json"}, body)
end
function response(status, headers, body)
  if status == 200 and string.find(body, '"error": null', 1, true) then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); b = b + t:get("bad") end
  io.write(string.format('{"ok": %d, "bad": %d, "seconds": %.3f, "ok_per_s": %.1f, "p50_ms": %.2f, "p99_ms": %.2f}\n',
    o, b, summary.duration / 1e6, o / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
