"""The apps the benchmarks run in other processes: under gunicorn, and on RQ and Celery workers.

Under gunicorn (``harness.Gunicorn(log_dir, "_apps:<factory>()")``), each with
``GET /`` (the readiness check) and ``POST /bench/start?seconds=S[&jobs=J&period=P]``,
which starts J (default 1, at most 4) ``bench_ticker`` jobs bound to the
session, as any ``start()`` in a request is: each calls
``job.progress(i, message=<time.time()>)`` every P s (default 0.1) until
cancelled, ``POST /bench/stop`` or S s (at most 600), and answers
``{"token", "job_id", "tokens"}``:

- :func:`throughput_app` (``throughput.py``): ``example_app.create_app()`` with
  ``REDIS_URL`` set (jobs and Flask-Session sessions in Redis); ``/bench/start``
  is exempt from the example's CSRF check (the load generator has no page), also
  writes the job's document to a plain Redis string and answers a
  ``csrf_token`` for the cancel that ends the run; ``GET /bench/bare/<job_id>``
  is the baseline of ``/asyncstate/progress``: the session loaded, one Redis
  ``GET``, the stored owner checked against the session's, the JSON returned as is.
- :func:`topology_app` (``topologies.py``): jobs on the single server
  (``BENCH_SESSIONS_URL``) or, with ``BENCH_CLUSTER_NODES``
  (``host:port,...``), on a ``RedisCluster``; sessions on the single server in
  both (Flask-Session's Redis backend takes no ``RedisCluster``), their
  connections named :data:`SESSIONS_CLIENT_NAME`. No Flask-WTF: a cancel needs
  ``X-Requested-With`` only.
- :func:`streams_app` (``growth.py``): one gevent worker holding many
  ``/events`` streams; jobs in Redis (``BENCH_GROWTH_REDIS_URL``) through a
  ``BlockingConnectionPool`` of ``BENCH_GROWTH_POOL`` connections, as
  ``docs/deployment.rst`` advises for gevent; Flask's cookie sessions (every
  Redis command counted is the extension's); ``ASYNCSTATE_MAX_STREAMS`` and
  ``max_streams_per_owner`` = ``BENCH_GROWTH_MAX_STREAMS``, ``sse_max_age``
  300 s so no stream reconnects during a measurement; ``GET /bench/streams``
  answers ``{"open", "watched"}``.

On workers (``workers.py``): :func:`worker_app` builds the tracked jobs' app
(executor ``rq`` or ``celery``); worker processes find its settings in the
environment (``BW_REDIS_URL``, ``BW_PREFIX``, ``BW_EXECUTOR``, ``BW_QUEUE``) and
run ``flask --app "_apps:worker_app()" asyncstate worker --queue Q [--simple]`` or
``celery -A _apps:celery_app worker``. Its jobs do what ``_alt_jobs.py``'s bare
ones do and answer the same way.

Jobs that run again (``again.py``): :func:`again_app` is the same kind of app with one
``resumable=True`` job, ``bench_again_hold`` (what ``_alt_jobs.again_hold`` does), and
the heartbeat interval ``BW_HEARTBEAT``; on the thread pool (an instance in a process of
the bench's), or on workers (``flask --app "_apps:again_app()" asyncstate worker``,
``celery -A _apps:again_celery_app worker``). A separate app, so ``workers.py``'s
writers do not look for due jobs.

Bench only: nothing here is part of the library or the example.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import harness
import redis
from _alt_jobs import JOB_LIMIT, again_hold, bare_trivial, gate, make_celery, reply
from flask import Flask, Response, abort, request

#: Longest a bench job may run (it is cancelled or stopped when the benchmark ends).
MAX_SECONDS = 600.0
#: ``CLIENT SETNAME`` of the sessions' connections (topologies.py tells them from the store's).
SESSIONS_CLIENT_NAME = "bench-sessions"
BARE_PREFIX = "bench:bare:"


class QuietCookieWarning(logging.Filter):
    """Drops the library's one-off note that an app uses Flask's cookie session (on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "cookie session" not in record.getMessage()


def serve_tickers(
    app: Flask,
    ext: harness.AsyncState,
    index: bool = True,
    started: Callable[[Any], dict[str, Any]] | None = None,
) -> Callable[..., Any]:
    """``POST /bench/start``, ``POST /bench/stop`` (and ``GET /``) with the ``bench_ticker`` job;
    ``started(first_handle)`` adds to the start's answer. Returns the start view."""
    stop = threading.Event()  # a gevent Event under the gevent worker (patched threading)

    @ext.job(name="bench_ticker")
    def ticker(job: harness.JobContext, period: float, seconds: float) -> dict[str, int]:
        """A progress call every ``period`` s, its wall-clock time in the message."""
        deadline = time.monotonic() + min(seconds, MAX_SECONDS)
        step = 0
        while time.monotonic() < deadline and not stop.is_set():
            step += 1
            job.progress(step, message=f"{time.time():.6f}")
            if job.cancelled.wait(period):
                break
        return {"steps": step}

    if index:
        app.add_url_rule("/", "index", lambda: "ok")

    @app.post("/bench/start")
    def bench_start() -> dict[str, Any]:
        jobs = max(1, min(int(request.args.get("jobs", 1)), 4))  # the session's quota is 5
        period = max(0.01, float(request.args.get("period", 0.1)))
        seconds = min(float(request.args.get("seconds", 60)), MAX_SECONDS)
        stop.clear()
        handles = [ticker.start(period, seconds) for _ in range(jobs)]
        first = handles[0]
        extra = started(first) if started is not None else {}
        return {
            "token": first.token,
            "job_id": first.id,
            "tokens": [h.token for h in handles],
            **extra,
        }

    @app.post("/bench/stop")
    def bench_stop() -> dict[str, bool]:
        stop.set()
        return {"stopped": True}

    return bench_start


def throughput_app() -> Flask:
    if not os.environ.get("REDIS_URL"):
        raise RuntimeError("_apps.throughput_app needs REDIS_URL (throughput.py sets it)")
    from flask_wtf.csrf import generate_csrf

    from example_app import asyncstate, csrf
    from example_app import create_app as create_example_app

    app = create_example_app()
    bare_redis = redis.Redis.from_url(os.environ["REDIS_URL"])

    def bare_copy(handle: Any) -> dict[str, str]:
        """The document, with its owner, as a plain string for /bench/bare; a CSRF token for
        the cancel that ends the run."""
        doc = dict(handle.status() or {}, owner=harness.request_owner(create=False))
        bare_redis.set(BARE_PREFIX + handle.id, json.dumps(doc), ex=int(MAX_SECONDS) + 60)
        return {"csrf_token": generate_csrf()}

    # the load generator has no page to take a CSRF token from
    csrf.exempt(serve_tickers(app, asyncstate, index=False, started=bare_copy))

    @app.get("/bench/bare/<job_id>")
    def bench_bare(job_id: str) -> Response:
        owner = harness.request_owner(create=False)  # the same session check as /progress
        raw = bare_redis.get(BARE_PREFIX + job_id)
        if raw is None or owner is None or json.loads(raw).get("owner") != owner:
            abort(404)
        return Response(raw, mimetype="application/json", headers={"Cache-Control": "no-store"})

    return app


def store_client(sessions_url: str, cluster_nodes: list[tuple[str, int]] | None) -> Any:
    """The job store's client: the single server, or a ``RedisCluster`` on ``cluster_nodes``."""
    if cluster_nodes:
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes])
    return redis.Redis.from_url(sessions_url)


