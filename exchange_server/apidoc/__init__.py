"""The API documentation builder: docs/api/*.md and the client's typed methods, generated from
the runtime API description (:mod:`exchange_server.api`), recorded examples, and the check that
the servers serve exactly what is documented.  Nothing at run time imports this package."""
