"""Cost of the submitting call: ``TrackedJob.start()`` against flask-executor and ``ThreadPoolExecutor``.

In one process, against one redis-server on loopback, every pool with 4
threads, every function returning at once, an app context pushed and no
request (``start()`` outside a request binds no session):

- ours, memory store: ``job.start()`` in an app without Redis;
- ours, Redis store: the same with ``ASYNCSTATE_REDIS_URL`` (the ``queued``
  document is written before ``start()`` returns: one round trip);
- flask-executor: ``executor.submit(fn)`` (``EXECUTOR_TYPE = "thread"``), which
  copies the app and request contexts; it refuses to run without a request
  context, so its calls run inside ``test_request_context()``;
- bare: ``ThreadPoolExecutor.submit(fn)``.

Two figures per column, medians in µs: one at a time (each call timed alone,
then waited for untimed, so the pool is idle: the call's own cost), and in
bursts of ``--calls`` (the loop timed as a whole while the pool threads run
the burst, for ours writing each job's ``running`` and final documents: what a
view starting many jobs at once sees). The columns take turns after a warm-up
each. Also printed: the cost of signing a job's token (paid on first use of
``handle.token``), and the cancel Events still held after the run (0 expected).

Target: ours (memory store), one at a time, <= 1.5x flask-executor's ``submit``.

    python bench/start.py                # 5 x 400 single calls, 5 bursts of 2,000 (about 15 s)
    python bench/start.py --quick        # 3 x 300, 3 bursts of 300 (about 3 s)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from importlib.metadata import version
from typing import Any

import harness
from flask import Flask

try:
    from flask_executor import Executor
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    raise SystemExit(f"bench/start.py needs flask-executor: pip install -e '.[bench]' ({exc})")

TARGET = harness.Target("ours (memory store) / flask-executor, one call at a time", "<=", 1.5, "x")
WORKERS = 4
#: Calls per repeat timed one at a time (each waited for before the next).
SINGLE_CALLS = 400
FULL = {"calls": 2_000, "repeats": 5}
QUICK = {"calls": 300, "repeats": 3}
HELP = {"calls": "calls per burst", "repeats": "bursts per figure"}
LABELS = {
    "ours-memory": "ours, memory store: `job.start()`",
    "ours-redis": "ours, Redis store: `job.start()`",
    "flask-executor": "flask-executor: `executor.submit(fn)`",
    "bare": "bare: `ThreadPoolExecutor.submit(fn)`",
}


def nothing() -> None:
    """What the pools run: returns at once."""


class Column:
    """Submits calls and waits for them; ``submit`` is what gets timed."""

    def __init__(
        self,
        submit: Callable[[], Any],
        wait: Callable[[list[Any]], None],
        close: Callable[[], None],
        app: Flask | None = None,
        in_request: bool = False,
    ) -> None:
        self.submit, self.wait, self.close, self.app = submit, wait, close, app
        self.in_request = in_request

    def context(self) -> Any:
        if self.app is None:
            return contextlib.nullcontext()
        return self.app.test_request_context() if self.in_request else self.app.app_context()

    def burst(self, n: int) -> float:
        """µs per submitting call of a burst of ``n``; the burst is drained before returning."""
        results: list[Any] = []
        submit, append = self.submit, results.append

        def body() -> None:
            for _ in range(n):
                append(submit())

        with self.context():
            seconds = harness.timed(body)
            self.wait(results)
        return seconds / n * 1e6

    def one_at_a_time(self, n: int) -> list[float]:
        """µs of each of ``n`` submitting calls, each timed alone and waited for (untimed)."""
        with self.context():
            return harness.each_timed(self.submit, n, after=lambda result: self.wait([result]))


def wait_handles(handles: list[Any]) -> None:
    for handle in handles:
        doc = handle.wait(60)
        if doc is None or doc["status"] != "succeeded":
            raise RuntimeError(f"a started job ended {doc!r}")


def wait_all(futures: list[Future[Any]]) -> None:
    done, not_done = wait_futures(futures, timeout=60)
    if not_done:
        raise RuntimeError(f"{len(not_done)} submitted calls did not finish within 60 s")
    for future in done:
        future.result()


def ours(redis_url: str | None) -> tuple[Column, harness.AsyncState]:
    """Our column: the memory store (``redis_url`` None) or Redis, ``WORKERS`` job threads."""
    # room in the queue for a whole burst: this measures the call, not admission (flood.py's)
    app, ext = harness.make_app(
        "bench-start",
        redis_url=redis_url,
        ASYNCSTATE_MAX_WORKERS=WORKERS,
        ASYNCSTATE_MAX_QUEUED=100_000,
    )

    @ext.job(name="bench_start_nothing")
    def job(ctx: harness.JobContext) -> None:
        return None

    return Column(job.start, wait_handles, lambda: ext.shutdown(2), app), ext


def flask_executor() -> Column:
    """flask-executor's column: an app of its own, without flask-asyncstate."""
    app = Flask("bench-start-executor")
    app.config.update(EXECUTOR_TYPE="thread", EXECUTOR_MAX_WORKERS=WORKERS)
    executor = Executor(app)
    return Column(
        lambda: executor.submit(nothing),
        wait_all,
        lambda: executor._self.shutdown(wait=True),
        app,
        in_request=True,
    )


