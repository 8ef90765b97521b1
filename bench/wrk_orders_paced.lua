-- wrk_orders.lua's load, paced: each connection waits the script argument's milliseconds after
-- a reply before its next request (wrk ... -s wrk_orders_paced.lua URL -- 10), so the offered
-- load is about connections / (pause + latency) whatever the server's speed
-- (bench/bench_paced.py).  The load itself is wrk_orders.lua's, loaded from beside this file.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "wrk_orders.lua")
local unpaced_init = init
function init(args)
  pause = tonumber(args[1] or "0")
  unpaced_init(args)
end
function delay()
  return pause
end
