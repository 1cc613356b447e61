"""``engine serve``: the HTTP server, one module per API dialect.

Imports point one way (docs/INTERNALS.md draws it)::

    cli ─▶ app ─▶ elasticsearch, tei, openai ─▶ wire ─▶ state ─▶ settings
                       │ (es_schemas)                   │
                       └──▶ engine.errors, engine.units, engine.config, engine.protocol

* :mod:`.app` wires the Starlette app: middleware (API key, body limit, product header, access log,
  request metrics), the error table and the routes of the three dialects.
* :mod:`.elasticsearch` (+ :mod:`.es_schemas`), :mod:`.tei`, :mod:`.openai`: each dialect's handlers
  and its request/response shapes.
* :mod:`.wire`: what every dialect does with a request (body, counts, running texts with metrics).
* :mod:`.state`: the registries (models, deployments typed as :class:`engine.protocol.DeploymentLike`,
  inference endpoints); :mod:`.settings`: the server's own settings; :mod:`.cli`: the ``serve`` verb.

Nothing is imported here, so ``engine.server.cli`` can be imported (to list the verb) without the web stack.
"""