def bare() -> Column:
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    return Column(lambda: pool.submit(nothing), wait_all, lambda: pool.shutdown(wait=True))


def measure(columns: dict[str, Column], calls: int, repeats: int) -> dict[str, dict[str, float]]:
    """Per column: median µs per call in bursts, and of single calls made one at a time."""
    single_calls = max(1, min(calls, SINGLE_CALLS))
    for column in columns.values():
        column.burst(min(calls, 200))
        column.one_at_a_time(min(single_calls, 50))
    bursts: dict[str, list[float]] = {name: [] for name in columns}
    singles: dict[str, list[float]] = {name: [] for name in columns}
    for _ in range(repeats):
        for name, column in columns.items():
            bursts[name].append(column.burst(calls))
            singles[name] += column.one_at_a_time(single_calls)
    return {
        name: {"burst": harness.median(bursts[name]), "single": harness.median(singles[name])}
        for name in columns
    }


def main(argv: list[str] | None = None) -> None:
    found = harness.parser(__doc__, FULL, QUICK, HELP)
    args = harness.parse(found, argv, {"calls": (1, 100_000), "repeats": (1, 50)})
    report = harness.Report(__file__, args)
    with harness.redis_server(args.redis_url) as server:
        memory, memory_ext = ours(None)
        red, redis_ext = ours(server.url)
        columns = {
            "ours-memory": memory,
            "ours-redis": red,
            "flask-executor": flask_executor(),
            "bare": bare(),
        }
        try:
            us = measure(columns, args.calls, args.repeats)
            with memory.context():  # what handle.token costs on first use
                sign, job_id = harness.signer(memory_ext).sign, "0123456789abcdef" * 2
                sign_us = harness.timed(lambda: [sign(job_id) for _ in range(2000)]) / 2000 * 1e6
            with red.context():
                held = harness.held_events(redis_ext)
        finally:
            for column in columns.values():
                column.close()
        env = harness.environment(server.url, f"flask-executor {version('flask-executor')}")
    singles = max(1, min(args.calls, SINGLE_CALLS))
    ratio = us["ours-memory"]["single"] / us["flask-executor"]["single"]
    met = report.check(TARGET, ratio, "one at a time")
    report.out(
        env,
        f"Cost of the submitting call, median µs: one at a time ({args.repeats} x {singles:,} "
        f"calls, each timed alone, the pool idle) and in bursts ({args.repeats} bursts of "
        f"{args.calls:,}, the pool threads running the burst's functions meanwhile); {WORKERS} "
        f"pool threads each, functions that return at once, app context pushed, no request "
        f"(flask-executor: in a test request context, which it requires). Signing a job's token "
        f"costs about {sign_us:.0f} µs more, paid on first use of `handle.token`, "
        f"not in `start()`. After the run the Redis app held {held:,} cancel Events (0 expected "
        f"once every job has finished).",
    )
    header = ["submit call"]
    rows: list[list[str]] = [[LABELS[name]] for name in LABELS]
    for kind, title in (("single", "one at a time µs"), ("burst", f"burst of {args.calls:,} µs")):
        header += [title, "/ ThreadPoolExecutor", "/ flask-executor"]
        for row, name in zip(rows, LABELS):
            value = us[name][kind]
            row += [f"{value:.1f}", f"{value / us['bare'][kind]:.1f}x"]
            row.append(f"{value / us['flask-executor'][kind]:.1f}x")
    report.table(header, rows)
    report.summary(
        f"`start()`, one at a time; in a burst of {args.calls:,}",
        f"memory {us['ours-memory']['single']:.0f} / {us['ours-memory']['burst']:.0f} µs, "
        f"Redis {us['ours-redis']['single']:.0f} / {us['ours-redis']['burst']:.0f} µs",
        f"flask-executor {us['flask-executor']['single']:.0f} / "
        f"{us['flask-executor']['burst']:.0f} µs, `ThreadPoolExecutor.submit` "
        f"{us['bare']['single']:.0f} / {us['bare']['burst']:.0f} µs",
        "memory, one at a time: <= 1.5x flask-executor",
        met,
    )
    report.figures.update(us_per_call=us, sign_us=sign_us, held_events=held)
    report.panel(
        harness.panel(
            "start.py: µs per submit call / ThreadPoolExecutor.submit (one at a time; burst)",
            "x",
            [
                (f"{LABELS[name].split(':')[0]}, {kind}", us[name][kind] / us["bare"][kind])
                for name in LABELS
                if name != "bare"
                for kind in ("single", "burst")
            ],
            reference=1.0,
        )
    )
    report.finish()


if __name__ == "__main__":
    main()
