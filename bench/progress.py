"""Cost of one progress report from inside a running job: ours against RQ, Celery and bare redis-py.

What it measures, against one throwaway ``redis-server`` in one run:

- ours: ``job.progress(i, total=N, message=...)`` in a loop of N calls inside a
  running tracked job of an app with ``ASYNCSTATE_REDIS_URL`` set (default
  flush interval, 0.25 s); the loop is timed inside the job function;
- RQ: ``job.meta["progress"] = {...}; job.save_meta()`` on a real ``rq`` Job
  created and saved in the same Redis (no worker needed to save meta);
- Celery: ``task.update_state(task_id=..., state="PROGRESS", meta={...})`` with
  the Redis result backend on the same server (no worker needed either);
- bare redis-py: ``SET key json.dumps({...})``, the same document.

Every call carries the same information: current, total and a message
(pre-formatted outside the timed loop). Each figure is the median over
``--repeats`` batches of ``--calls`` calls, in µs per call (``time.perf_counter``,
GC paused while timing); the columns take turns within every repeat.

Then it counts Redis round trips (commands sent plus pipelines, counted by a
``redis.Connection`` subclass on the client side) over one job lifecycle per
library: start, ``--lifecycle-calls`` progress calls paced by a 10 ms sleep
every 100 calls (so the job lasts about a second, like a real one), finish.
Ours: ``start()`` to ``wait()`` of a tracked job, including the writer thread,
heartbeats and the cancel listener; since its count depends on timing (a flush
every 0.25 s, a listener sweep every second), it is the median of
``--lifecycle-repeats`` runs. RQ: ``enqueue`` then a ``SimpleWorker``
burst run in this process (worker registration included). Celery:
``task.apply()`` with ``task_store_eager_result``, so the result backend gets
the PROGRESS updates and the SUCCESS result a worker would write; the broker's
publish, fetch and ack, and the STARTED write of ``task_track_started``, are
not counted (a lower bound).

It starts its own redis-server on a free loopback port (never 6379) and stops
it at the end. Needs ``redis-server`` on PATH, and ``pip install -e '.[bench]'``
(redis, rq, celery[redis]).

Run from the repository root::

    python bench/progress.py                # 5 repeats x 10,000 calls, lifecycles of 10,000
    python bench/progress.py --quick        # smoke run: 3 x 1,000 calls, lifecycles still of 10,000
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from _common import (
    add_common_options,
    counting_client,
    counting_connection_class,
    environment,
    fill_defaults,
    make_app,
    markdown_table,
    median,
    panel,
    redis_server,
    timed,
    write_json,
)
from flask import Flask

try:
    import _alt_jobs
    import celery
    import rq
    from celery import Celery
    from rq import Queue, SimpleWorker
    from rq.job import Job
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    raise SystemExit(f"bench/progress.py needs rq and celery: pip install -e '.[bench]' ({exc})")

from flask_asyncstate import AsyncState, JobContext
from flask_asyncstate.stores.redis import client_from_url

QUICK_CALLS, QUICK_REPEATS = 1_000, 3
DEFAULT_CALLS, DEFAULT_REPEATS = 10_000, 5
QUICK = {"calls": QUICK_CALLS, "repeats": QUICK_REPEATS}
DEFAULTS = {"calls": DEFAULT_CALLS, "repeats": DEFAULT_REPEATS}
#: Pause of the lifecycle jobs every 100 progress calls.
PACE = 0.01
#: Progress calls of the counted lifecycle (the issue's figure; --quick keeps it too).
LIFECYCLE_CALLS = 10_000
#: Runs of our lifecycle whose median is reported.
LIFECYCLE_REPEATS = 3
#: Target: round trips of our whole lifecycle (start, LIFECYCLE_CALLS calls, finish).
TARGET_ROUND_TRIPS = 10
#: Target ratios "alternative / ours" stated in the caption (not asserted).
TARGETS = {"RQ": 100.0, "Celery": 300.0}

#: Runs ``n`` progress calls and returns the seconds they took.
Batch = Callable[[int], float]


def messages(n: int) -> list[str]:
    """The message of call ``i`` at index ``i`` (formatted once, outside the timing)."""
    return [f"{i:,} of {n:,} rows" for i in range(n + 1)]


# -- ours: make_app("bench-progress", ...), on Redis, default flush and heartbeat intervals


@dataclass
class Ours:
    """Tracked jobs whose function times its own loop of progress calls."""

    app: Flask
    ext: AsyncState
    text: list[str]

    def __post_init__(self) -> None:
        ext = self.ext
        self.timings: list[float] = []
        self.last: dict[str, Any] | None = None

        @ext.job(name="bench_progress")
        def loop(job: JobContext, n: int) -> int:
            text = self.text

            def body() -> None:
                for i in range(1, n + 1):
                    job.progress(i, total=n, message=text[i])

            self.timings.append(timed(body))
            return n

        self.job = loop

    def batch(self, n: int) -> float:
        with self.app.app_context():
            doc = self.job.start(n).wait(60)
        assert doc is not None and doc["status"] == "succeeded", doc
        self.last = doc
        return self.timings[-1]

    def check(self, n: int) -> None:
        assert self.last is not None
        if (self.last["current"], self.last["total"]) != (n, n):
            raise RuntimeError(f"ours: last document is {self.last!r}")


# -- alternatives -----------------------------------------------------------------


def rq_batch(client: redis.Redis, text: list[str]) -> tuple[Batch, Callable[[int], None]]:
    """``job.meta[...] = ...; job.save_meta()`` on one saved RQ job; and its check."""
    job = Job.create(_alt_jobs.noop, connection=client)
    job.save()

    def batch(n: int) -> float:
        def body() -> None:
            for i in range(1, n + 1):
                job.meta["progress"] = {"current": i, "total": n, "message": text[i]}
                job.save_meta()

        return timed(body)

    def check(n: int) -> None:
        meta = Job.fetch(job.id, connection=client).meta["progress"]
        if meta["current"] != n:
            raise RuntimeError(f"rq: stored meta is {meta!r}")

    return batch, check


def progress_task(self: Any, n: int, pace: float) -> int:
    """The Celery task of the lifecycle count: ``n`` PROGRESS updates, a pause every 100."""
    for i in range(1, n + 1):
        meta = {"current": i, "total": n, "message": f"{i:,} of {n:,} rows"}
        self.update_state(state="PROGRESS", meta=meta)
        if pace and i % 100 == 0:
            time.sleep(pace)
    return n


def celery_app(url: str) -> Celery:
    """A Celery app with Redis as broker and result backend; eager runs store their results."""
    app = Celery("bench_progress", broker=url, backend=url, set_as_current=False)
    app.conf.update(task_store_eager_result=True)
    app.task(bind=True, name="bench.progress_task")(progress_task)
    return app


def celery_batch(app: Celery, text: list[str]) -> tuple[Batch, Callable[[int], None]]:
    """``task.update_state(task_id=..., state="PROGRESS", meta=...)``; and its check."""
    task = app.tasks["bench.progress_task"]
    task_id = str(uuid.uuid4())

    def batch(n: int) -> float:
        def body() -> None:
            for i in range(1, n + 1):
                meta = {"current": i, "total": n, "message": text[i]}
                task.update_state(task_id=task_id, state="PROGRESS", meta=meta)

        return timed(body)

    def check(n: int) -> None:
        meta = app.backend.get_task_meta(task_id)
        if meta["status"] != "PROGRESS" or meta["result"]["current"] != n:
            raise RuntimeError(f"celery: stored meta is {meta!r}")

    return batch, check


def bare_batch(client: redis.Redis, text: list[str]) -> tuple[Batch, Callable[[int], None]]:
    """``SET key json.dumps(doc)``; and its check."""
    key = "bench:bare-progress"

    def batch(n: int) -> float:
        def body() -> None:
            for i in range(1, n + 1):
                client.set(key, json.dumps({"current": i, "total": n, "message": text[i]}))

        return timed(body)

    def check(n: int) -> None:
        doc = json.loads(client.get(key) or "null")
        if doc["current"] != n:
            raise RuntimeError(f"bare: stored document is {doc!r}")

    return batch, check


# -- per-call timing --------------------------------------------------------------


def measure(batches: dict[str, Batch], calls: int, repeats: int) -> dict[str, float]:
    """Median µs per call of each column; one short warm-up batch each first."""
    for batch in batches.values():
        batch(min(calls, 200))
    samples: dict[str, list[float]] = {name: [] for name in batches}
    for _ in range(repeats):
        for name, batch in batches.items():
            samples[name].append(batch(calls) / calls * 1e6)
    return {name: median(values) for name, values in samples.items()}


# -- round trips per lifecycle ------------------------------------------------------


@dataclass
class Lifecycle:
    """Round trips of one job lifecycle and how long it took."""

    round_trips: int
    seconds: float


def ours_lifecycle(url: str, n: int, repeats: int = 1) -> Lifecycle:
    """``start()`` .. ``wait()`` of a job making ``n`` paced progress calls (after a warm-up job).

    The median of ``repeats`` jobs, one after another in the same app.
    """
    counter = counting_connection_class()
    app, ext = make_app("bench-progress", redis_client=counting_client(url, counter))

    @ext.job(name="bench_lifecycle")
    def paced(job: JobContext, n: int) -> int:
        for i in range(1, n + 1):
            job.progress(i, total=n, message=f"{i:,} of {n:,} rows")
            if i % 100 == 0:
                time.sleep(PACE)
        return n

    runs: list[Lifecycle] = []
    try:
        with app.app_context():
            paced.start(0).wait(30)  # threads, listener, scripts: once per process, not per job
            ext.app_state().store.subscribed.wait(5)  # type: ignore[attr-defined]
            for _ in range(repeats):
                before, start = counter.sent, time.perf_counter()
                doc = paced.start(n).wait(120)
                seconds, used = time.perf_counter() - start, counter.sent - before
                assert doc is not None and doc["status"] == "succeeded" and doc["current"] == n, doc
                runs.append(Lifecycle(used, seconds))
    finally:
        ext.shutdown(2)
    return Lifecycle(int(median([r.round_trips for r in runs])), median([r.seconds for r in runs]))


def rq_lifecycle(url: str, n: int) -> Lifecycle:
    """``enqueue`` then a ``SimpleWorker`` burst (in this process) running the job."""
    counter = counting_connection_class()
    client = counting_client(url, counter)
    queue = Queue("bench-lifecycle", connection=client)
    before, start = counter.sent, time.perf_counter()
    job = queue.enqueue(_alt_jobs.progress_job, n, PACE)
    SimpleWorker([queue], connection=client).work(burst=True, logging_level="WARNING")
    seconds, used = time.perf_counter() - start, counter.sent - before
    job = Job.fetch(job.id, connection=client)
    assert job.get_status() == "finished", job.get_status()
    client.close()
    return Lifecycle(used, seconds)


def celery_lifecycle(url: str, n: int) -> Lifecycle:
    """``task.apply()`` storing n x PROGRESS and SUCCESS in the result backend."""
    counter = counting_connection_class()
    app = celery_app(url)
    app.backend.connparams["connection_class"] = counter
    task = app.tasks["bench.progress_task"]
    task.apply(args=(0, 0.0))  # warm-up: connection, imports
    before, start = counter.sent, time.perf_counter()
    result = task.apply(args=(n, PACE))
    seconds, used = time.perf_counter() - start, counter.sent - before
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


# -- output -------------------------------------------------------------------------

LABELS = {
    "ours": "ours: `job.progress(i, total=N, message=...)`",
    "RQ": 'RQ: `job.meta["progress"] = {...}; job.save_meta()`',
    "Celery": 'Celery: `task.update_state(state="PROGRESS", meta={...})`',
    "bare": "bare redis-py: `SET key json.dumps({...})`",
}


def cost_table(results: dict[str, float]) -> str:
    ours = results["ours"]
    rows = [
        [
            LABELS[name],
            f"{us:.2f}" if us < 10 else f"{us:.1f}",
            "1x" if name == "ours" else f"{us / ours:,.0f}x",
        ]
        for name, us in results.items()
    ]
    return markdown_table(["progress call", "µs per call (median)", "alternative / ours"], rows)


def cost_caption(results: dict[str, float], calls: int, repeats: int) -> str:
    verdicts = []
    for name, target in TARGETS.items():
        ratio = results[name] / results["ours"]
        verdicts.append(
            f"{name} {ratio:,.0f}x (target >= {target:.0f}x: "
            f"{'met' if ratio >= target else 'NOT met'})"
        )
    return (
        f"Cost of one progress call, {repeats} repeats x {calls:,} calls, median. "
        f"Target: ours >= 100x cheaper than RQ and >= 300x cheaper than Celery; "
        f"this run: {'; '.join(verdicts)}."
    )


def lifecycle_table(runs: dict[str, tuple[Lifecycle, Lifecycle]], n: int) -> str:
    rows = []
    for name, (empty, full) in runs.items():
        added = full.round_trips - empty.round_trips
        rows.append(
            [
                name,
                f"{empty.round_trips:,}",
                f"{full.round_trips:,}",
                f"{added:,}",
                f"{added / n:.4f}",
                f"{full.seconds:.2f}",
            ]
        )
    header = [
        "library",
        "round trips, job with 0 calls",
        f"round trips, job with {n:,} calls",
        f"added by the {n:,} calls",
        "per call",
        f"{n:,}-call job wall time (s)",
    ]
    return markdown_table(header, rows)


def lifecycle_caption(runs: dict[str, tuple[Lifecycle, Lifecycle]], n: int, repeats: int) -> str:
    ours = runs["ours"][1].round_trips
    verdict = "met" if ours <= TARGET_ROUND_TRIPS else "NOT met"
    return (
        f"Redis round trips per job lifecycle (start, {n:,} progress calls with a 10 ms pause "
        f"every 100, finish), counted on the client side. Target: ours constant, <= "
        f"{TARGET_ROUND_TRIPS} per lifecycle; this run: {ours} ({verdict}). Ours writes at "
        f"most once per flush interval (0.25 s), so its count grows with the job's duration, "
        f"not with its calls (ours: median of {repeats} jobs). RQ includes a burst worker's "
        f"registration; Celery excludes broker traffic."
    )


# -- driver -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, help=f"calls per batch (default {DEFAULT_CALLS:,})")
    parser.add_argument(
        "--repeats", type=int, help=f"batches per figure (default {DEFAULT_REPEATS})"
    )
    parser.add_argument(
        "--lifecycle-calls",
        type=int,
        default=LIFECYCLE_CALLS,
        help=f"progress calls of the counted lifecycle (default {LIFECYCLE_CALLS:,}, --quick too)",
    )
    parser.add_argument(
        "--lifecycle-repeats",
        type=int,
        default=LIFECYCLE_REPEATS,
        help=f"our lifecycles, median reported (default {LIFECYCLE_REPEATS})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_REPEATS} x {QUICK_CALLS:,} unless told otherwise",
    )
    add_common_options(parser)
    args = fill_defaults(parser.parse_args(argv), DEFAULTS, QUICK)
    if min(args.calls, args.repeats, args.lifecycle_calls, args.lifecycle_repeats) < 1:
        parser.error("--calls, --repeats and --lifecycle-calls/-repeats must be positive")
    return args


def per_call_costs(url: str, calls: int, repeats: int) -> tuple[dict[str, float], str]:
    """The per-call medians and the environment line."""
    text = messages(calls)
    app, ext = make_app("bench-progress", redis_url=url)
    client = client_from_url(url)
    capp = celery_app(url)
    try:
        ours = Ours(app, ext, text)
        rq_run, rq_check = rq_batch(client, text)
        celery_run, celery_check = celery_batch(capp, text)
        bare_run, bare_check = bare_batch(client, text)
        results = measure(
            {"ours": ours.batch, "RQ": rq_run, "Celery": celery_run, "bare": bare_run},
            calls,
            repeats,
        )
        for check in (ours.check, rq_check, celery_check, bare_check):
            check(calls)
        env = environment(client, f"rq {rq.__version__}, celery {celery.__version__}")
    finally:
        ext.shutdown(2)
        client.close()
    return results, env


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with redis_server(args.redis_url) as server:
        results, env = per_call_costs(server.url, args.calls, args.repeats)
        runs = lifecycles(server.url, args.lifecycle_calls, args.lifecycle_repeats)
    print(env)
    print()
    print(cost_caption(results, args.calls, args.repeats))
    print()
    print(cost_table(results))
    print()
    print(lifecycle_caption(runs, args.lifecycle_calls, args.lifecycle_repeats))
    print()
    print(lifecycle_table(runs, args.lifecycle_calls))
    n = args.lifecycle_calls
    write_json(
        args.json,
        {
            "per_call_us": results,
            "round_trips": {
                name: {"empty": e.round_trips, "full": f.round_trips, "seconds": f.seconds}
                for name, (e, f) in runs.items()
            },
            "panels": [
                panel(
                    "progress.py: cost of one progress call, alternative / ours",
                    "x",
                    [
                        (name, us / results["ours"], TARGETS.get(name))
                        for name, us in results.items()
                        if name != "ours"
                    ],
                    reference=1.0,
                ),
                panel(
                    f"progress.py: Redis round trips, lifecycle with {n:,} calls",
                    "round trips",
                    [(name, float(full.round_trips)) for name, (_e, full) in runs.items()],
                    target=TARGET_ROUND_TRIPS,
                    target_label=f"target ours <= {TARGET_ROUND_TRIPS}",
                ),
            ],
        },
    )


if __name__ == "__main__":
    main()
