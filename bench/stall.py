"""Stall: latencies while Redis stops answering for 8 s (SIGSTOP, then ``CLIENT PAUSE ALL``).

- the app: the example app under ``gunicorn -k gthread --workers 1 --threads 8``
  (``tests/support/gunicorn_server.py``), jobs in Redis (``FLASK_ASYNCSTATE_REDIS_URL``),
  sessions in files (``SESSION_DIR``), so ``GET /`` never touches Redis;
  ``ASYNCSTATE_REDIS_TIMEOUT`` and the ``circuit_reset`` tuning keyword at their defaults;
- one import of about 13 s (13 batches of 10 products, 1 s each), started with a
  cookie jar; 12 pollers sharing that session read ``/asyncstate/progress/<token>``
  once a second each (staggered), and ``GET /`` is timed every 200 ms;
- 2 s in, the redis-server stops answering for ``--stall`` s: ``SIGSTOP`` then
  ``SIGCONT`` (connections accepted by the kernel, never answered), then in a
  second run with a fresh app and server ``CLIENT PAUSE <ms> ALL`` (Redis holds
  every command);
- after the import a second one is started and cancelled (``POST /cancel``).

The stalled server is always one of the script's own (a free loopback port):
``--redis-url`` is accepted, as by every script, and not used, since freezing
run.py's shared server would stall its other clients too.

Per way of stalling: p50/p90/p99/max latency and answers by status of ``GET /``
and of ``/progress``, by when the request was sent (before, during, after the
stall), how long after Redis came back ``/progress`` answered 200 again, and how
both jobs ended. No alternative: this is the library's circuit breaker against
an outage; ``tests/test_stall.py`` asserts the same targets as pass/fail.

Targets: ``GET /`` under 1 s throughout; ``/progress`` sent during the stall
answered within 1.5 s, with p90 under 50 ms in its second half (the circuit
open); 200 again within ``Retry-After`` + 1 s of Redis coming back; the import
through the stall succeeded, the second job cancelled.

    python bench/stall.py                # SIGSTOP and CLIENT PAUSE, 8 s each (about 50 s)
    python bench/stall.py --quick        # SIGSTOP only, 4 s (about 20 s)
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from functools import partial
from typing import Any

import harness
import requests

TARGETS = (
    harness.Target("GET / (no Redis), max", "<=", 1.0, " s"),
    harness.Target("/progress sent during the stall, max", "<=", 1.5, " s"),
    harness.Target("/progress in the stall's second half (circuit open), p90", "<=", 0.05, " s"),
    harness.Target("200 again after Redis is back, less Retry-After", "<=", 1.0, " s"),
    harness.Target("jobs not ending succeeded (through the stall) / cancelled (after)", "<=", 0),
)
POLLERS = 12
THREADS = 8
PRODUCTS, BATCH, PAUSE = 130, 10, 1.0
BEFORE = 2.0
LABELS = {"sigstop": "SIGSTOP / SIGCONT", "pause": "CLIENT PAUSE ALL"}
FULL = {"stall": 8.0, "ways": "sigstop,pause"}
QUICK = {"stall": 4.0, "ways": "sigstop"}
HELP = {"stall": "seconds Redis stalls", "ways": "sigstop, pause or both"}


def job_status(client: requests.Session, url: str, token: str) -> str | None:
    try:
        answer = client.get(f"{url}/asyncstate/progress/{token}", timeout=10)
    except requests.RequestException:
        return None
    ok = answer.status_code == 200 and harness.is_json(answer)
    return answer.json().get("status") if ok else None


def wait_status(
    client: requests.Session, url: str, token: str, final: bool, limit: float
) -> str | None:
    """Poll until the job runs (``final=False``) or has ended (``final=True``); its status."""
    status = None

    def reached() -> bool:
        nonlocal status
        status = job_status(client, url, token)
        if status is None:
            return False
        return status not in ("queued", "running") if final else status == "running"

    harness.poll(reached, limit, 0.25)
    return status


def one_stall(how: str, seconds: float, log_dir: str) -> dict[str, Any]:
    """Run the scenario once against a redis-server of its own."""
    with harness.redis_server() as store:  # never --redis-url: this one is stalled
        sessions = tempfile.mkdtemp(prefix="sessions-", dir=log_dir)
        env = {
            "FLASK_ASYNCSTATE_REDIS_URL": store.url,
            "SESSION_DIR": sessions,
            "EXAMPLE_PRODUCTS": str(PRODUCTS),
            "EXAMPLE_BATCH": str(BATCH),
            "EXAMPLE_PAUSE": str(PAUSE),
        }
        server = harness.GunicornServer(log_dir, workers=1, threads=THREADS, env=env)
        with harness.serving(server):
            url = server.url
            starter = requests.Session()
            csrf = harness.prepare(starter, url)
            token = harness.job_token(harness.post_import(starter, url, csrf))
            if not token or wait_status(starter, url, token, final=False, limit=10) != "running":
                raise RuntimeError("the import did not start")
            page = harness.Prober(lambda: requests.get(url + "/", timeout=10), every=0.2)
            progress = f"{url}/asyncstate/progress/{token}"
            pollers = [  # each its own connection, all in the starter's session
                harness.Prober(
                    partial(harness.clone(starter).get, progress, timeout=10),
                    every=1.0,
                    offset=n / POLLERS,
                )
                for n in range(POLLERS)
            ]
            probes = [page, *pollers]
            for p in probes:
                p.start()
            try:
                time.sleep(BEFORE)
                began = time.monotonic()
                ended = harness.stall_redis(store, how, seconds)  # SIGCONT even if interrupted
                final = wait_status(starter, url, token, final=True, limit=40)
                final_after = time.monotonic() - ended
                time.sleep(1.0)
            finally:
                for p in probes:
                    p.stop()
            second = harness.job_token(harness.post_import(starter, url, csrf))
            cancelled = None
            if second and wait_status(starter, url, second, final=False, limit=10) == "running":
                harness.post_cancel(starter, url, second, csrf)
                cancelled = wait_status(starter, url, second, final=True, limit=10)
            env_line = harness.environment(store.url)
    return {
        "how": how,
        "seconds": seconds,
        "began": began,
        "ended": ended,
        "page": page.samples,
        "polls": [s for p in pollers for s in p.samples],
        "final": final,
        "final_after": final_after,
        "cancelled": cancelled,
        "env": env_line,
    }


def phases(samples: list[Any], began: float, ended: float) -> dict[str, list[Any]]:
    """Samples by when they were sent: before, during and after the stall."""
    return {
        "before": [s for s in samples if s.sent < began],
        "during": [s for s in samples if began <= s.sent < ended],
        "after": [s for s in samples if s.sent >= ended],
    }


def recovery(r: dict[str, Any]) -> tuple[str, float]:
    """How ``/progress`` came back after the stall; seconds to 200 beyond Retry-After (inf: never)."""
    after = sorted((s for s in r["polls"] if s.sent >= r["ended"]), key=lambda s: s.answered)
    if not after:
        return "no /progress answer after the stall", float("inf")
    first = after[0]
    ok = [s.answered for s in after if s.status == 200]
    if not ok:
        return f"no 200 after the stall (first answer {first.status})", float("inf")
    back = min(ok) - r["ended"]
    if first.status == 200:
        return f"the first answer after the stall was already 200 ({back:.2f} s after)", 0.0
    try:
        wait = float(first.retry_after or "")
    except ValueError:
        wait = float("nan")
    retry = f" Retry-After {first.retry_after} s," if first.retry_after else ""
    text = f"first answer after the stall {first.status},{retry} 200 again {back:.2f} s after"
    return f"{text} Redis was back", max(0.0, back - wait)


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
                    *(harness.ms(took, pct) for pct in (50, 90, 99, 100)),
                ]
            )
    header = ["route", "sent", "requests", "answers", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    return harness.markdown_table(header, rows, right=2)


def main(argv: list[str] | None = None) -> None:
    found = harness.parser(__doc__, FULL, QUICK, HELP)
    args = harness.parse(found, argv, {"stall": (1, 20)}, {"ways": tuple(LABELS)})
    report = harness.Report(__file__, args)
    log_dir = tempfile.mkdtemp(prefix="asyncstate-bench-stall-")
    try:
        results = [one_stall(how, args.stall, log_dir) for how in args.ways]
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    shared = " (--redis-url not used: the stalled server is its own)" if args.redis_url else ""
    report.out(
        results[0]["env"],
        f"gunicorn -k gthread, 1 worker x {THREADS} threads; jobs in Redis, sessions in files"
        f"{shared}. One {PRODUCTS // BATCH} s import; {POLLERS} pollers of its `/progress` at "
        f"1/s and `GET /` every 200 ms; Redis stalls {args.stall:g} s, {BEFORE:g} s in. Requests "
        "grouped by when they were sent.",
    )
    page_max, during_max, open_p90, resumed, jobs = TARGETS
    bars, met, rows = [], [], []
    for r in results:
        label = LABELS[r["how"]]
        how, late = recovery(r)
        report.out(
            f"Redis stalled by {label}: {how}; the import through the stall ended {r['final']} "
            f"({r['final_after']:.1f} s after Redis was back), the second job {r['cancelled']} "
            "after `POST /cancel`.",
            table(r),
        )
        during = phases(r["polls"], r["began"], r["ended"])["during"]
        second_half = [s.took for s in during if s.sent >= r["began"] + r["seconds"] / 2]
        page = [s.took if s.status == 200 else float("inf") for s in r["page"]]
        wrong = (r["final"] != "succeeded") + (r["cancelled"] != "cancelled")
        checks = [
            report.check(page_max, max(page, default=float("nan")), label),
            report.check(during_max, max((s.took for s in during), default=float("nan")), label),
            report.check(
                open_p90,
                harness.percentile(second_half, 90) if second_half else float("nan"),
                label,
            ),
            report.check(resumed, late, label),
            report.check(jobs, wrong, label, f"{r['final']} / {r['cancelled']}"),
        ]
        met.append(all(checks))
        polls = [s.took for s in during]
        rows.append(
            f"{label}: `GET /` max {harness.ms([s.took for s in r['page']], 100)} ms; `/progress` "
            f"during p50 {harness.ms(polls, 50)} / max {harness.ms(polls, 100)} ms; {how}"
        )
        for name, values, pct in (
            (f"{label}: /progress p50 during", polls, 50),
            (f"{label}: /progress p99 during", polls, 99),
            (
                f"{label}: GET / max during",
                [s.took for s in phases(r["page"], r["began"], r["ended"])["during"]],
                100,
            ),
        ):
            if values and harness.percentile(values, pct) > 0:
                bars.append((name, harness.percentile(values, pct) * 1000))
        report.figures[r["how"]] = {
            "recovery": how,
            "final": r["final"],
            "cancelled": r["cancelled"],
        }
    report.summary(
        f"Redis stalled {args.stall:g} s, {POLLERS} pollers on {THREADS} threads",
        "; ".join(rows),
        "",
        "`GET /` < 1 s; 503 within 1.5 s, p90 < 50 ms once open; 200 within Retry-After + 1 s",
        all(met),
    )
    if bars:
        report.panel(
            harness.panel(
                f"stall.py: latency while Redis stalls {args.stall:g} s",
                "ms",
                bars,
                target=1000 * page_max.limit,
                target_label="GET / target 1 s",
            )
        )
    report.finish()


if __name__ == "__main__":
    main()
