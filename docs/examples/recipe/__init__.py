"""Flask-Login, Flask-WTF and an app factory: the recipe of docs/recipe.rst.

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/recipe run`` and open
http://127.0.0.1:5000; sign in as alice or bob. With ``FLASK_REDIS_URL`` set, the
sessions and the jobs live in that Redis, shared by every instance and worker.
"""

import os

from cachelib import SimpleCache
from flask import Flask, redirect, url_for

from . import auth, exports
from .extensions import asyncstate, csrf, login_manager, server_session

__all__ = ["asyncstate", "create_app"]


def create_app(config=None):
    app = Flask(__name__)
    app.config.update(
        SESSION_TYPE="cachelib",  # server-side sessions, in this process (Redis: below)
        SESSION_CACHELIB=SimpleCache(),
        SESSION_PERMANENT=False,
        SESSION_COOKIE_SAMESITE="Lax",
        ASYNCSTATE_KEEP_FINISHED=86400,  # a finished export stays a day, not 15 minutes
        EXPORT_ROWS=500,
        EXPORT_PAUSE=0.01,  # seconds per row of made-up work
    )
    app.config.from_prefixed_env()  # FLASK_SECRET_KEY, FLASK_REDIS_URL...
    app.config.update(config or {})
    if app.config.get("REDIS_URL"):  # several instances: sessions and jobs in Redis
        import redis

        app.config.update(
            SESSION_TYPE="redis",
            SESSION_REDIS=redis.Redis.from_url(app.config["REDIS_URL"]),
            ASYNCSTATE_REDIS_URL=app.config["REDIS_URL"],
        )
    app.config.setdefault("EXPORT_DIR", os.path.join(app.instance_path, "exports"))
    os.makedirs(app.config["EXPORT_DIR"], exist_ok=True)

    csrf.init_app(app)
    server_session.init_app(app)
    login_manager.init_app(app)
    asyncstate.init_app(app)  # after the others or before: any order works

    app.register_blueprint(auth.bp)
    app.register_blueprint(exports.bp)
    app.add_url_rule("/", "home", lambda: redirect(url_for("exports.index")))
    return app
