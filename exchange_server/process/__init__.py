"""Process behaviour shared by every service (config.md 2).

* :mod:`.runner`: :func:`run_service`, the whole life of a service process
* :mod:`.lifecycle`: steps started in one order, stopped in the reverse (also after a failed start)
* :mod:`.daemon`: detaching and the watchdog that restarts a worker killed by a signal
* :mod:`.lock`: one instance per host and service (``/tmp/<name>.lock``)
* :mod:`.signals`: SIGTERM/SIGQUIT stop, SIGTTIN/SIGTTOU log level, SIGUSR1 reload flag
* :mod:`.logsetup`: the original's log files and flags; FATAL alerts by UDP
* :mod:`.monitor`: the health-probe listener
* :mod:`.settings`: the ``process``, ``log``, ``alert`` and ``monitor`` config blocks
"""

from typing import TYPE_CHECKING, Any

from exchange_server.process.lifecycle import StartupFailed

if TYPE_CHECKING:
    from exchange_server.process.runner import ManagedService, run_service

__all__ = ["ManagedService", "StartupFailed", "run_service"]


def __getattr__(name: str) -> Any:
    """``run_service`` and ``ManagedService`` on first use: the runner brings the status page,
    the monitor and MySQL's client, which ``exchange-server run`` (embedded mode, where
    :mod:`.settings` and :mod:`.lifecycle` are imported) never needs before its first order."""
    if name in ("ManagedService", "run_service"):
        from exchange_server.process import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
