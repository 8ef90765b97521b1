"""marketprice: k-lines, last price, market status and recent deals (rpc.md 6, engine.md 16)."""
