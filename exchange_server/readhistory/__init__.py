"""readhistory: the read-only history query service (rpc.md section 5)."""
