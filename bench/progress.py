"""Cost of one progress report from inside a running job, and Redis round trips per job lifecycle.

Per call, the same current, total and message (formatted before timing), in
one run against one redis-server:

- ours: ``job.progress(i, total=N, message=...)`` in a loop inside a running
  tracked job (``ASYNCSTATE_REDIS_URL`` set, default flush interval 0.25 s); the
  job function times its own loop;
- RQ: ``job.meta["progress"] = {...}; job.save_meta()`` on a real ``rq`` Job
  saved in the same Redis (no worker needed);
- Celery: ``task.update_state(task_id=..., state="PROGRESS", meta={...})`` with
  the Redis result backend (no worker needed);
- bare redis-py: ``SET key json.dumps({...})``.

Each figure is the median of ``--repeats`` batches of ``--calls`` calls, µs per
call (GC paused), the columns taking turns. RQ's ``save_meta`` is one ``HSET``
round trip, so "RQ / ours" is about the loopback round trip divided by our
in-process cost; with Redis on another host the ratios grow, ours does not move.

Round trips, counted on the client side (a ``redis.Connection`` subclass: one
per command, one per pipeline), over one lifecycle per library: start,
``--lifecycle-calls`` progress calls with a 10 ms pause every 100 (about a
second, like a real job; ``--quick`` keeps 10,000), finish. Ours: ``start()`` to
``wait()``, writer, heartbeat and cancel listener included, after a warm-up
job; its count follows the clock (a flush every 0.25 s, a listener sweep every
second), so it is the median of ``--lifecycle-repeats`` jobs. RQ: ``enqueue``
and a ``SimpleWorker`` burst in this process (worker registration included).
Celery: ``task.apply()`` with ``task_store_eager_result`` (each
``update_state`` a ``GET`` and a ``SETEX``+``PUBLISH`` pipeline; broker traffic
and the ``STARTED`` write not counted: a lower bound).

Targets: ours <= 1 µs per call, >= 100x cheaper than RQ and >= 300x than
Celery; <= 10 round trips for a 10,000-call lifecycle.

    python bench/progress.py             # 5 x 10,000 calls, lifecycles of 10,000 (about 35 s)
    python bench/progress.py --quick     # 3 x 1,000 calls, lifecycles of 10,000 (about 12 s)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import harness
import redis

try:
    import celery
    import rq
    from celery import Celery
    from rq import Queue, SimpleWorker
    from rq.job import Job
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    raise SystemExit(f"bench/progress.py needs rq and celery: pip install -e '.[bench]' ({exc})")

import _alt_jobs

TARGET_US = harness.Target("ours, µs per progress call", "<=", 1.0, " µs")
TARGET_RATIOS = {
    "RQ": harness.Target("RQ / ours, per progress call", ">=", 100, "x"),
    "Celery": harness.Target("Celery / ours, per progress call", ">=", 300, "x"),
}
TARGET_ROUND_TRIPS = harness.Target("ours, round trips of a 10,000-call lifecycle", "<=", 10)
FULL = {"calls": 10_000, "repeats": 5, "lifecycle_calls": 10_000, "lifecycle_repeats": 3}
QUICK = {"calls": 1_000, "repeats": 3, "lifecycle_calls": 10_000, "lifecycle_repeats": 3}
#: Pause of the lifecycle jobs every 100 progress calls.
PACE = 0.01
LABELS = {
    "ours": "ours: `job.progress(i, total=N, message=...)`",
    "RQ": 'RQ: `job.meta["progress"] = {...}; job.save_meta()`',
    "Celery": 'Celery: `task.update_state(state="PROGRESS", meta={...})`',
    "bare": "bare redis-py: `SET key json.dumps({...})`",
}
HELP = {
    "calls": "calls per batch",
    "repeats": "batches per figure",
    "lifecycle_calls": "progress calls of the counted lifecycle",
    "lifecycle_repeats": "our lifecycles, median reported",
}

#: Runs ``n`` progress calls; µs per call. Its check that the last one was stored.
Batch = tuple[Callable[[int], float], Callable[[int], None]]


def per_call(loop: Callable[[int], None]) -> Callable[[int], float]:
    return lambda n: harness.timed(lambda: loop(n)) / n * 1e6


def ours_batch(app: Any, ext: harness.AsyncState, text: list[str]) -> Batch:
    """Tracked jobs whose function times its own loop of progress calls."""
    timings: list[float] = []
    last: list[dict[str, Any]] = []

    @ext.job(name="bench_progress")
    def loop(job: harness.JobContext, n: int) -> int:
        def body() -> None:
            for i in range(1, n + 1):
                job.progress(i, total=n, message=text[i])

        timings.append(harness.timed(body) / n * 1e6)
        return n

    def batch(n: int) -> float:
        with app.app_context():
            doc = loop.start(n).wait(60)
        assert doc is not None and doc["status"] == "succeeded", doc
        last.append(doc)
        return timings[-1]

    def check(n: int) -> None:
        if (last[-1]["current"], last[-1]["total"]) != (n, n):
            raise RuntimeError(f"ours: last document is {last[-1]!r}")

    return batch, check


def rq_batch(client: redis.Redis, text: list[str]) -> Batch:
    job = Job.create(_alt_jobs.noop, connection=client)
    job.save()

    def loop(n: int) -> None:
        for i in range(1, n + 1):
            job.meta["progress"] = {"current": i, "total": n, "message": text[i]}
            job.save_meta()

    def check(n: int) -> None:
        meta = Job.fetch(job.id, connection=client).meta["progress"]
        if meta["current"] != n:
            raise RuntimeError(f"rq: stored meta is {meta!r}")

    return per_call(loop), check


def progress_task(self: Any, n: int, pace: float) -> int:
    """The Celery task of the lifecycle count: ``n`` PROGRESS updates, a pause every 100."""
    for i in range(1, n + 1):
        meta = {"current": i, "total": n, "message": f"{i:,} of {n:,} rows"}
        self.update_state(state="PROGRESS", meta=meta)
        if pace and i % 100 == 0:
            time.sleep(pace)
    return n


def celery_app(url: str) -> Celery:
    """Redis as broker and result backend; eager runs store their results."""
    app = Celery("bench_progress", broker=url, backend=url, set_as_current=False)
    app.conf.update(task_store_eager_result=True)
    app.task(bind=True, name="bench.progress_task")(progress_task)
    return app


def celery_batch(app: Celery, text: list[str]) -> Batch:
    task = app.tasks["bench.progress_task"]
    task_id = str(uuid.uuid4())

    def loop(n: int) -> None:
        for i in range(1, n + 1):
            meta = {"current": i, "total": n, "message": text[i]}
            task.update_state(task_id=task_id, state="PROGRESS", meta=meta)

    def check(n: int) -> None:
        meta = app.backend.get_task_meta(task_id)
        if meta["status"] != "PROGRESS" or meta["result"]["current"] != n:
            raise RuntimeError(f"celery: stored meta is {meta!r}")

    return per_call(loop), check


def bare_batch(client: redis.Redis, text: list[str]) -> Batch:
    key = "bench:bare-progress"

    def loop(n: int) -> None:
        for i in range(1, n + 1):
            client.set(key, json.dumps({"current": i, "total": n, "message": text[i]}))

    def check(n: int) -> None:
        doc = json.loads(client.get(key) or "null")
        if doc["current"] != n:
            raise RuntimeError(f"bare: stored document is {doc!r}")

    return per_call(loop), check


def per_call_costs(url: str, calls: int, repeats: int) -> dict[str, float]:
    text = [f"{i:,} of {calls:,} rows" for i in range(calls + 1)]
    app, ext = harness.make_app("bench-progress", redis_url=url)
    client = harness.client_from_url(url)
    try:
        batches = {
            "ours": ours_batch(app, ext, text),
            "RQ": rq_batch(client, text),
            "Celery": celery_batch(celery_app(url), text),
            "bare": bare_batch(client, text),
        }
        us = harness.in_turns({name: b[0] for name, b in batches.items()}, calls, repeats)
        for _batch, check in batches.values():
            check(calls)
    finally:
        ext.shutdown(2)
        client.close()
    return us


# -- round trips per lifecycle -----------------------------------------------------------------


@dataclass
class Lifecycle:
    round_trips: int
    seconds: float


def ours_lifecycle(url: str, n: int, repeats: int) -> Lifecycle:
    """``start()`` .. ``wait()`` of a job making ``n`` paced calls; median of ``repeats`` jobs."""
    client, counter = harness.counting_client(url)
    app, ext = harness.make_app("bench-progress", redis_client=client)

    @ext.job(name="bench_lifecycle")
    def paced(job: harness.JobContext, n: int) -> int:
        for i in range(1, n + 1):
            job.progress(i, total=n, message=f"{i:,} of {n:,} rows")
            if i % 100 == 0:
                time.sleep(PACE)
        return n

    runs: list[Lifecycle] = []
    try:
        with app.app_context():
            paced.start(0).wait(30)  # threads, listener, scripts: once per process, not per job
            harness.wait_listening(ext)
            for _ in range(repeats):
                before, start = counter.sent.total(), time.perf_counter()
                doc = paced.start(n).wait(120)
                seconds, used = time.perf_counter() - start, counter.sent.total() - before
                assert doc is not None and doc["status"] == "succeeded" and doc["current"] == n, doc
                runs.append(Lifecycle(used, seconds))
    finally:
        ext.shutdown(2)
    trips = int(harness.median([r.round_trips for r in runs]))
    return Lifecycle(trips, harness.median([r.seconds for r in runs]))


def rq_lifecycle(url: str, n: int) -> Lifecycle:
    client, counter = harness.counting_client(url)
    queue = Queue("bench-lifecycle", connection=client)
    start = time.perf_counter()
    job = queue.enqueue(_alt_jobs.progress_job, n, PACE)
    SimpleWorker([queue], connection=client).work(burst=True, logging_level="WARNING")
    seconds, used = time.perf_counter() - start, counter.sent.total()
    assert Job.fetch(job.id, connection=client).get_status() == "finished"
    client.close()
    return Lifecycle(used, seconds)


def celery_lifecycle(url: str, n: int) -> Lifecycle:
    counter = harness.counting_connection()
    app = celery_app(url)
    app.backend.connparams["connection_class"] = counter
    task = app.tasks["bench.progress_task"]
    task.apply(args=(0, 0.0))  # warm-up: connection, imports
    before, start = counter.sent.total(), time.perf_counter()
    result = task.apply(args=(n, PACE))
    seconds, used = time.perf_counter() - start, counter.sent.total() - before
    stored = app.backend.get_task_meta(result.id)
    assert stored["status"] == "SUCCESS" and stored["result"] == n, stored
    return Lifecycle(used, seconds)


def lifecycles(url: str, n: int, repeats: int) -> dict[str, tuple[Lifecycle, Lifecycle]]:
    """Per library: the lifecycle of a job with no progress call, and with ``n`` calls."""
    runs: dict[str, Callable[[str, int], Lifecycle]] = {
        "ours": lambda url, n: ours_lifecycle(url, n, repeats),
        "RQ": rq_lifecycle,
        "Celery": celery_lifecycle,
    }
    return {name: (run(url, 0), run(url, n)) for name, run in runs.items()}


def main(argv: list[str] | None = None) -> None:
    found = harness.parser(__doc__, FULL, QUICK, HELP)
    ranges = {"calls": (1, 1e6), "repeats": (1, 50), "lifecycle_calls": (1, 1e6)}
    args = harness.parse(found, argv, {**ranges, "lifecycle_repeats": (1, 20)})
    report = harness.Report(__file__, args)
    n = args.lifecycle_calls
    with harness.redis_server(args.redis_url) as server:
        us = per_call_costs(server.url, args.calls, args.repeats)
        runs = lifecycles(server.url, n, args.lifecycle_repeats)
        env = harness.environment(server.url, f"rq {rq.__version__}, celery {celery.__version__}")
    ratio = {name: value / us["ours"] for name, value in us.items()}
    met = [report.check(TARGET_US, us["ours"], "ours", f"{us['ours']:.2f} µs")]
    met += [report.check(t, ratio[name], name) for name, t in TARGET_RATIOS.items()]
    report.out(
        env,
        f"Cost of one progress call, {args.repeats} repeats x {args.calls:,} calls, median.",
    )
    report.table(
        ["progress call", "µs per call (median)", "alternative / ours"],
        [[LABELS[name], harness.fmt(value), f"{ratio[name]:,.0f}x"] for name, value in us.items()],
    )
    ours_trips = runs["ours"][1].round_trips
    trips_met = report.check(TARGET_ROUND_TRIPS, ours_trips, "ours", str(ours_trips))
    report.out(
        f"Redis round trips per job lifecycle (start, {n:,} progress calls with a 10 ms pause "
        f"every 100, finish), counted on the client side. Ours writes at most once per flush "
        f"interval ({harness.FLUSH:g} s), so its count grows with the job's duration, not with "
        f"its calls (median of {args.lifecycle_repeats} jobs). RQ includes a burst worker's "
        f"registration; Celery excludes broker traffic."
    )
    report.table(
        [
            "library",
            "round trips, job with 0 calls",
            f"round trips, job with {n:,} calls",
            f"added by the {n:,} calls",
            "per call",
            f"{n:,}-call job wall time (s)",
        ],
        [
            [
                name,
                f"{empty.round_trips:,}",
                f"{full.round_trips:,}",
                f"{full.round_trips - empty.round_trips:,}",
                f"{(full.round_trips - empty.round_trips) / n:.4f}",
                f"{full.seconds:.2f}",
            ]
            for name, (empty, full) in runs.items()
        ],
    )
    report.summary(
        "one progress call",
        f"{us['ours']:.2f} µs",
        f"RQ `save_meta` {us['RQ']:.0f} µs ({ratio['RQ']:,.0f}x), Celery `update_state` "
        f"{us['Celery']:.0f} µs ({ratio['Celery']:,.0f}x), bare `SET` {us['bare']:.0f} µs",
        "<= 1 µs; >= 100x RQ, >= 300x Celery",
        all(met),
    )
    report.summary(
        f"Redis round trips, job with {n:,} progress calls",
        str(ours_trips),
        f"RQ {runs['RQ'][1].round_trips:,}, Celery {runs['Celery'][1].round_trips:,}",
        "<= 10",
        trips_met,
    )
    report.figures["per_call_us"] = us
    report.figures["round_trips"] = {
        name: {"empty": e.round_trips, "full": f.round_trips, "seconds": f.seconds}
        for name, (e, f) in runs.items()
    }
    report.panel(
        harness.panel(
            "progress.py: cost of one progress call, alternative / ours",
            "x",
            [(name, ratio[name], target.limit) for name, target in TARGET_RATIOS.items()]
            + [("bare", ratio["bare"])],
            reference=1.0,
        ),
        harness.panel(
            f"progress.py: Redis round trips, lifecycle with {n:,} calls",
            "round trips",
            [(name, float(full.round_trips)) for name, (_e, full) in runs.items()],
            target=TARGET_ROUND_TRIPS.limit,
            target_label=f"target ours <= {TARGET_ROUND_TRIPS.limit:g}",
        ),
    )
    report.finish()


if __name__ == "__main__":
    main()
