"""The matching process: the matchengine service wired to what surrounds it.

Why a package of its own: the matchengine package (engine, service, operation log) depends on
neither the bus nor the history, while the bus and the history use its order/deal model.  What
connects them -- the bus publisher as a sink, the history follower (a replica writing history
rows), the operator console, the gauges and the standalone process that composes all of these --
lives here, above all three, so the package graph has no cycle.
"""