def build_topology_app(
    sessions_url: str, cluster_nodes: list[tuple[str, int]] | None
) -> tuple[Flask, harness.AsyncState]:
    """The app and its extension: jobs on the single server or the cluster, sessions on the former."""
    from flask_session import Session

    app, ext = harness.make_app(
        "bench-topology",
        redis_client=store_client(sessions_url, cluster_nodes),
        secret_key=os.environ.get("SECRET_KEY") or harness.SECRET,
    )
    sessions = redis.BlockingConnectionPool.from_url(
        sessions_url, max_connections=100, timeout=5, client_name=SESSIONS_CLIENT_NAME
    )
    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis(connection_pool=sessions),
        SESSION_PERMANENT=False,
        SESSION_KEY_PREFIX=f"{harness.KEY_PREFIX}session:",
    )
    Session(app)
    serve_tickers(app, ext)
    return app, ext


def topology_app() -> Flask:
    sessions_url = os.environ.get("BENCH_SESSIONS_URL")
    if not sessions_url:
        raise RuntimeError("_apps.topology_app needs BENCH_SESSIONS_URL (topologies.py sets it)")
    nodes = []
    for item in filter(None, os.environ.get("BENCH_CLUSTER_NODES", "").split(",")):
        host, _, port = item.strip().rpartition(":")
        nodes.append((host, int(port)))
    return build_topology_app(sessions_url, nodes or None)[0]


def streams_app() -> Flask:
    logging.getLogger("flask_asyncstate").addFilter(QuietCookieWarning())
    url = os.environ.get("BENCH_GROWTH_REDIS_URL")
    if not url:
        raise RuntimeError("_apps.streams_app needs BENCH_GROWTH_REDIS_URL (growth.py sets it)")
    streams = int(os.environ.get("BENCH_GROWTH_MAX_STREAMS", "100"))
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=int(os.environ.get("BENCH_GROWTH_POOL", "100")),
        timeout=5,
        socket_connect_timeout=2,
        socket_timeout=5,
    )
    app, ext = harness.make_app(
        "bench-growth-streams",
        redis_client=redis.Redis(connection_pool=pool),
        secret_key=os.environ.get("SECRET_KEY") or harness.SECRET,
        tuning={"max_streams_per_owner": streams, "sse_max_age": 300.0},
        ASYNCSTATE_MAX_STREAMS=streams,
    )
    serve_tickers(app, ext)

    app.add_url_rule("/bench/streams", "bench_streams", lambda: harness.streams_open(ext))

    return app


