"""The REST service's routes (Flask): a thin shell over :class:`fastsnap.service.service.Service`.

One blueprint per resource group (``snapshots``, ``operator``, ``stores``, ``openapi``), one for who calls
(``identity``: the role check before every request) and one for the error answers (``failures``). A handler
reaches the Service through the app (:func:`fastsnap.service.routes.current.service`), not through a closure, so
each group is a module of its own that reads on its own; this module only assembles them."""

from __future__ import annotations

from flask import Flask

from fastsnap.service.routes import failures, identity, openapi, operator, snapshots, stores
from fastsnap.service.routes.current import install
from fastsnap.service.service import Service


def create_app(svc: Service) -> Flask:
    app = Flask("fastsnap")
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    install(app, svc)
    for module in (identity, failures, openapi, operator, stores, snapshots):
        app.register_blueprint(module.bp)
    return app


__all__ = ["create_app"]
