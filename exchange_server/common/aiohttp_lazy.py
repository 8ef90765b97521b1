"""aiohttp's server side first, its client side after the listeners.

Why: ``import aiohttp.web`` runs the ``aiohttp`` package's ``__init__``, which imports the whole
client side, and the client's connector builds two SSL contexts at import (each reads the
system's CA file).  ``exchange-server run`` needs only the server side before its first order
(the client is accessws's ``auth_url``/``sign_url`` caller), yet that client side was about a
third of the instructions its imports cost (bench/README.md, "Restart: start-up imports").

How: :func:`defer_client` puts a bare ``aiohttp`` package in ``sys.modules`` (its spec, path
and ``__version__``, nothing run), so importing ``aiohttp.web`` and the other server-side
submodules runs only those.  The first use of any other name of the package
(``aiohttp.ClientSession``, ``from aiohttp import WSCloseCode``) runs the real ``__init__`` in
it first (:func:`complete`), so what code sees is the package as a plain import makes it, just
later; ``exchange-server run`` completes it itself as its last start step, so a broken or
missing client dependency still fails the start, never a request.  Nothing is changed when
``aiohttp`` is already imported or its ``__init__`` does not start with its version.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import threading
from types import ModuleType

#: The first line of aiohttp's ``__init__`` (its submodule ``http`` imports ``__version__``
#: from the package while the bare package stands in).
VERSION_LINE = re.compile(rb'\A__version__ = "([^"\\]+)"\n')

#: Held while the real ``__init__`` runs: a second thread asking for a name waits for it, the
#: same thread (the ``__init__``'s own imports) sees the partial package as a plain import does.
_completing = threading.RLock()
_bare: ModuleType | None = None
#: What the completion raised, wherever it ran (a request's thread may run it before the start's
#: last step): :func:`check` raises it again, so that step fails the start all the same.
_failure: BaseException | None = None


def defer_client() -> bool:
    """Stand a bare ``aiohttp`` package in for the real one (True), unless it is imported
    already or does not look as expected (False: a later import is the ordinary one)."""
    global _bare
    if "aiohttp" in sys.modules:
        return False
    spec = importlib.util.find_spec("aiohttp")
    if spec is None or spec.origin is None or spec.loader is None \
            or spec.submodule_search_locations is None:
        return False
    try:
        with open(spec.origin, "rb") as source:
            found = VERSION_LINE.match(source.read(256))
    except OSError:
        return False
    if found is None:
        return False
    module = importlib.util.module_from_spec(spec)
    module.__dict__["__version__"] = found.group(1).decode()
    module.__dict__["__getattr__"] = _attribute
    _bare = module
    sys.modules["aiohttp"] = module
    return True


def is_deferred() -> bool:
    """The bare package stands in and its ``__init__`` has not run."""
    return _bare is not None and sys.modules.get("aiohttp") is _bare


def complete() -> None:
    """Run aiohttp's real ``__init__`` in the bare package (imports the client side), once;
    nothing when the package was imported the ordinary way.  Raises what that import raises."""
    global _bare, _failure
    with _completing:
        module = _bare
        if module is None or sys.modules.get("aiohttp") is not module:
            return
        spec = module.__spec__
        assert spec is not None and spec.loader is not None
        _bare = None  # the __init__'s own lookups now fail as in a partial package
        try:
            spec.loader.exec_module(module)
        except BaseException as error:
            # as after a failed plain import: no half-run package is left for the next import
            sys.modules.pop("aiohttp", None)
            _failure = error
            raise
        if module.__dict__.get("__getattr__") is _attribute:  # aiohttp 3.14 defines its own
            del module.__dict__["__getattr__"]


def check() -> None:
    """Raise what the completion raised, if it failed (nothing if it did not run or
    succeeded).  Why: the completion runs where the package is first asked for a client name,
    which may be a request before the start's last step; that step must fail all the same."""
    if _failure is not None:
        raise _failure


def _attribute(name: str) -> object:
    """The bare package's missing names: a submodule is imported (as ``from aiohttp import
    web`` does anyway), without the lock: a thread importing a submodule never waits for the
    completion, which may need that submodule.  Any other name completes the package first
    (or, when the completion runs in another thread, waits for it)."""
    if name.isidentifier() and importlib.util.find_spec(f"aiohttp.{name}") is not None:
        return importlib.import_module(f"aiohttp.{name}")
    complete()  # nothing when the calling thread is the one running the __init__
    module = sys.modules.get("aiohttp")
    if module is not None and name in module.__dict__:
        return module.__dict__[name]
    package_getattr = module.__dict__.get("__getattr__") if module is not None else None
    if package_getattr is not None and package_getattr is not _attribute:
        return package_getattr(name)  # the completed package's own
    raise AttributeError(f"partially initialized module 'aiohttp' has no attribute {name!r}")
