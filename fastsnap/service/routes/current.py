"""The Service of the app answering the current request: the blueprints' handlers are module-level functions, so
the Service rides on the app (``app.extensions``, Flask's place for it) rather than in a closure."""

from __future__ import annotations

from flask import Flask, current_app

from fastsnap.service.service import Service

KEY = "fastsnap"


def install(app: Flask, svc: Service) -> None:
    app.extensions[KEY] = svc


def service() -> Service:
    svc: Service = current_app.extensions[KEY]
    return svc
