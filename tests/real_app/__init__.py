"""A reports site built the way a real app is, on flask-asyncstate.

An app factory, a ``reports`` blueprint, templates extending a layout that loads
the site's own jQuery and jQuery plugin, Flask-Login (sign-in by name), Flask-WTF's
``CSRFProtect`` on everything, Flask-Session on Redis and the job store on the same
Redis. ``POST /reports/export`` starts an export job and redirects to
``/reports/<token>``, whose widget shows the download link when the job is done.
The operator's page ``/asyncstate/admin`` is for the user named "admin".

Settings come from the environment (``SECRET_KEY``, ``REDIS_URL``, ``REPORTS_STEPS``,
``REPORTS_STEP_DELAY``) or ``create_app(config)``. Serve it with
``gunicorn -w 2 -k gthread 'real_app.wsgi:app'`` from ``tests/``.
"""

from __future__ import annotations

import os
from typing import Any

import redis
import xstatic.pkg.jquery
from flask import Flask, Response, redirect, send_from_directory, url_for

from . import auth, reports
from .extensions import asyncstate, csrf, login_manager, server_session

__all__ = ["asyncstate", "create_app"]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY"),
        REDIS_URL=os.environ.get("REDIS_URL"),
        REPORTS_STEPS=int(os.environ.get("REPORTS_STEPS", "50")),
        REPORTS_STEP_DELAY=float(os.environ.get("REPORTS_STEP_DELAY", "0.1")),
        SESSION_TYPE="redis",
        SESSION_PERMANENT=False,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
    )
    app.config.update(config or {})
    if not app.config["SECRET_KEY"]:
        raise RuntimeError("set SECRET_KEY (the same value on every instance)")
    if not app.config["REDIS_URL"]:
        raise RuntimeError("set REDIS_URL: sessions and jobs are shared through Redis")
    app.config.setdefault("SESSION_REDIS", redis.Redis.from_url(app.config["REDIS_URL"]))
    app.config.setdefault("ASYNCSTATE_REDIS_URL", app.config["REDIS_URL"])

    # In no particular order, as in many apps: the extensions cope with it.
    asyncstate.init_app(app)
    server_session.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"

    app.register_blueprint(auth.bp)
    app.register_blueprint(reports.bp)

    @app.get("/")
    def home() -> Response:
        return redirect(url_for("reports.index"))

    @app.get("/vendor/jquery.js")
    def vendor_jquery() -> Response:
        """The site's own copy of jQuery (what its other pages and plugins use)."""
        return send_from_directory(xstatic.pkg.jquery.BASE_DIR, "jquery.min.js", max_age=3600)

    return app
