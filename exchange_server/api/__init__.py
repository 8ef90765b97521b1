"""The runtime description of the API: every HTTP method, WebSocket method and push, documented.

Why a package apart from :mod:`exchange_server.apidoc`: the Python client (result decoding,
``exchange-server call``) and accesshttp's pages (``GET /openrpc.json``, the index) read this
description at run time, while the documentation builder also needs the servers themselves
(to check that everything they serve is documented).  Keeping the description here, depending
only on :mod:`exchange_server.common`, lets the client and the gateway use it without
importing the builder or the servers.

Adding a method: append a :class:`~exchange_server.api.model.Method` to ``HTTP_METHODS``
(``http_methods.py``) or ``WS_METHODS`` / ``WS_PUSHES`` (``ws_methods.py``), run
``python -m exchange_server.apidoc.examples`` (records a real call into
``docs/api/examples.json``; add the call to its session) and
``python -m exchange_server.apidoc.build``.  A method's own error codes (10 and up) are
declared once in :mod:`exchange_server.common.errors` (a ``MethodErrors`` class listed in
``METHOD_ERRORS``): the server raises them and the entry here lists ``*errors_of(name)``.
"""
