"""Flood: thousands of cookie-less ``POST /import`` against one gunicorn worker with a small queue.

Against one redis-server on loopback:

- the app: the example app with ``REDIS_URL`` set (jobs and Flask-Session
  sessions in Redis) under ``gunicorn -k gthread --workers 1 --threads 16``
  (``tests/support/gunicorn_server.py``), ``ASYNCSTATE_MAX_QUEUED`` = ``--max-queued``
  (500), heartbeat every 1 s, imports of 2 s (4 batches of 0.5 s) run 4 at a
  time: the queue fills within a second and stays full;
- the flood: ``--requests`` ``POST /import`` from ``--clients`` (32) threads,
  each with a fresh cookie jar and ``Accept: application/json`` (with the
  example's CSRF protection on, each first ``GET /``\\ s its page for the token;
  the POST alone is timed), bounded to 60 s;
- meanwhile ``GET /`` every 250 ms, and the worker's heartbeat entry read from
  Redis every 500 ms;
- then every accepted job is cancelled with ``asyncstate.cancel(token)`` from
  this process; the drain time runs until all of them are final.

Two tables: answers by status (count, share that is JSON, p50/p99/max,
``Retry-After``), and the instance: starts answered per second, ``GET /``
latency, the oldest heartbeat seen, the worker's resident memory before the
flood, after it and after the drain, the drain time, how the accepted jobs
ended, and whether the gunicorn worker is the same process. No alternative:
this is admission control under load; ``tests/test_flood.py`` asserts the same
targets as pass/fail.

Targets: every answer JSON 202, 429 or 503 (never 500 or HTML), a refusal with
``Retry-After``; the heartbeat never older than 3 intervals; ``GET /`` under 2 s
throughout; the worker survives.

    python bench/flood.py                # 4,000 starts (about 15 s)
    python bench/flood.py --quick        # 1,000 starts (about 6 s)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import harness
import requests

THREADS = 16
WORKERS = 4  # ASYNCSTATE_MAX_WORKERS, the library's default
HEARTBEAT = 1.0
TARGETS = (
    harness.Target("answers other than JSON 202/429/503 (with Retry-After)", "<=", 0),
    harness.Target("oldest heartbeat seen", "<=", 3 * HEARTBEAT, " s"),
    harness.Target("GET / during the flood, max", "<=", 2.0, " s"),
    harness.Target("gunicorn workers replaced", "<=", 0),
)
BUDGET = 60.0  # seconds for the whole flood; later requests are not sent
DRAIN_LIMIT = 60.0
FULL = {"requests": 4000, "clients": 32, "max_queued": 500}
QUICK = {**FULL, "requests": 1000}
HELP = {
    "requests": "starts sent",
    "clients": "client threads",
    "max_queued": "ASYNCSTATE_MAX_QUEUED of the instance",
}


def flood(url: str, count: int, clients: int, needs_csrf: bool) -> tuple[list[Any], float]:
    """Send the starts; (samples of the answered ones, seconds)."""
    deadline = time.monotonic() + BUDGET

    def one(_: int) -> Any:
        if time.monotonic() > deadline:
            return None
        with requests.Session() as client:
            csrf = harness.prepare(client, url) if needs_csrf else None
            return harness.timed_request(lambda: harness.post_import(client, url, csrf, timeout=15))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, range(count)))
    return [a for a in answers if a is not None], time.perf_counter() - start


def drain(redis_url: str, tokens: list[str]) -> tuple[float, Counter[str]]:
    """Cancel every accepted job (public API, from here); seconds until all are final."""
    # the example app's secret and keys (the library's default prefix): its tokens are valid here
    app, ext = harness.make_app(
        "bench-flood-drain", redis_url=redis_url, key_prefix=None, secret_key=harness.EXAMPLE_SECRET
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
    server = harness.GunicornServer(log_dir, workers=1, threads=THREADS, env=env)
    with harness.serving(server):
        url = server.url
        worker = server.worker_pid()
        needs_csrf = harness.prepare(requests.Session(), url) is not None
        with requests.Session() as warm:  # one start first: job threads, scripts, connections
            harness.post_import(warm, url, harness.prepare(warm, url))
        time.sleep(0.5)
        rss_before = harness.rss_kib(worker)
        beat_ages: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.5):
                beat_ages.append(harness.beat_age(redis_url, worker))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with harness.Prober(lambda: requests.get(url + "/", timeout=10), every=0.25) as page:
            samples, took = flood(url, args.requests, args.clients, needs_csrf)
            rss_after = harness.rss_kib(worker)
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
        rss_drained = harness.rss_kib(worker)
        alive = server.current_workers() == [worker]
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


def status_rows(samples: list[Any]) -> list[list[str]]:
    rows = []
    for status, n in sorted(Counter(s.status for s in samples).items(), key=lambda i: str(i[0])):
        these = [s for s in samples if s.status == status]
        took = [s.took for s in these]
        retry = Counter(s.retry_after for s in these if s.retry_after)
        rows.append(
            [
                str(status) if status is not None else "no answer",
                f"{n:,}",
                f"{sum(s.json for s in these) / len(these):.0%}",
                *(harness.ms(took, pct) for pct in (50, 99, 100)),
                ", ".join(f"{v} s" for v in sorted(retry)) or "-",
            ]
        )
    return rows


def instance_rows(r: dict[str, Any], args: argparse.Namespace) -> list[list[str]]:
    before, after, drained = (f"{v / 1024:,.1f}" if v else "?" for v in r["rss"])
    page = [s.took for s in r["page"] if s.status == 200]
    failed_pages = sum(s.status != 200 for s in r["page"])
    oldest = max(r["beat_ages"], default=float("nan"))
    return [
        ["starts answered per second", f"{len(r['samples']) / r['seconds']:,.0f}"],
        ["flood duration s", f"{r['seconds']:.1f}"],
        ["accepted (202)", f"{r['accepted']:,} (ASYNCSTATE_MAX_QUEUED={args.max_queued:,})"],
        [
            f"GET / during the flood ms, p50 / p99 / max ({len(page)} probes)",
            " / ".join(harness.ms(page, pct) for pct in (50, 99, 100))
            + (f" ({failed_pages} failed)" if failed_pages else ""),
        ],
        [f"oldest heartbeat seen s (interval {HEARTBEAT:g} s, lost after 3)", f"{oldest:.1f}"],
        [
            "worker RSS MiB: before / after the flood / after the drain",
            f"{before} / {after} / {drained}",
        ],
        ["drain s (cancel every accepted job, until all final)", f"{r['drain_seconds']:.1f}"],
        [
            "accepted jobs after the drain",
            ", ".join(f"{k} {v:,}" for k, v in sorted(r["finals"].items())),
        ],
        ["gunicorn worker", "alive, same pid" if r["alive"] else "REPLACED or gone"],
    ]


def main(argv: list[str] | None = None) -> None:
    found = harness.parser(__doc__, FULL, QUICK, HELP)
    ranges = {"requests": (1, 20_000), "clients": (1, 64), "max_queued": (1, 1e6)}
    args = harness.parse(found, argv, ranges)
    report = harness.Report(__file__, args)
    log_dir = tempfile.mkdtemp(prefix="asyncstate-bench-flood-")
    try:
        with harness.redis_server(args.redis_url) as server:
            r = run(server.url, args, log_dir)
            env = harness.environment(server.url)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    samples = r["samples"]
    rate = len(samples) / r["seconds"]
    page = [s.took for s in r["page"] if s.status == 200]
    bad = [
        s
        for s in samples
        if s.status not in (202, 429, 503) or not s.json or (s.status != 202 and not s.retry_after)
    ]
    odd, beat, slow, replaced = TARGETS
    oldest = max(r["beat_ages"], default=float("nan"))
    slowest = max(
        (s.took if s.status == 200 else float("inf") for s in r["page"]), default=float("nan")
    )
    met = [
        report.check(odd, len(bad), "POST /import", f"{len(bad):,} of {len(samples):,}"),
        report.check(beat, oldest, "the gunicorn worker"),
        report.check(slow, slowest, f"{len(r['page'])} probes"),
        report.check(
            replaced, 0 if r["alive"] else 1, "the gunicorn worker", "none" if r["alive"] else "1"
        ),
    ]
    csrf = " (each after a `GET /` for its CSRF token)" if r["needs_csrf"] else ""
    report.out(
        env,
        f"A flood of {len(samples):,} cookie-less `POST /import`{csrf} from {args.clients} "
        f"threads against gunicorn -k gthread, 1 worker x {THREADS} threads, jobs and sessions "
        f"in Redis, ASYNCSTATE_MAX_QUEUED={args.max_queued}, 2 s imports, {WORKERS} at a time. "
        f"Expected: JSON 202 up to the queue limit, then JSON 503 with Retry-After. Answers by "
        f"status (latency of the POST alone):",
    )
    report.table(
        ["answer", "count", "JSON", "p50 ms", "p99 ms", "max ms", "Retry-After"],
        status_rows(samples),
    )
    report.out("The instance during and after the flood:")
    report.table(["figure", "value"], instance_rows(r, args))
    by_status = Counter(s.status for s in samples)
    report.summary(
        f"flood: {len(samples):,} cookie-less starts, {args.clients} threads, "
        f"MAX_QUEUED={args.max_queued}",
        ", ".join(f"{n:,} x {status}" for status, n in sorted(by_status.items(), key=str))
        + f"; `GET /` p99 {harness.ms(page, 99)} ms; oldest heartbeat {oldest:.1f} s",
        "",
        "JSON 202/429/503 only; heartbeat <= 3 s; `GET /` < 2 s",
        all(met),
    )
    report.figures.update(
        requests_per_second=rate,
        by_status={str(k): v for k, v in by_status.items()},
        rss_kib=list(r["rss"]),
        drain_seconds=r["drain_seconds"],
    )
    rss = [(v or 0) / 1024 for v in r["rss"]]
    report.notes.append(
        f"{len(samples):,} starts at {rate:,.0f}/s; worker RSS {rss[0]:.0f} -> {rss[1]:.0f} MiB; "
        f"drained in {r['drain_seconds']:.1f} s"
    )
    post = [s.took for s in samples]
    report.panel(
        harness.panel(
            f"flood.py: latency during a flood of {len(samples):,} starts ({rate:,.0f}/s)",
            "ms",
            [
                (label, harness.percentile(values, pct) * 1000)
                for label, values, pct in (
                    ("POST /import p50", post, 50),
                    ("POST /import p99", post, 99),
                    ("GET / p50", page, 50),
                    ("GET / p99", page, 99),
                )
                if values and harness.percentile(values, pct) > 0
            ],
        )
    )
    report.finish()


if __name__ == "__main__":
    main()