# -- on RQ and Celery workers ------------------------------------------------------------------


def worker_app(
    url: str | None = None,
    prefix: str | None = None,
    executor: str | None = None,
    queue: str | None = None,
) -> Flask:
    """The tracked jobs' app; arguments default to the ``BW_*`` environment (workers).

    Everything (flush and heartbeat intervals included) at the library's defaults,
    except ``ASYNCSTATE_MAX_QUEUED``: the bench queues thousands of jobs at once.
    """
    url = url or os.environ["BW_REDIS_URL"]
    prefix = prefix or os.environ["BW_PREFIX"]
    executor = executor or os.environ["BW_EXECUTOR"]
    queue = queue or os.environ.get("BW_QUEUE", "asyncstate")
    celery = make_celery(url, queue, "bench_workers") if executor == "celery" else None
    app, ext = harness.make_app(
        __name__,
        redis_url=url,
        key_prefix=prefix,
        celery=celery,
        ASYNCSTATE_EXECUTOR=executor,
        ASYNCSTATE_RQ_QUEUE=queue,
        ASYNCSTATE_MAX_QUEUED=1_000_000,
    )

    @ext.job(name="bench_wait_cancel")
    def wait_cancel(job: harness.JobContext, reply_key: str) -> str:
        """Say "ready" once this process's cancel listener is subscribed, then wait on the Event."""
        harness.wait_listening(ext)
        reply(reply_key, "ready", os.getpid())
        seen = job.cancelled.wait(JOB_LIMIT)
        reply(reply_key, "seen", time.monotonic(), seen)
        return "stopped"

    @ext.job(name="bench_trivial")
    def trivial(job: harness.JobContext, counter: str) -> None:
        bare_trivial(counter)

    @ext.job(name="bench_gate")
    def gate_job(job: harness.JobContext, release_key: str, reply_key: str) -> None:
        """Holds this worker process until released (our RQ workers run tracked jobs only)."""
        gate(release_key, reply_key)

    @ext.job(name="bench_progress_loop")
    def progress_loop(job: harness.JobContext, n: int) -> float:
        """µs per call of ``n`` ``job.progress(i)`` calls, timed here (GC paused)."""
        progress = job.progress

        def body() -> None:
            for i in range(n):
                progress(i)

        return harness.timed(body) / n * 1e6

    return app


def again_app(
    url: str | None = None,
    prefix: str | None = None,
    executor: str | None = None,
    queue: str | None = None,
    heartbeat: float | None = None,
) -> Flask:
    """The app of ``again.py``'s deaths: ``bench_again_hold``, a ``resumable=True`` job,
    on ``executor`` (``threads``, ``rq`` or ``celery``); arguments default to the ``BW_*``
    environment (workers), the heartbeat interval to ``BW_HEARTBEAT``."""
    url = url or os.environ["BW_REDIS_URL"]
    prefix = prefix or os.environ["BW_PREFIX"]
    executor = executor or os.environ["BW_EXECUTOR"]
    queue = queue or os.environ.get("BW_QUEUE", "asyncstate")
    heartbeat = heartbeat or float(os.environ["BW_HEARTBEAT"])
    celery = make_celery(url, queue, "bench_again") if executor == "celery" else None
    app, ext = harness.make_app(
        __name__,
        redis_url=url,
        key_prefix=prefix,
        celery=celery,
        ASYNCSTATE_EXECUTOR=executor,
        ASYNCSTATE_RQ_QUEUE=queue,
        ASYNCSTATE_HEARTBEAT_INTERVAL=heartbeat,
    )

    @ext.job(name="bench_again_hold", resumable=True)
    def hold(job: harness.JobContext, reply_key: str, release_key: str) -> None:
        """``_alt_jobs.again_hold``, its steps through ``job.iter`` (a resumed run goes on
        from its cursor), the attempt in its "started" reply."""
        again_hold(reply_key, release_key, job.attempt, steps=job.iter)

    return app


_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """``celery_app`` for ``celery -A _apps:celery_app`` (``again_celery_app``: of
    :func:`again_app`): built on first use from the environment, so the bench process can
    import the module without it. The Flask app is kept too: the extension holds its
    per-app state only weakly for the Celery app."""
    if name not in ("celery_app", "again_celery_app"):
        raise AttributeError(name)
    if name not in _built:
        app = worker_app() if name == "celery_app" else again_app()
        _built[name.replace("celery_app", "app")] = app
        _built[name] = harness.celery_of(app)
    return _built[name]
