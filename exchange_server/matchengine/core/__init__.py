"""The matching engine's pure core: engine, market, balances, orders and events.

Why a folder of its own: replay rebuilds the state by feeding the logged commands into a fresh
engine, which only works if the engine is a deterministic function of its inputs.  Everything in
here imports only pure standard-library modules, ``sortedcontainers``, itself and
``common.decimals`` / ``common.errors`` (tests/unit/test_core_purity.py enforces it): no I/O, clock,
randomness, logging or ambient decimal context.  Wire parsing and the config file live outside
(``matchengine/methods.py``, ``matchengine/configured.py``).
"""
