/* The market page: order book, depth chart, recent trades, candles and 24 h status of one
 * market, kept up to date through the WebSocket API (docs/api/websocket.md).
 *
 * Where the WebSocket API is: the `ws` query parameter (`/market/BTCBCH?ws=ws://host:8090/`),
 * else `ws_url` from /market-config.json, else its `ws_port` on this page's host, else port
 * 8090 (the default --ws-port of `exchange-server run`).  `interval` (seconds) picks the
 * candle interval.
 */
(function () {
  "use strict";

  const MARKET = document.body.dataset.market;
  const DEPTH_LIMIT = 50;
  const BOOK_ROWS = 14;
  const TRADES_MAX = 60;
  const params = new URLSearchParams(location.search);

  const state = {
    connected: false,
    asks: new Map(),      // price text -> amount text
    bids: new Map(),
    trades: [],           // newest first: {id, time, price, amount, type}
    status: null,
    last: null,
    interval: Number(params.get("interval")) || 60,
    candles: 0,           // bars shown on the candle chart
    lastCandle: 0,
    lastLoaded: 0,
    updates: { depth: 0, deals: 0, kline: 0, state: 0, price: 0 },
    errors: [],
  };
  // for tests and the curious: window.marketPage.state (.format: see formatDecimal below)
  window.marketPage = { state: state };

  const $ = (id) => document.getElementById(id);

  // -- numbers as the API shows them -----------------------------------------------------------

  // What a price the server does not know shows as ("0" in the 24 h status: see onState).
  const NO_PRICE = "\u2014";

  // A decimal string with its trailing zeros stripped, as the API's other outputs are
  // ("91.59000000" from price.update / market.last -> "91.59", "100.0" -> "100"): done on the
  // text, so it stays exact; anything else (exponents) is shown as it came.
  function formatDecimal(text) {
    const s = String(text);
    if (!/^-?\d+\.\d+$/.test(s)) return s;
    return s.replace(/0+$/, "").replace(/\.$/, "");
  }

  // A price: "0" is never one (the status reports it where it has none), so it shows NO_PRICE.
  function formatPrice(text) {
    return Number(text) === 0 ? NO_PRICE : formatDecimal(text);
  }
  window.marketPage.format = { decimal: formatDecimal, price: formatPrice };

  // -- WebSocket with reconnect and request ids ------------------------------------------------

  let ws = null;
  let nextId = 1;
  const pending = new Map();
  let retryDelay = 500;

  async function wsUrl() {
    if (params.get("ws")) return params.get("ws");
    let port = 8090;
    try {
      const reply = await fetch("/market-config.json", { cache: "no-store" });
      if (reply.ok) {
        const config = await reply.json();
        if (config.ws_url) return config.ws_url;
        if (config.ws_port) port = config.ws_port;
      }
    } catch (e) { /* no config endpoint: fall through */ }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.hostname + ":" + port + "/";
  }

  function request(method, paramsList) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      const id = nextId++;
      pending.set(id, { resolve, reject, method });
      ws.send(JSON.stringify({ method: method, params: paramsList, id: id }));
    });
  }

  function setConnection(kind, text) {
    const el = $("connection");
    el.className = "connection " + kind;
    el.textContent = text;
  }

  async function connect() {
    const url = await wsUrl();
    setConnection("connecting", "connecting");
    ws = new WebSocket(url);
    ws.onopen = () => {
      retryDelay = 500;
      state.connected = true;
      setConnection("live", "live");
      subscribeAll().catch((e) => state.errors.push(String(e)));
    };
    ws.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message.id === null || message.id === undefined) {
        onPush(message.method, message.params);
        return;
      }
      const waiter = pending.get(message.id);
      if (!waiter) return;
      pending.delete(message.id);
      if (message.error) waiter.reject(new Error(waiter.method + ": " + message.error.message));
      else waiter.resolve(message.result);
    };
    ws.onclose = () => {
      state.connected = false;
      for (const waiter of pending.values()) waiter.reject(new Error("connection closed"));
      pending.clear();
      setConnection("down", "reconnecting");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 8000);
    };
  }

  async function subscribeAll() {
    // a fresh (re)connection: the server sends full snapshots again
    state.asks.clear();
    state.bids.clear();
    await request("depth.subscribe", [MARKET, DEPTH_LIMIT, "0"]);
    await request("deals.subscribe", [MARKET]);
    await request("state.subscribe", [MARKET]);
    await request("price.subscribe", [MARKET]);
    await loadCandles();
  }

  // -- pushes ----------------------------------------------------------------------------------

  function onPush(method, p) {
    switch (method) {
      case "depth.update": onDepth(p[0], p[1]); break;
      case "deals.update": onDeals(p[1]); break;
      case "state.update": onState(p[1]); break;
      case "price.update": onPrice(p[1]); break;
      case "kline.update": onKline(p); break;
      default: break;
    }
  }

  function onDepth(clean, depth) {
    state.updates.depth++;
    if (clean) {
      state.asks.clear();
      state.bids.clear();
    }
    for (const [side, book] of [["asks", state.asks], ["bids", state.bids]]) {
      for (const [price, amount] of depth[side] || []) {
        if (Number(amount) === 0) book.delete(price);
        else book.set(price, amount);
      }
    }
    renderBook();
    drawDepth();
  }

  function onDeals(deals) {
    state.updates.deals++;
    const known = new Set(state.trades.map((t) => t.id));
    const fresh = deals.filter((d) => !known.has(d.id));
    state.trades = fresh.concat(state.trades).sort((a, b) => b.id - a.id).slice(0, TRADES_MAX);
    renderTrades(new Set(fresh.map((d) => d.id)));
    if (state.trades.length && state.last === null) onPrice(state.trades[0].price);
  }

  function onState(status) {
    state.updates.state++;
    state.status = status;
    // Like the original, marketprice reports open and low "0" while the market's first deal
    // is inside the period (its first candle opens at "0", see toBar), and every price "0"
    // before any deal: shown as NO_PRICE, with the reason on hover.
    for (const [id, text] of [["stat-high", status.high], ["stat-low", status.low],
                              ["stat-open", status.open]]) {
      const el = $(id);
      el.textContent = formatPrice(text);
      el.title = Number(text) === 0 ? (Number(status.volume) > 0
        ? "not reported: the market's first deal is within the last 24 h"
        : "no deals in the last 24 h") : "";
    }
    $("stat-volume").textContent = formatDecimal(status.volume);
    $("stat-deal").textContent = formatDecimal(status.deal);
    onPrice(status.last, true);
  }

  function onPrice(price, fromState) {
    if (!fromState) state.updates.price++;
    if (Number(price) === 0 && state.last === null) return;
    state.last = price;
    $("last-price").textContent = formatDecimal(price);
    const open = state.status ? Number(state.status.open) : 0;
    const change = $("change");
    if (open > 0) {
      const pct = (Number(price) - open) / open * 100;
      change.textContent = (pct >= 0 ? "+" : "") + pct.toFixed(2) + "%";
      change.className = "change " + (pct >= 0 ? "up" : "down");
    } else {
      change.textContent = "";
    }
  }

  // -- order book and depth chart --------------------------------------------------------------

  function sortedLevels(book, descending) {
    const levels = Array.from(book.entries()).map(([p, a]) => [p, a, Number(p), Number(a)]);
    levels.sort((x, y) => descending ? y[2] - x[2] : x[2] - y[2]);
    return levels.slice(0, DEPTH_LIMIT);
  }

  function levelRow(level, total, maxTotal, colour) {
    const tr = document.createElement("tr");
    const width = maxTotal > 0 ? Math.round(total / maxTotal * 100) : 0;
    tr.style.backgroundImage = "linear-gradient(to left, " + colour + " " + width + "%, transparent " + width + "%)";
    for (const text of [formatDecimal(level[0]), formatDecimal(level[1]), formatAmount(total)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  }

  function formatAmount(value) {
    return Number(value.toPrecision(10)).toString();
  }

  function shortNumber(value) {
    return Number(value.toPrecision(5)).toString();
  }

  function renderBook() {
    const asks = sortedLevels(state.asks, false).slice(0, BOOK_ROWS);
    const bids = sortedLevels(state.bids, true).slice(0, BOOK_ROWS);
    let sum = 0;
    const askTotals = asks.map((l) => (sum += l[3]));
    sum = 0;
    const bidTotals = bids.map((l) => (sum += l[3]));
    const maxTotal = Math.max(askTotals[askTotals.length - 1] || 0, bidTotals[bidTotals.length - 1] || 0);
    const askBody = $("asks");
    const bidBody = $("bids");
    askBody.replaceChildren();
    bidBody.replaceChildren();
    for (let i = asks.length - 1; i >= 0; i--) {
      askBody.appendChild(levelRow(asks[i], askTotals[i], maxTotal, "var(--ask-soft)"));
    }
    bids.forEach((l, i) => bidBody.appendChild(levelRow(l, bidTotals[i], maxTotal, "var(--bid-soft)")));
    if (asks.length && bids.length) {
      const spread = asks[0][2] - bids[0][2];
      $("spread").textContent = "spread " + formatAmount(spread) + " (" + (spread / asks[0][2] * 100).toFixed(2) + "%)";
    } else {
      $("spread").textContent = asks.length || bids.length ? "one-sided book" : "empty book";
    }
  }

  function drawDepth() {
    const canvas = $("depth-chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(document.documentElement);
    const bids = sortedLevels(state.bids, true);
    const asks = sortedLevels(state.asks, false);
    const pad = { left: 8, right: 60, top: 10, bottom: 22 };
    if (!bids.length && !asks.length) {
      ctx.fillStyle = style.getPropertyValue("--muted");
      ctx.font = "12px sans-serif";
      ctx.fillText("no orders", width / 2 - 24, height / 2);
      return;
    }
    let cum = 0;
    const bidPoints = bids.map((l) => [l[2], (cum += l[3])]);
    cum = 0;
    const askPoints = asks.map((l) => [l[2], (cum += l[3])]);
    const prices = bidPoints.concat(askPoints).map((p) => p[0]);
    let low = Math.min.apply(null, prices);
    let high = Math.max.apply(null, prices);
    if (high === low) { low *= 0.99; high *= 1.01; }
    const margin = (high - low) * 0.05;
    low -= margin; high += margin;
    const maxAmount = Math.max(bidPoints.length ? bidPoints[bidPoints.length - 1][1] : 0,
                               askPoints.length ? askPoints[askPoints.length - 1][1] : 0) * 1.1;
    const x = (price) => pad.left + (price - low) / (high - low) * (width - pad.left - pad.right);
    const y = (amount) => height - pad.bottom - amount / maxAmount * (height - pad.top - pad.bottom);
    const base = y(0);

    function area(points, edge, colour, fill) {
      if (!points.length) return;
      ctx.beginPath();
      ctx.moveTo(x(points[0][0]), base);
      let previous = 0;
      for (const [price, amount] of points) {
        ctx.lineTo(x(price), y(previous));
        ctx.lineTo(x(price), y(amount));
        previous = amount;
      }
      ctx.lineTo(x(edge), y(previous));
      ctx.lineTo(x(edge), base);
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
      ctx.strokeStyle = colour;
      ctx.lineWidth = 1.5;
      ctx.stroke();
    }
    area(bidPoints, low, style.getPropertyValue("--bid").trim(), style.getPropertyValue("--bid-soft").trim());
    area(askPoints, high, style.getPropertyValue("--ask").trim(), style.getPropertyValue("--ask-soft").trim());

    ctx.fillStyle = style.getPropertyValue("--muted").trim();
    ctx.strokeStyle = style.getPropertyValue("--line").trim();
    ctx.font = "11px sans-serif";
    ctx.beginPath();
    ctx.moveTo(pad.left, base + 0.5);
    ctx.lineTo(width - pad.right, base + 0.5);
    ctx.stroke();
    for (let i = 0; i <= 4; i++) {
      const price = low + (high - low) * i / 4;
      const label = shortNumber(price);
      const labelWidth = ctx.measureText(label).width;
      const left = Math.max(2, Math.min(x(price) - labelWidth / 2, width - pad.right - labelWidth));
      ctx.fillText(label, left, height - 6);
      const amount = maxAmount * i / 4;
      ctx.fillText(shortNumber(amount), width - pad.right + 6, y(amount) + 4);
    }
  }

  // -- trades ----------------------------------------------------------------------------------

  function renderTrades(fresh) {
    const body = $("trades");
    body.replaceChildren();
    for (const trade of state.trades) {
      const tr = document.createElement("tr");
      tr.className = trade.type + (fresh.has(trade.id) ? " fresh" : "");
      tr.dataset.id = trade.id;
      const time = new Date(trade.time * 1000).toLocaleTimeString([], { hour12: false });
      for (const text of [time, formatDecimal(trade.price), formatDecimal(trade.amount)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  // -- candles ---------------------------------------------------------------------------------

  let chart = null;
  let candles = null;
  let volumes = null;

  function makeChart() {
    if (!window.LightweightCharts) {
      state.errors.push("LightweightCharts did not load");
      return;
    }
    const LW = window.LightweightCharts;
    const style = getComputedStyle(document.documentElement);
    chart = LW.createChart($("kline-chart"), {
      autoSize: true,
      layout: { background: { color: style.getPropertyValue("--panel").trim() },
                textColor: style.getPropertyValue("--muted").trim() },
      grid: { vertLines: { color: "#1e2733" }, horzLines: { color: "#1e2733" } },
      timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#243041",
                   rightOffset: 6, barSpacing: 12 },
      rightPriceScale: { borderColor: "#243041" },
    });
    candles = chart.addSeries(LW.CandlestickSeries, {
      upColor: "#26a69a", downColor: "#ef5350", borderVisible: false,
      wickUpColor: "#26a69a", wickDownColor: "#ef5350",
    });
    volumes = chart.addSeries(LW.HistogramSeries, {
      priceFormat: { type: "volume" }, priceScaleId: "volume", color: "rgba(125, 138, 154, 0.4)",
      lastValueVisible: false, priceLineVisible: false,
    });
    chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  }

  function toBar(row) {
    // [time, open, close, high, low, volume, deal, market].  A market's very first bucket
    // opens at "0" (open and low "0": marketprice had no previous price, as in the original):
    // drawn from its close instead of from zero.
    let open = Number(row[1]);
    const close = Number(row[2]);
    const high = Number(row[3]);
    let low = Number(row[4]);
    if (open === 0 && close > 0) open = close;
    if (low === 0 && high > 0) low = Math.min(open, close);
    return {
      candle: { time: row[0], open: open, close: close, high: high, low: low },
      volume: { time: row[0], value: Number(row[5]),
                color: Number(row[2]) >= Number(row[1]) ? "rgba(38,166,154,0.4)" : "rgba(239,83,80,0.4)" },
    };
  }

  async function loadCandles() {
    const interval = state.interval;
    const now = Math.floor(Date.now() / 1000);
    const rows = await request("kline.query", [MARKET, Math.max(1, now - interval * 300), now, interval]);
    if (interval !== state.interval) return;  // changed meanwhile
    state.candles = rows.length;
    state.lastLoaded = rows.length ? rows[rows.length - 1][0] : 0;
    if (candles) {
      const bars = rows.map(toBar);
      candles.setData(bars.map((b) => b.candle));
      volumes.setData(bars.map((b) => b.volume));
      chart.timeScale().scrollToRealTime();
    }
    await request("kline.subscribe", [MARKET, interval]);
  }

  function onKline(rows) {
    state.updates.kline++;
    if (!candles) return;
    for (const row of rows) {
      const bar = toBar(row);
      try {
        candles.update(bar.candle);
        volumes.update(bar.volume);
      } catch (e) {
        // an older bar than the last shown (clock skew): reload everything
        loadCandles().catch((err) => state.errors.push(String(err)));
        return;
      }
    }
    if (rows.length) {
      const last = rows[rows.length - 1][0];
      if (last !== state.lastCandle) {
        state.lastCandle = last;
        state.candles += state.candles === 0 || last > state.lastLoaded ? 1 : 0;
        state.lastLoaded = Math.max(state.lastLoaded || 0, last);
      }
    }
  }

  // -- start -----------------------------------------------------------------------------------

  const select = $("interval");
  if (!Array.from(select.options).some((o) => Number(o.value) === state.interval)) {
    const option = document.createElement("option");
    option.value = String(state.interval);
    option.textContent = state.interval + "s";
    select.appendChild(option);
  }
  select.value = String(state.interval);
  select.addEventListener("change", () => {
    state.interval = Number(select.value);
    params.set("interval", select.value);
    history.replaceState(null, "", location.pathname + "?" + params.toString());
    loadCandles().catch((e) => state.errors.push(String(e)));
  });
  window.addEventListener("resize", drawDepth);
  window.addEventListener("error", (e) => state.errors.push(String(e.message)));

  makeChart();
  renderBook();
  drawDepth();
  connect();
})();
