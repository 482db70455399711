"""The app bench/throughput.py runs under gunicorn: the example app plus two bench-only routes.

``create_app()`` is ``example_app.create_app()`` (with ``REDIS_URL`` set: jobs in
Redis, sessions in Redis through Flask-Session, the deployment the README
describes), plus:

- ``POST /bench/start?seconds=S``: starts ``bench_watch``, a job that reports
  progress every 0.1 s until cancelled (or ``S`` seconds pass, at most 600),
  bound to the session as any ``start()`` in a request is; writes the same
  progress document to a plain Redis string for the bare route; answers
  ``{"token": ..., "job_id": ..., "csrf_token": ...}`` (exempt from the example's
  CSRF check; the token is for the cancel that ends the run).
- ``GET /bench/bare/<job_id>``: the baseline the progress route is compared
  with. Flask-Session loads the session (as for every request), one Redis
  ``GET``, the document's owner is checked against the session's, and the
  stored JSON is returned as is with ``Cache-Control: no-store``.

Bench only: nothing here is part of the library or the example.
"""

from __future__ import annotations

import json
import os
import time

import _common  # noqa: F401  # puts the checkout on sys.path: example_app and flask_asyncstate
import redis
from flask import Flask, Response, abort, request
from flask_wtf.csrf import generate_csrf

from example_app import asyncstate, csrf
from example_app import create_app as create_example_app
from flask_asyncstate import JobContext, owners

#: Longest a bench job may run (it is cancelled when the benchmark ends).
MAX_SECONDS = 600.0
BARE_PREFIX = "bench:bare:"


@asyncstate.job(name="bench_watch")
def bench_watch(job: JobContext, seconds: float) -> dict[str, int]:
    """A job being watched: a progress report every 0.1 s until cancelled or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    step = 0
    while time.monotonic() < deadline:
        step += 1
        job.progress(step, message=f"step {step:,}")
        if job.cancelled.wait(0.1):
            break
    return {"steps": step}


def create_app() -> Flask:
    if not os.environ.get("REDIS_URL"):
        raise RuntimeError("bench/_throughput_app.py needs REDIS_URL (throughput.py sets it)")
    app = create_example_app()
    bare_redis = redis.Redis.from_url(os.environ["REDIS_URL"])

    @app.post("/bench/start")
    @csrf.exempt  # the load generator has no page to take a CSRF token from
    def bench_start() -> dict[str, str]:
        seconds = min(float(request.args.get("seconds", 60)), MAX_SECONDS)
        handle = bench_watch.start(seconds)
        doc = dict(handle.status() or {}, owner=owners.request_owner(create=False))
        bare_redis.set(BARE_PREFIX + handle.id, json.dumps(doc), ex=int(MAX_SECONDS) + 60)
        return {"token": handle.token, "job_id": handle.id, "csrf_token": generate_csrf()}

    @app.get("/bench/bare/<job_id>")
    def bench_bare(job_id: str) -> Response:
        owner = owners.request_owner(create=False)  # the same session check as /progress
        raw = bare_redis.get(BARE_PREFIX + job_id)
        if raw is None or owner is None or json.loads(raw).get("owner") != owner:
            abort(404)
        return Response(raw, mimetype="application/json", headers={"Cache-Control": "no-store"})

    return app
