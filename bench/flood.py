"""Flood: thousands of cookie-less ``POST /import`` against one gunicorn worker with a small queue.

What it measures, against one ``redis-server`` on loopback:

- the app: the example app (``example_app:create_app()``) with ``REDIS_URL`` set
  (jobs and Flask-Session sessions in Redis) under ``gunicorn -k gthread
  --workers 1 --threads 16`` on a free loopback port
  (``tests/gunicorn_server.py``), with ``ASYNCSTATE_MAX_QUEUED`` =
  ``--max-queued`` (500), ``ASYNCSTATE_HEARTBEAT_INTERVAL`` 1 s, and imports of
  2 s (4 batches of 0.5 s), 4 at a time (``ASYNCSTATE_MAX_WORKERS`` 4): the
  queue fills within a second and does not drain during the flood;
- the flood: ``--requests`` (4,000; quick 1,000) ``POST /import`` from
  ``--clients`` (32) threads, each request with a fresh cookie jar and
  ``Accept: application/json`` (and, when the example has CSRF protection, a
  ``GET /`` first for the token: the figures then count both requests as one
  start), bounded to 60 s;
- meanwhile ``GET /`` every 250 ms (a page without Redis), and the worker's
  heartbeat entry read from Redis every 500 ms;
- after the flood every accepted job is cancelled with ``asyncstate.cancel(token)``
  from this process, and the time until all of them are final is the drain time.

Figures: starts answered per second, answers by status (with their latency
and ``Retry-After``), ``GET /`` latency, the oldest heartbeat seen, and the
worker's resident memory (``VmRSS`` of ``/proc/<pid>/status``) before the
flood, after it and after the drain. Nothing is asserted:
``tests/test_flood.py`` does that.

It starts its own redis-server on a free loopback port (never 6379) unless
given ``--redis-url``, and stops gunicorn (SIGTERM, then SIGKILL of its process
group) and the server in any case.

Run from the repository root::

    python bench/flood.py                  # 4,000 starts (about 15 s)
    python bench/flood.py --quick          # 1,000 starts (about 6 s)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from _common import (
    add_common_options,
    environment,
    fill_defaults,
    make_app,
    markdown_table,
    panel,
    percentile,
    percentile_ms,
    redis_server,
    write_json,
)
from gunicorn_server import (
    SECRET_KEY,
    GunicornServer,
    Prober,
    Sample,
    beat_age,
    post_import,
    prepare,
    rss_kib,
    timed_request,
)

THREADS = 16
WORKERS = 4  # ASYNCSTATE_MAX_WORKERS, the library's default
HEARTBEAT = 1.0
BUDGET = 60.0  # seconds for the whole flood; later requests are not sent
DRAIN_LIMIT = 60.0
DEFAULT_REQUESTS, QUICK_REQUESTS = 4000, 1000


def flood(url: str, requests_: int, clients: int, needs_csrf: bool) -> tuple[list[Sample], float]:
    """Send the starts; (samples of the answered ones, seconds)."""
    deadline = time.monotonic() + BUDGET

    def one(_: int) -> Sample | None:
        if time.monotonic() > deadline:
            return None
        with requests.Session() as client:
            csrf = prepare(client, url) if needs_csrf else None
            return timed_request(lambda: post_import(client, url, csrf, timeout=15))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, range(requests_)))
    return [a for a in answers if a is not None], time.perf_counter() - start


def drain(redis_url: str, tokens: list[str]) -> tuple[float, Counter[str]]:
    """Cancel every accepted job (public API, from here); seconds until all are final."""
    # the example app's secret and keys (the library's default prefix): its tokens are valid here
    app, ext = make_app(
        "bench-flood-drain", redis_url=redis_url, key_prefix=None, secret_key=SECRET_KEY
    )
    start = time.perf_counter()
    statuses: Counter[str] = Counter()
    try:
        with app.app_context():
            for token in tokens:
                ext.cancel(token)
            deadline = time.monotonic() + DRAIN_LIMIT
            while True:
                docs = [ext.status(token) for token in tokens]
                statuses = Counter(d["status"] if d else "missing" for d in docs)
                if statuses["queued"] + statuses["running"] == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    finally:
        ext.shutdown(2)
    return time.perf_counter() - start, statuses


def run(redis_url: str, args: argparse.Namespace, log_dir: str) -> dict[str, Any]:
    env = {
        "REDIS_URL": redis_url,
        "FLASK_ASYNCSTATE_MAX_QUEUED": str(args.max_queued),
        "FLASK_ASYNCSTATE_HEARTBEAT_INTERVAL": str(HEARTBEAT),
        "EXAMPLE_PRODUCTS": "40",
        "EXAMPLE_BATCH": "10",
        "EXAMPLE_PAUSE": "0.5",
    }
    server = GunicornServer(log_dir, workers=1, threads=THREADS, env=env)
    try:
        server.start()
        url = server.url
        worker = server.worker_pid()
        needs_csrf = prepare(requests.Session(), url) is not None
        with requests.Session() as warm:  # one start first: job threads, scripts, connections
            post_import(warm, url, prepare(warm, url))
        time.sleep(0.5)
        rss_before = rss_kib(worker)
        beat_ages: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.5):
                beat_ages.append(beat_age(redis_url, worker))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with Prober(lambda: requests.get(url + "/", timeout=10), every=0.25) as page:
            samples, took = flood(url, args.requests, args.clients, needs_csrf)
            rss_after = rss_kib(worker)
            tokens = [
                s.body["token"]
                for s in samples
                if s.status == 202
                and s.json
                and isinstance(s.body, dict)
                and isinstance(s.body.get("token"), str)
            ]
            flood_page = list(page.samples)
            drained, finals = drain(redis_url, tokens)
        stop.set()
        watcher.join(5)
        rss_drained = rss_kib(worker)
        alive = server.current_workers() == [worker]
    except BaseException:
        sys.stderr.write(f"gunicorn log:\n{server.log_text()}\n")
        raise
    finally:
        server.stop()
    return {
        "samples": samples,
        "seconds": took,
        "needs_csrf": needs_csrf,
        "page": flood_page,
        "rss": (rss_before, rss_after, rss_drained),
        "drain_seconds": drained,
        "finals": finals,
        "accepted": len(tokens),
        "beat_ages": beat_ages,
        "alive": alive,
    }


def status_table(samples: list[Sample]) -> str:
    rows = []
    for status, n in sorted(Counter(s.status for s in samples).items(), key=lambda i: str(i[0])):
        these = [s for s in samples if s.status == status]
        took = [s.took for s in these]
        json_share = sum(s.json for s in these) / len(these)
        retry = Counter(s.retry_after for s in these if s.retry_after)
        rows.append(
            [
                str(status) if status is not None else "no answer",
                f"{n:,}",
                f"{json_share:.0%}",
                percentile_ms(took, 50),
                percentile_ms(took, 99),
                percentile_ms(took, 100),
                ", ".join(f"{v} s" for v in sorted(retry)) or "-",
            ]
        )
    header = ["answer", "count", "JSON", "p50 ms", "p99 ms", "max ms", "Retry-After"]
    return markdown_table(header, rows)


def instance_table(r: dict[str, Any], args: argparse.Namespace) -> str:
    before, after, drained = (f"{v / 1024:,.1f}" if v else "?" for v in r["rss"])
    page = [s.took for s in r["page"] if s.status == 200]
    failed_pages = sum(s.status != 200 for s in r["page"])
    oldest = max(r["beat_ages"], default=float("nan"))
    finals = ", ".join(f"{k} {v:,}" for k, v in sorted(r["finals"].items()))
    rows = [
        ["starts answered per second", f"{len(r['samples']) / r['seconds']:,.0f}"],
        ["flood duration s", f"{r['seconds']:.1f}"],
        ["accepted (202)", f"{r['accepted']:,} (ASYNCSTATE_MAX_QUEUED={args.max_queued:,})"],
        [
            f"GET / during the flood ms, p50 / p99 / max ({len(page)} probes)",
            " / ".join(percentile_ms(page, pct) for pct in (50, 99, 100))
            + (f" ({failed_pages} failed)" if failed_pages else ""),
        ],
        [f"oldest heartbeat seen s (interval {HEARTBEAT:g} s, lost after 3)", f"{oldest:.1f}"],
        [
            "worker RSS MiB: before / after the flood / after the drain",
            f"{before} / {after} / {drained}",
        ],
        ["drain s (cancel every accepted job, until all final)", f"{r['drain_seconds']:.1f}"],
        ["accepted jobs after the drain", finals],
        ["gunicorn worker", "alive, same pid" if r["alive"] else "REPLACED or gone"],
    ]
    return markdown_table(["figure", "value"], rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        help=f"starts sent (default {DEFAULT_REQUESTS:,}, quick {QUICK_REQUESTS:,})",
    )
    parser.add_argument("--clients", type=int, default=32, help="client threads (32)")
    parser.add_argument(
        "--max-queued", type=int, default=500, help="ASYNCSTATE_MAX_QUEUED of the instance (500)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_REQUESTS:,} starts"
    )
    add_common_options(parser)
    args = fill_defaults(
        parser.parse_args(argv), {"requests": DEFAULT_REQUESTS}, {"requests": QUICK_REQUESTS}
    )
    if not (1 <= args.requests <= 20_000) or not (1 <= args.clients <= 64) or args.max_queued < 1:
        parser.error("--requests must be 1..20,000, --clients 1..64, --max-queued positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log_dir = tempfile.mkdtemp(prefix="asyncstate-bench-flood-")
    try:
        with redis_server(args.redis_url) as server:
            r = run(server.url, args, log_dir)
            env = environment(server.url)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    samples = r["samples"]
    rate = len(samples) / r["seconds"]
    csrf = " (each after a `GET /` for its CSRF token)" if r["needs_csrf"] else ""
    print(env)
    print()
    print(
        f"A flood of {len(samples):,} cookie-less `POST /import`{csrf} from {args.clients} "
        f"threads against gunicorn -k gthread, 1 worker x {THREADS} threads, jobs and sessions "
        f"in Redis, ASYNCSTATE_MAX_QUEUED={args.max_queued}, 2 s imports, {WORKERS} at a time. "
        f"Expected: JSON 202 up to the queue limit, then JSON 503 with Retry-After; never 500 "
        f"or HTML. Answers by status (latency of the POST alone):"
    )
    print()
    print(status_table(samples))
    print()
    print("The instance during and after the flood:")
    print()
    print(instance_table(r, args))
    page = [s.took for s in r["page"] if s.status == 200]
    post = [s.took for s in samples]
    rss = r["rss"]
    write_json(
        args.json,
        {
            "requests_per_second": rate,
            "by_status": {str(k): v for k, v in Counter(s.status for s in samples).items()},
            "rss_kib": list(rss),
            "drain_seconds": r["drain_seconds"],
            "panels": [
                panel(
                    f"flood.py: latency during a flood of {len(samples):,} starts ({rate:,.0f}/s)",
                    "ms",
                    [
                        (label, percentile(values, pct) * 1000)
                        for label, values, pct in (
                            ("POST /import p50", post, 50),
                            ("POST /import p99", post, 99),
                            ("GET / p50", page, 50),
                            ("GET / p99", page, 99),
                        )
                        if values and percentile(values, pct) > 0
                    ],
                )
            ],
            "notes": [
                (
                    f"{len(samples):,} starts at {rate:,.0f}/s; worker RSS "
                    f"{(rss[0] or 0) / 1024:.0f} -> {(rss[1] or 0) / 1024:.0f} MiB; drained in "
                    f"{r['drain_seconds']:.1f} s"
                )
            ],
        },
    )


if __name__ == "__main__":
    main()
