"""Start overhead: ``TrackedJob.start()`` against flask-executor's ``Executor.submit`` and a bare ``ThreadPoolExecutor.submit``.

What it measures, in one process, against one ``redis-server`` on loopback:

- ours, memory store: ``job.start()`` of a tracked job that returns at once, in
  an app without Redis (the embedded default), an app context pushed;
- ours, Redis store: the same with ``ASYNCSTATE_REDIS_URL`` (the ``queued``
  document is written to Redis before ``start()`` returns: one round trip);
- flask-executor: ``executor.submit(fn)`` (``EXECUTOR_TYPE = "thread"``), which
  wraps ``fn`` in copies of the app and request contexts; it refuses to run
  without a request context, so its batches run inside
  ``app.test_request_context()``;
- bare: ``ThreadPoolExecutor.submit(fn)``.

Every pool has 4 threads (``ASYNCSTATE_MAX_WORKERS`` / ``EXECUTOR_MAX_WORKERS``),
every function returns at once. Only the submitting call is timed: a batch of
``--calls`` calls (``time.perf_counter``, GC paused), then, untimed, the batch
is waited for. The pool threads run the batch's jobs while it is being
submitted, as they would in an app; for ours they also write the ``running``
and final documents. Figures are the median over ``--repeats`` batches, in µs
per call; the columns take turns within every repeat, after a warm-up batch
each. No request context: ``start()`` outside a request binds no session.

It starts its own redis-server on a free loopback port (never 6379) unless
given ``--redis-url``. Needs ``pip install -e '.[bench]'`` (flask-executor).

Run from the repository root::

    python bench/start.py                  # 5 repeats x 2,000 calls (about 15 s)
    python bench/start.py --quick          # 3 x 300 (about 3 s)
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from importlib.metadata import version
from typing import Any

from _common import (
    add_common_options,
    environment,
    fill_defaults,
    gc_paused,
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
    from flask_executor import Executor
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    raise SystemExit(f"bench/start.py needs flask-executor: pip install -e '.[bench]' ({exc})")

from flask_asyncstate import AsyncState, JobContext

WORKERS = 4
#: Calls per repeat timed one at a time (each waited for before the next).
SINGLE_CALLS = 400
QUICK_CALLS, QUICK_REPEATS = 300, 3
DEFAULT_CALLS, DEFAULT_REPEATS = 2_000, 5
QUICK = {"calls": QUICK_CALLS, "repeats": QUICK_REPEATS}
DEFAULTS = {"calls": DEFAULT_CALLS, "repeats": DEFAULT_REPEATS}
COLUMNS = ("ours-memory", "ours-redis", "flask-executor", "bare")
LABELS = {
    "ours-memory": "ours, memory store: `job.start()`",
    "ours-redis": "ours, Redis store: `job.start()`",
    "flask-executor": "flask-executor: `executor.submit(fn)`",
    "bare": "bare: `ThreadPoolExecutor.submit(fn)`",
}


def nothing() -> None:
    """What the pools run: returns at once."""


class Column:
    """Submits ``n`` calls and waits for them; ``submit`` is what gets timed."""

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
            seconds = timed(body)
            self.wait(results)
        return seconds / n * 1e6

    def one_at_a_time(self, n: int) -> list[float]:
        """µs of each of ``n`` submitting calls, each timed alone and waited for (untimed)."""
        submit, clock = self.submit, time.perf_counter
        out: list[float] = []
        with self.context(), gc_paused():
            for _ in range(n):
                start = clock()
                result = submit()
                out.append((clock() - start) * 1e6)
                self.wait([result])
        return out


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


def ours(redis_url: str | None) -> tuple[Column, AsyncState]:
    """Our column: the memory store (``redis_url`` None) or Redis, ``WORKERS`` job threads."""
    # A burst is a few thousand starts: room for all of them in the queue (this measures the
    # call, not admission; ASYNCSTATE_MAX_QUEUED's refusal is flood.py's subject).
    app, ext = make_app(
        "bench-start",
        redis_url=redis_url,
        ASYNCSTATE_MAX_WORKERS=WORKERS,
        ASYNCSTATE_MAX_QUEUED=100_000,
    )

    @ext.job(name="bench_start_nothing")
    def job(ctx: JobContext) -> None:
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
        name: {"burst": median(bursts[name]), "single": median(singles[name])} for name in columns
    }


def signing_cost(ext: AsyncState, app: Flask, n: int = 2000) -> float:
    """µs per ``signer.sign(job_id)``: the token ``start()`` signs before returning."""
    with app.app_context():
        signer = ext.app_state().signer
        return (
            timed(lambda: [signer.sign("0123456789abcdef0123456789abcdef") for _ in range(n)])
            / n
            * 1e6
        )


def table(results: dict[str, dict[str, float]], calls: int) -> str:
    rows = []
    base, executor = results["bare"], results["flask-executor"]
    for name in COLUMNS:
        single, burst = results[name]["single"], results[name]["burst"]
        rows.append(
            [
                LABELS[name],
                f"{single:.1f}",
                f"{single / base['single']:.1f}x",
                f"{single / executor['single']:.1f}x",
                f"{burst:.1f}",
                f"{burst / base['burst']:.1f}x",
                f"{burst / executor['burst']:.1f}x",
            ]
        )
    header = [
        "submit call",
        "one at a time µs",
        "/ ThreadPoolExecutor",
        "/ flask-executor",
        f"burst of {calls:,} µs",
        "/ ThreadPoolExecutor",
        "/ flask-executor",
    ]
    return markdown_table(header, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, help=f"calls per batch (default {DEFAULT_CALLS:,})")
    parser.add_argument(
        "--repeats", type=int, help=f"batches per figure (default {DEFAULT_REPEATS})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_REPEATS} x {QUICK_CALLS} unless told otherwise",
    )
    add_common_options(parser)
    args = fill_defaults(parser.parse_args(argv), DEFAULTS, QUICK)
    if not (1 <= args.calls <= 100_000) or not (1 <= args.repeats <= 50):
        parser.error("--calls must be 1..100,000 and --repeats 1..50")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with redis_server(args.redis_url) as server:
        memory_column, memory_ext = ours(None)
        redis_column, redis_ext = ours(server.url)
        columns = {
            "ours-memory": memory_column,
            "ours-redis": redis_column,
            "flask-executor": flask_executor(),
            "bare": bare(),
        }
        try:
            results = measure(columns, args.calls, args.repeats)
            assert memory_column.app is not None
            sign_us = signing_cost(memory_ext, memory_column.app)
            with redis_column.app.app_context():  # type: ignore[union-attr]
                held = len(redis_ext.app_state().store.held_keys())
        finally:
            for column in columns.values():
                column.close()
        env = environment(server.url, f"flask-executor {version('flask-executor')}")
    single_calls = max(1, min(args.calls, SINGLE_CALLS))
    print(env)
    print()
    print(
        f"Cost of the submitting call, median µs: one at a time ({args.repeats} x "
        f"{single_calls:,} calls, each timed alone, the pool idle) and in bursts "
        f"({args.repeats} bursts of {args.calls:,}, the pool threads running the burst's "
        f"functions meanwhile); {WORKERS} pool threads each, functions that return at once, "
        f"app context pushed, no request (flask-executor: in a test request context, which it "
        f"requires). Signing a job's token (itsdangerous) costs about {sign_us:.0f} µs more, paid "
        f"on first use of `handle.token`, not in `start()`. After the run the Redis app "
        f"held {held:,} cancel Events (0 expected once every job has finished)."
    )
    print()
    print(table(results, args.calls))
    write_json(
        args.json,
        {
            "us_per_call": results,
            "sign_us": sign_us,
            "panels": [
                panel(
                    "start.py: µs per submit call / ThreadPoolExecutor.submit (one at a time; burst)",
                    "x",
                    [
                        (
                            f"{LABELS[name].split(':')[0]}, {kind}",
                            results[name][kind] / results["bare"][kind],
                        )
                        for name in COLUMNS
                        if name != "bare"
                        for kind in ("single", "burst")
                    ],
                    reference=1.0,
                )
            ],
        },
    )


if __name__ == "__main__":
    main()
