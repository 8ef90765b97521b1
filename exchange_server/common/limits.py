"""Documented bounds on answers, shared by the services that enforce them and the API
description that states them (one fact, one place; neither side imports the other)."""

from __future__ import annotations

#: Most rows one market.kline answers: the newest ones of the range (two weeks of one-minute
#: candles; a week's, 10,081 rows with both partial ends, is answered whole).
KLINE_MAX_ROWS = 20160
