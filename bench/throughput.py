"""Requests/s of ``GET /asyncstate/progress/<token>`` under gunicorn, against a bare route in the same app.

Against one redis-server on loopback:

- the app: ``_apps.throughput_app()``, the example app with ``REDIS_URL`` set
  (jobs and Flask-Session sessions in Redis), under ``gunicorn -w 2 -k gthread
  --threads 8 --reuse-port`` on a free loopback port;
- one job, started through ``/bench/start`` with a cookie jar (so the session
  holds it), reports progress every 0.1 s for the whole run, as a watched job;
- ours: ``GET /asyncstate/progress/<token>`` with that session's cookie (session
  load, token check, status read from Redis, JSON answer);
- bare: ``GET /bench/bare/<job_id>`` in the same app: session load, one Redis
  ``GET`` of the same document, its owner checked against the session, the
  stored JSON returned as is;
- the load: ``wrk -t1`` with ``--connections`` keep-alive connections (without
  wrk a Python client stands in, slower than the server, and the caption says
  so), ``--rounds`` runs of ``--duration`` s per route taking turns, after a 1 s
  warm-up each; a run whose connections are lopsided across the workers is
  restarted (``harness.load_run``). Every answer must be 200, or the run fails.

The table gives median requests/s, wrk's p50/p99 of the median run, and Redis
commands per request (``total_commands_processed`` over the run / requests;
commands inside Lua scripts count). The session costs both routes the same two
round trips (Flask-Session reads it, and with ``SESSION_REFRESH_EACH_REQUEST``
writes it back); ours then reads the document with one ``EVALSHA`` (a read
restarts the entry's expiry) and verifies the token.

Target: ours / bare >= 0.85x.

Then, in this process against the same server, where the difference goes: each
step of both routes timed alone inside one request context (the same session
cookie, ``--parts-calls`` calls, best of 5 batches, µs per call), so what ours
does beyond the bare route's session, ``GET`` and owner check is named and
measured: the read through the fail-fast breaker, the public document (internal
fields dropped, a dead instance's job read as lost, a finished one's expiry
restarted), the JSON answer, the hardened headers, the routing receiver and
the blueprint's guard hook.

    python bench/throughput.py           # 2 rounds x 10 s per route, then the steps (about 75 s)
    python bench/throughput.py --quick   # 1 round x 3 s (about 10 s)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from importlib.metadata import version
from typing import Any

import harness
import redis

TARGET = harness.Target("/progress requests/s, ours / bare", ">=", 0.85, "x")
FULL = {"duration": 10.0, "rounds": 2, "parts_calls": 2000}
QUICK = {"duration": 3.0, "rounds": 1, "parts_calls": 300}
ROUTES = ("ours", "bare")
LABELS = {
    "ours": "ours: `GET /asyncstate/progress/<token>`",
    "bare": "bare: `GET /bench/bare/<job_id>` (session + one Redis GET)",
}


def measure(
    server: harness.Gunicorn, client: redis.Redis, args: argparse.Namespace
) -> dict[str, list[harness.LoadRun]]:
    """Start the watched job, run the load on both routes taking turns, cancel the job."""
    seconds = 2 * harness.WARMUP + 2 * args.rounds * (args.duration + 2) + 30
    status, body, headers = harness.http_request(
        server.host, "POST", f"/bench/start?seconds={seconds:.0f}"
    )
    if status != 200:
        raise RuntimeError(f"/bench/start answered {status}: {body!r}")
    started = json.loads(body)
    cookie = harness.session_cookie(headers.get("Set-Cookie"))
    paths = {
        "ours": f"/asyncstate/progress/{started['token']}",
        "bare": f"/bench/bare/{started['job_id']}",
    }
    for name, path in paths.items():  # both answer 200 with this session's cookie
        status, body, _ = harness.http_request(server.host, "GET", path, {"Cookie": cookie})
        if status != 200:
            raise RuntimeError(f"{name} route answered {status}: {body!r}")
    for name in ROUTES:
        harness.load_run(server, paths[name], cookie, client, harness.WARMUP, args)
    runs: dict[str, list[harness.LoadRun]] = {name: [] for name in ROUTES}
    for i in range(args.rounds):
        for name in ROUTES if i % 2 == 0 else ROUTES[::-1]:
            run = harness.load_run(server, paths[name], cookie, client, args.duration, args)
            runs[name].append(run)
    status, body, _ = harness.http_request(server.host, "GET", paths["ours"], {"Cookie": cookie})
    if json.loads(body).get("status") != "running":
        raise RuntimeError(f"the watched job was not running at the end: {body!r}")
    headers = {"Cookie": cookie, "X-Requested-With": "XMLHttpRequest"}
    headers["X-CSRFToken"] = started["csrf_token"]
    status, body, _ = harness.http_request(
        server.host, "POST", f"/asyncstate/cancel/{started['token']}", headers
    )
    if status != 202:
        raise RuntimeError(f"cancel answered {status}: {body!r}")
    return runs


def parts(url: str, calls: int) -> list[tuple[str, str, float]]:
    """Each step of both routes timed alone in one request context: (route, step, µs)."""
    import timeit

    os.environ["REDIS_URL"] = url
    import _apps
    from flask import Flask

    from flask_asyncstate import appstate, security, views

    app: Flask = _apps.throughput_app()
    web = app.test_client()
    started = web.post("/bench/start?seconds=120").get_json()
    cookie = web.get_cookie("session")
    if cookie is None:
        raise RuntimeError("/bench/start set no session cookie")
    token, job_id = started["token"], started["job_id"]
    path = f"/asyncstate/progress/{token}"
    bare = redis.Redis.from_url(url)
    with app.test_request_context(path, headers={"Cookie": f"session={cookie.value}"}):
        app.preprocess_request()  # the session is open: the steps below are what follows
        found = appstate.get()
        key = found.records.job_key(job_id)
        owner = found.request_owner(create=False)
        doc = security.visible_job(found, token)[1]
        answer = views._json(doc)
        steps: list[tuple[str, str, Any]] = [
            (
                "ours",
                "the whole view (token, owner, document, JSON)",
                lambda: views.progress(token),
            ),
            ("ours", "  token signature", lambda: found.signer.unsign(token)),
            ("ours", "  owner of the request", lambda: found.request_owner(create=False)),
            (
                "ours",
                "  document read (HMGET through the breaker, decoded)",
                lambda: found.store.read_many([key], refresh=False),
            ),
            (
                "ours",
                "  the same and its public form (lost check, expiry)",
                lambda: found.records.status(job_id, internal=True, owner=owner),
            ),
            ("ours", "  JSON answer", lambda: views._json(doc)),
            (
                "ours",
                "headers of every answer (nosniff, Vary)",
                lambda: views.harden(answer),
            ),
            ("ours", "routing receiver (request_started)", lambda: views.answer_first(app)),
            ("ours", "blueprint guard hook", views.guarded),
            ("both", "a plain HMGET of the document", lambda: bare.hmget(key, "d", "c")),
            (
                "bare",
                "the whole view (owner, GET, decode, compare)",
                lambda: app.view_functions["bench_bare"](job_id),
            ),
            ("bare", "  GET", lambda: bare.get(_apps.BARE_PREFIX + job_id)),
        ]
        out = []
        for route, step, call in steps:
            call()
            best = min(timeit.repeat(call, number=calls, repeat=5)) / calls * 1e6
            out.append((route, step, best))
    web.post(
        f"/asyncstate/cancel/{token}",
        headers={"X-Requested-With": "XMLHttpRequest", "X-CSRFToken": started["csrf_token"]},
    )
    bare.close()
    return out


def main(argv: list[str] | None = None) -> None:
    sized = {**harness.LOAD_SIZED, "parts_calls": "calls per batch of each step timed alone"}
    found = harness.parser(__doc__, FULL, QUICK, sized)
    harness.add_load_options(found)
    args = harness.parse(found, argv, harness.LOAD_RANGES)
    report = harness.Report(__file__, args)
    args.client, client_note = harness.choose_client(args.client)
    log_dir = tempfile.mkdtemp(prefix="asyncstate-bench-gunicorn-")
    try:
        with harness.redis_server(args.redis_url) as server:
            client = redis.Redis.from_url(server.url)
            app = harness.Gunicorn(
                log_dir,
                "_apps:throughput_app()",
                env={"REDIS_URL": server.url},
                workers=args.workers,
                threads=args.threads,
                reuse_port=True,
                graceful_timeout=15.0,
            )
            with harness.serving(app):
                runs = measure(app, client, args)
            steps = parts(server.url, args.parts_calls)
            env = harness.environment(client)
            client.close()
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    rps = {name: harness.median([r.rps for r in runs[name]]) for name in ROUTES}
    ratio = rps["ours"] / rps["bare"]
    met = report.check(TARGET, ratio, "ours / bare")
    restarts = sum(r.restarts for rs in runs.values() for r in rs)
    report.out(
        env,
        f"Progress-route throughput under gunicorn {version('gunicorn')} (-w {args.workers} -k "
        f"gthread --threads {args.threads} --reuse-port), Flask-Session "
        f"{version('flask-session')} in Redis, one running job; load: {client_note}, "
        f"{args.connections} keep-alive connections, {args.rounds} round(s) x "
        f"{args.duration:g} s per route, taking turns, after a {harness.WARMUP:g} s warm-up "
        f"each; all answers 200; {restarts} run(s) restarted for a lopsided split of "
        f"connections. Server, load generator and Redis share the machine's {os.cpu_count()} CPUs.",
    )
    rows = []
    for name in ROUTES:
        mid = harness.median_run(runs[name])
        commands = harness.median([r.commands_per_request for r in runs[name]])
        rows.append(
            [
                LABELS[name],
                f"{rps[name]:,.0f}",
                f"{mid.p50_ms:.2f}",
                f"{mid.p99_ms:.1f}",
                f"{commands:.1f}",
                harness.splits(runs[name]),
                f"{rps[name] / rps['bare']:.2f}x",
            ]
        )
    report.table(
        [
            "route",
            "requests/s (median)",
            "p50 ms",
            "p99 ms",
            "Redis commands / request",
            "connections per worker",
            "ours / bare",
        ],
        rows,
    )
    report.out(
        f"Where the difference goes: each step timed alone in this process (one request "
        f"context, the same session), best of 5 batches of {args.parts_calls:,} calls. The "
        "steps indented are inside the line above them."
    )
    report.table(
        ["route", "step", "µs per call"],
        [[route, step.replace("  ", "&nbsp;&nbsp;"), f"{us:.1f}"] for route, step, us in steps],
    )
    report.figures["parts_us"] = {f"{route}: {step.strip()}": us for route, step, us in steps}
    report.summary(
        f"`/progress` requests/s, gunicorn {args.workers} workers x {args.threads} threads, "
        f"{args.client}",
        f"{rps['ours']:,.0f} req/s",
        f"bare route (session + one Redis GET) {rps['bare']:,.0f} req/s ({ratio:.2f}x)",
        ">= 0.85x bare",
        met,
    )
    report.figures.update(requests_per_second=rps, client=args.client)
    report.panel(
        harness.panel(
            f"throughput.py: /progress requests/s, ours / bare ({rps['ours']:,.0f} vs "
            f"{rps['bare']:,.0f} req/s)",
            "x",
            [("ours / bare", ratio, TARGET.limit)],
            reference=1.0,
        )
    )
    report.finish()


if __name__ == "__main__":
    main()
