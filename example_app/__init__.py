"""Example: a product import like the one in Smartstore's docs, with a progress bar and cancel.

Run it with ``flask --app example_app run``. With no configuration it uses the
in-memory job store and a file-system session (Flask-Session + cachelib).
Set ``REDIS_URL`` to put both jobs and sessions in Redis, and ``SECRET_KEY``
(the same value everywhere) to run several instances that share jobs.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from dataclasses import dataclass

from flask import Flask, flash, redirect, render_template, request, url_for
from flask_session import Session

from flask_asyncstate import AsyncState, JobContext, QuotaExceeded

asyncstate = AsyncState()


@dataclass
class ImportState:
    """Typed state the import keeps beside its progress (see the state API)."""

    imported: int = 0
    skipped: int = 0


def generate_catalogue(count: int) -> list[dict[str, object]]:
    """A made-up product catalogue, so the example needs no files."""
    return [
        {"sku": f"SKU-{i:05d}", "name": f"Product {i}", "price": round(1 + (i * 37 % 9900) / 100, 2)}
        for i in range(1, count + 1)
    ]


@asyncstate.job(name="import_products", state=ImportState)
def import_products(job: JobContext, count: int, batch: int, pause: float) -> dict[str, int]:
    """Import ``count`` products in batches, reporting progress and honouring cancel."""
    rows = generate_catalogue(count)
    job.progress(0, total=count, message=f"0 of {count:,} products")
    for start in range(0, count, batch):
        job.check_cancelled()
        chunk = rows[start : start + batch]
        time.sleep(pause)  # stands in for the database writes of one batch
        skipped = sum(1 for row in chunk if float(row["price"]) <= 1.0)  # type: ignore[arg-type]

        def tally(state: ImportState, imported: int = len(chunk) - skipped, skip: int = skipped) -> None:
            state.imported += imported
            state.skipped += skip

        if job.state is not None:
            job.state.update(tally)
        done = start + len(chunk)
        job.progress(done, total=count, message=f"{done:,} of {count:,} products")
    return {"imported": count}


def create_app(config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_hex(32),
        EXAMPLE_PRODUCTS=int(os.environ.get("EXAMPLE_PRODUCTS", "5000")),
        EXAMPLE_BATCH=int(os.environ.get("EXAMPLE_BATCH", "100")),
        EXAMPLE_PAUSE=float(os.environ.get("EXAMPLE_PAUSE", "0.1")),
        SESSION_PERMANENT=False,
    )
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        import redis

        app.config.update(
            ASYNCSTATE_REDIS_URL=redis_url,
            SESSION_TYPE="redis",
            SESSION_REDIS=redis.Redis.from_url(redis_url),
        )
    else:
        from cachelib import FileSystemCache

        session_dir = os.environ.get("SESSION_DIR") or os.path.join(
            tempfile.gettempdir(), "asyncstate-example-sessions"
        )
        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(session_dir))
    app.config.from_prefixed_env()  # e.g. FLASK_ASYNCSTATE_MAX_WORKERS=8
    app.config.update(config or {})
    Session(app)
    asyncstate.init_app(app)

    @app.get("/")
    def index() -> str:
        # mode "auto": push updates over Server-Sent Events, falling back to polling
        mode = "poll" if request.args.get("mode") == "poll" else "auto"
        return render_template("index.html", token=request.args.get("token"), mode=mode)

    @app.post("/import")
    def start_import():  # type: ignore[no-untyped-def]
        try:
            handle = import_products.start(
                app.config["EXAMPLE_PRODUCTS"], app.config["EXAMPLE_BATCH"], app.config["EXAMPLE_PAUSE"]
            )
        except QuotaExceeded as exc:
            flash(str(exc))
            return redirect(url_for("index"))
        if request.accept_mimetypes.best == "application/json":
            return {"token": handle.token}, 202
        return redirect(url_for("index", token=handle.token))

    @app.get("/my-jobs")
    def my_jobs() -> str:
        return render_template("jobs.html", jobs=asyncstate.jobs())

    return app
