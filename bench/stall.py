"""Stall: latencies while Redis stops answering for 8 s (SIGSTOP, then ``CLIENT PAUSE ALL``).

What it measures:

- the app: the example app (``example_app:create_app()``) under ``gunicorn -k
  gthread --workers 1 --threads 8`` on a free loopback port
  (``tests/gunicorn_server.py``), jobs in Redis (``FLASK_ASYNCSTATE_REDIS_URL``),
  sessions in files (``SESSION_DIR``), so ``GET /`` never touches Redis;
  ``ASYNCSTATE_REDIS_TIMEOUT`` and the ``circuit_reset`` tuning keyword at their defaults;
- one import of about 13 s (13 batches of 10 products, 1 s each), started with a
  cookie jar; 12 pollers sharing that session read ``GET /asyncstate/progress/<token>``
  once a second each (staggered), and a prober reads ``GET /`` every 200 ms;
- 2 s in, the redis-server stops answering for ``--stall`` seconds (8; quick 4):
  ``SIGSTOP`` then ``SIGCONT`` (the process is frozen: connections are accepted
  by the kernel and never answered), then, in a second run with a fresh app,
  ``CLIENT PAUSE <ms> ALL`` (Redis holds every command); quick runs only the first;
- after the job ends, a second one is started and cancelled (``POST /cancel``).

Figures per way of stalling: p50 / p90 / p99 / max latency and the answers by
status of ``GET /`` and of ``/progress``, before, during and after the stall
(by the time a request was sent), how long after Redis came back ``/progress``
answered 200 again, and how the two jobs ended. Nothing is asserted:
``tests/test_stall.py`` does that.

The stalled redis-server is always one of its own (a free loopback port, never
6379): ``--redis-url`` is accepted, as by every benchmark, but not used, since
stopping run.py's shared server would stall its other clients too.

Run from the repository root::

    python bench/stall.py                  # SIGSTOP and CLIENT PAUSE, 8 s each (about 50 s)
    python bench/stall.py --quick          # SIGSTOP only, 4 s (about 20 s)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from functools import partial
from typing import Any

import requests
from _common import (
    add_common_options,
    environment,
    fill_defaults,
    markdown_table,
    panel,
    percentile,
    percentile_ms,
    redis_server,
    write_json,
)
from gunicorn_server import (
    GunicornServer,
    Prober,
    Sample,
    clone,
    is_json,
    job_token,
    post_cancel,
    post_import,
    prepare,
    stall_redis,
)
from redis_server import RedisServer

POLLERS = 12
THREADS = 8
PRODUCTS, BATCH, PAUSE = 130, 10, 1.0
BEFORE = 2.0
LABELS = {"sigstop": "SIGSTOP / SIGCONT", "pause": "CLIENT PAUSE ALL"}


def _status(client: requests.Session, url: str, token: str) -> str | None:
    try:
        answer = client.get(f"{url}/asyncstate/progress/{token}", timeout=10)
    except requests.RequestException:
        return None
    return answer.json().get("status") if answer.status_code == 200 and is_json(answer) else None


def _wait(client: requests.Session, url: str, token: str, final: bool, limit: float) -> str | None:
    """Poll until the job runs (``final=False``) or has ended (``final=True``); its status."""
    deadline = time.monotonic() + limit
    status = None
    while time.monotonic() < deadline:
        status = _status(client, url, token)
        if status is not None and (
            status not in ("queued", "running") if final else status == "running"
        ):
            return status
        time.sleep(0.25)
    return status


def one_stall(how: str, seconds: float, log_dir: str) -> dict[str, Any]:
    """Run the scenario once against a redis-server of its own."""
    with redis_server() as store:  # never --redis-url: this one is stalled
        assert isinstance(store, RedisServer)
        sessions = tempfile.mkdtemp(prefix="sessions-", dir=log_dir)
        server = GunicornServer(
            log_dir,
            workers=1,
            threads=THREADS,
            env={
                "FLASK_ASYNCSTATE_REDIS_URL": store.url,
                "SESSION_DIR": sessions,
                "EXAMPLE_PRODUCTS": str(PRODUCTS),
                "EXAMPLE_BATCH": str(BATCH),
                "EXAMPLE_PAUSE": str(PAUSE),
            },
        )
        try:
            server.start()
            url = server.url
            starter = requests.Session()
            csrf = prepare(starter, url)
            token = job_token(post_import(starter, url, csrf))
            if not token or _wait(starter, url, token, final=False, limit=10) != "running":
                raise RuntimeError("the import did not start")
            page = Prober(lambda: requests.get(url + "/", timeout=10), every=0.2)
            progress = f"{url}/asyncstate/progress/{token}"
            pollers = [  # each its own connection, all in the starter's session
                Prober(
                    partial(clone(starter).get, progress, timeout=10), every=1.0, offset=n / POLLERS
                )
                for n in range(POLLERS)
            ]
            probes = [page, *pollers]
            for p in probes:
                p.start()
            try:
                time.sleep(BEFORE)
                began = time.monotonic()
                ended = stall_redis(store, how, seconds)  # SIGCONT even if interrupted
                final = _wait(starter, url, token, final=True, limit=40)
                final_after = time.monotonic() - ended
                time.sleep(1.0)
            finally:
                for p in probes:
                    p.stop()
            second = job_token(post_import(starter, url, csrf))
            cancelled = None
            if second and _wait(starter, url, second, final=False, limit=10) == "running":
                post_cancel(starter, url, second, csrf)
                cancelled = _wait(starter, url, second, final=True, limit=10)
            env = environment(store.url)
        except BaseException:
            sys.stderr.write(f"gunicorn log:\n{server.log_text()}\n")
            raise
        finally:
            server.stop()
    polls = [s for p in pollers for s in p.samples]
    return {
        "how": how,
        "seconds": seconds,
        "began": began,
        "ended": ended,
        "page": page.samples,
        "polls": polls,
        "final": final,
        "final_after": final_after,
        "cancelled": cancelled,
        "env": env,
    }


def phases(samples: list[Sample], began: float, ended: float) -> dict[str, list[Sample]]:
    """Samples by when they were sent: before, during and after the stall."""
    return {
        "before": [s for s in samples if s.sent < began],
        "during": [s for s in samples if began <= s.sent < ended],
        "after": [s for s in samples if s.sent >= ended],
    }


def recovery(r: dict[str, Any]) -> str:
    """How long after Redis answered again ``/progress`` answered 200, and what came first."""
    after = sorted((s for s in r["polls"] if s.sent >= r["ended"]), key=lambda s: s.answered)
    if not after:
        return "no /progress answer after the stall"
    first = after[0]
    ok = [s.answered for s in after if s.status == 200]
    if not ok:
        return f"no 200 after the stall (first answer {first.status})"
    back = min(ok) - r["ended"]
    if first.status == 200:
        return f"the first answer after the stall was already 200 ({back:.2f} s after)"
    retry = f" Retry-After {first.retry_after} s," if first.retry_after else ""
    return (
        f"first answer after the stall {first.status},{retry} 200 again "
        f"{back:.2f} s after Redis was back"
    )


def table(r: dict[str, Any]) -> str:
    rows = []
    for route, samples in (
        ("`GET /` (no Redis)", r["page"]),
        ("`GET /asyncstate/progress`", r["polls"]),
    ):
        for phase, part in phases(samples, r["began"], r["ended"]).items():
            took = [s.took for s in part]
            codes = Counter(s.status if s.status is not None else "no answer" for s in part)
            rows.append(
                [
                    route,
                    phase,
                    f"{len(part)}",
                    ", ".join(f"{code} x {n}" for code, n in sorted(codes.items(), key=str)),
                    *(percentile_ms(took, pct) for pct in (50, 90, 99, 100)),
                ]
            )
    header = ["route", "sent", "requests", "answers", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    return markdown_table(header, rows, right=2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stall", type=float, help="seconds Redis stalls (default 8, quick 4)")
    parser.add_argument(
        "--ways", help="comma-separated: sigstop,pause (default both; quick sigstop)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: SIGSTOP only, 4 s")
    add_common_options(parser)
    args = fill_defaults(
        parser.parse_args(argv),
        {"stall": 8.0, "ways": "sigstop,pause"},
        {"stall": 4.0, "ways": "sigstop"},
    )
    args.ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    if not (1 <= args.stall <= 20) or not args.ways or set(args.ways) - set(LABELS):
        parser.error("--stall must be 1..20 s, --ways a subset of sigstop,pause")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log_dir = tempfile.mkdtemp(prefix="asyncstate-bench-stall-")
    try:
        results = [one_stall(how, args.stall, log_dir) for how in args.ways]
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    print(results[0]["env"])
    print()
    shared = (
        " (--redis-url not used: the stalled server is one of its own)" if args.redis_url else ""
    )
    print(
        f"gunicorn -k gthread, 1 worker x {THREADS} threads; jobs in Redis, sessions in files"
        f"{shared}. One {PRODUCTS // BATCH} s import; {POLLERS} pollers of its `/progress` "
        f"at 1/s and `GET /` every 200 ms; Redis stalls {args.stall:g} s, {BEFORE:g} s in. "
        "Requests grouped by when they were sent. Targets (tests/test_stall.py): `GET /` "
        "under 1 s throughout; `/progress` 503 within 1.5 s during the stall, p90 under 50 ms "
        "once the circuit is open, 200 again within Retry-After + 1 s after it."
    )
    bars = []
    for r in results:
        label = LABELS[r["how"]]
        print()
        print(
            f"Redis stalled by {label}: {recovery(r)}; the import through the stall ended "
            f"{r['final']} ({r['final_after']:.1f} s after Redis was back), the second job "
            f"{r['cancelled']} after `POST /cancel`."
        )
        print()
        print(table(r))
        polls = [s.took for s in phases(r["polls"], r["began"], r["ended"])["during"]]
        page = [s.took for s in phases(r["page"], r["began"], r["ended"])["during"]]
        for name, values, pct in (
            (f"{label}: /progress p50 during", polls, 50),
            (f"{label}: /progress p99 during", polls, 99),
            (f"{label}: GET / max during", page, 100),
        ):
            if values and percentile(values, pct) > 0:
                bars.append((name, percentile(values, pct) * 1000))
    write_json(
        args.json,
        {
            "results": [
                {
                    "how": r["how"],
                    "recovery": recovery(r),
                    "final": r["final"],
                    "cancelled": r["cancelled"],
                }
                for r in results
            ],
            "panels": [
                panel(
                    f"stall.py: latency while Redis stalls {args.stall:g} s",
                    "ms",
                    bars,
                    target=1000,
                    target_label="GET / target 1 s",
                )
            ]
            if bars
            else [],
        },
    )


if __name__ == "__main__":
    main()
