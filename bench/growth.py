"""Cost as the work grows: running jobs, open event streams and instances, one run, current code.

Three questions, each asked at several sizes against one ``redis-server`` on
loopback, with the library's default intervals (flush every
``ASYNCSTATE_FLUSH_INTERVAL`` = 0.25 s, heartbeat every 5 s):

1. Running jobs on one instance (``--jobs``: 1, 10, 100, 1,000). A fresh OS
   process (spawn) per size runs an app with ``ASYNCSTATE_MAX_WORKERS`` = N and
   N I/O-bound jobs, each looping ``job.progress(i)`` then a random 10-50 ms
   wait, so every job is dirty at every writer tick (they wait at a gate
   until all have started). Over ``--window`` seconds:

   - Redis round trips of the whole process, counted on the client side by a
     ``redis.Connection`` subclass (one per command sent, one per pipeline)
     and sorted by the sending thread: the writer, the listener, the rest; per
     second and per writer tick. The writer's ``lifecycle.flush`` is wrapped
     (on the instance, in the bench process only) to count the round trips,
     thread CPU time (``time.thread_time``) and wall time of each flush;
   - the writer thread's whole CPU time (its ``pthread_getcpuclockid`` clock:
     flush, heartbeat, timeouts), divided by the ticks;
   - the commands the server ran (``INFO commandstats`` deltas, Lua-inner
     commands included, the bench's own ``INFO``, ``TIME`` and ``HGETALL``
     left out);
   - staleness: this process reads every job's document every 30-90 ms with a
     separate client (one pipeline: ``TIME``, then an ``HGETALL`` per job) and
     compares its ``current`` with the job's own counter: each job logs the
     wall-clock time at which each ``progress(i)`` call returned, so a
     document that still shows ``c`` when the server read it (``TIME``) had
     been stale since the call ``c + 1`` returned (0 if it had not yet).
     Redis and Python read the same ``CLOCK_REALTIME``, and neither this
     process's scheduling nor the read's transfer counts.

   Targets: <= 2 round trips per tick whatever N; p99 staleness <= 2 flush
   intervals.

2. Open ``/events`` streams on ONE gunicorn gevent worker (``--streams``: 10,
   100, 1,000; --quick 10, 100). ``bench/_growth_app.py`` under ``gunicorn -k
   gevent --workers 1 --worker-connections S+100``, its Redis client on a
   ``BlockingConnectionPool`` of ``--pool`` (100) connections as the
   deployment docs advise, ``ASYNCSTATE_MAX_STREAMS`` and ``max_streams_per_owner`` =
   S (every stream from one cookie session), one job (``--stream-jobs``)
   calling ``job.progress(i, message=str(time.time()))`` every ``--period``
   (0.3 s: one write per update). S raw-socket HTTP/1.0 clients in one
   ``selectors`` loop in this process read the streams (opened 100 at a time,
   each until its first frame); over ``--stream-window`` seconds every data
   frame's arrival (``time.time()`` when ``select`` returned) minus the time
   in its message is the update-to-frame latency, and the server's command
   count (``INFO commandstats``) divided by the updates gives Redis commands
   per update. Targets: p99 update-to-frame <= 2 flush intervals; commands
   per update independent of the number of streams (stated as: the figure at
   the most streams within 1.5x of the one at the fewest).

3. Instances on one Redis (``--instances``: 1, 2, 4): separate OS processes
   (spawn), each an app holding a watcher (``store.watch`` of a key of its
   own, as an open stream would), so its listener subscribes for it besides
   ``<prefix>cancel``; instance 0 runs a job that makes no writes and ignores
   cancels. Each instance in turn sends its share of ``--polls`` ``GET
   /asyncstate/progress/<token>`` and then of ``--cancels`` ``POST
   /asyncstate/cancel/<token>`` through its Flask test client (cookie session
   with the job's owner, so sessions cost Redis nothing); then instance 0
   writes the job's document ``--writes`` times (``store.write``, what the
   writer's flush does per job). Per request: server commands (``INFO
   commandstats`` deltas; the instances' heartbeats and sweeps, a few
   commands a second, included) and the listener wake-ups it causes, summed
   over the instances (each instance's ``store.watchers.notify`` wrapped and
   counted: one per message its listener heard). No target: flat commands
   are expected.

Nothing is asserted. Every process started here (the spawned instances,
gunicorn, a throwaway redis-server) is stopped at the end, also on failure or
SIGTERM, and every loop and wait is bounded.

Run from the repository root::

    python bench/growth.py                  # 1-1,000 jobs, 10-1,000 streams, 1-4 instances (about 70 s)
    python bench/growth.py --quick          # shorter windows, 10 and 100 streams (about 40 s)
    python bench/growth.py --parts streams --streams 10,100,300,1000
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import logging
import math
import multiprocessing
import os
import queue
import random
import re
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from _common import (
    KEY_PREFIX,
    ROOT,
    SECRET,
    add_common_options,
    environment,
    fill_defaults,
    make_app,
    markdown_table,
    median,
    percentile,
    port_of,
    redis_server,
    write_json,
)
from gunicorn_server import GunicornServer

from flask_asyncstate.config import DEFAULTS as CONFIG_DEFAULTS

HERE = os.path.dirname(os.path.abspath(__file__))
SPAWN = multiprocessing.get_context("spawn")
FLUSH = float(CONFIG_DEFAULTS["ASYNCSTATE_FLUSH_INTERVAL"])
HEARTBEAT = float(CONFIG_DEFAULTS["ASYNCSTATE_HEARTBEAT_INTERVAL"])
PARTS = ("jobs", "streams", "instances")

#: Targets stated in the captions (not asserted).
TARGET_ROUND_TRIPS_PER_TICK = 2.0
TARGET_STALENESS = 2 * FLUSH
TARGET_FRAME_LATENCY = 2 * FLUSH
#: "Independent of the number of streams": the most streams' figure within this of the fewest's.
FLAT_RATIO = 1.5

#: Part 1: each job's wait between two progress calls, uniform in seconds.
PAUSE = (0.010, 0.050)
#: Part 1: the reader's wait between two reads of every document, uniform in seconds.
READ_EVERY = (0.030, 0.090)
#: Part 2: streams opened at once before waiting for their first frames.
OPEN_BATCH = 100
#: Part 3: the owner both the job and every instance's test client carry.
OWNER = "bench-growth-owner"

DEFAULTS = {
    "jobs": "1,10,100,1000",
    "window": 5.0,
    "streams": "10,100,1000",
    "stream_window": 8.0,
    "instances": "1,2,4",
    "polls": 400,
    "cancels": 200,
    "writes": 200,
}
QUICK = {
    "jobs": "1,10,100,1000",
    "window": 2.0,
    "streams": "10,100",
    "stream_window": 3.0,
    "instances": "1,2,4",
    "polls": 100,
    "cancels": 50,
    "writes": 50,
}


# -- shared helpers ---------------------------------------------------------------------


def next_message(inbox: Any, what: str, proc: Any, timeout: float = 60.0) -> tuple[Any, ...]:
    """The next message from a child process; a clear error if it failed, died or went silent."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            message: tuple[Any, ...] = inbox.get(timeout=0.5)
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{what} exited (code {proc.exitcode})") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} sent nothing for {timeout:g} s") from None
            continue
        if message and message[0] == "error":
            raise RuntimeError(f"{what} failed: {message[1]}\n{message[2]}")
        return message


def stop_process(proc: Any, grace: float = 10.0) -> None:
    """Join a child; SIGTERM then SIGKILL it if it does not end by itself."""
    proc.join(grace)
    if proc.is_alive():
        proc.terminate()
        proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


def command_stats(client: redis.Redis) -> Counter[str]:
    """Calls per command name so far (``INFO commandstats``; Lua-inner commands included)."""
    stats = client.info("commandstats")
    return Counter(
        {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}
    )


def commands_between(
    before: Counter[str], after: Counter[str], ignore: Sequence[str] = ()
) -> Counter[str]:
    """Commands run between two snapshots, the bench's own (``info``, ``ignore``) left out."""
    delta = Counter({k: after[k] - before.get(k, 0) for k in after})
    for name in ("info", *ignore):
        delta.pop(name, None)
    return +delta


def run_child(target: Callable[..., None], outbox: Any, *args: Any) -> None:
    """Run ``target(*args)`` in a child; any failure goes to the parent with its traceback."""
    try:
        target(*args)
    except BaseException as exc:
        outbox.put(("error", repr(exc), traceback.format_exc()))
        raise


def max_of(values: Any) -> float:
    """The largest value that is a number (NaN: none)."""
    found = [v for v in values if not math.isnan(v)]
    return max(found) if found else float("nan")


def nan_low(value: float) -> float:
    """A sort key that ranks NaN below everything."""
    return float("-inf") if math.isnan(value) else value


def fmt(value: float, digits: int = 2) -> str:
    """A figure with a sensible number of digits."""
    if math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def loglog_panel(
    title: str,
    x_label: str,
    unit: str,
    series: dict[str, Sequence[tuple[float, float]]],
    *,
    target: float | None = None,
    target_label: str = "",
) -> dict[str, Any]:
    """A line panel of run.py's chart, both axes on a log scale (``kind: loglog``)."""
    return {
        "kind": "loglog",
        "title": title,
        "x_label": x_label,
        "unit": unit,
        "series": [
            {"label": label, "points": [[float(x), float(y)] for x, y in points]}
            for label, points in series.items()
        ],
        "target": target,
        "target_label": target_label,
    }


# -- 1. running jobs on one instance ----------------------------------------------------

#: Round trips this process sent, by the kind of thread that sent them (in each child).
TALLY: Counter[str] = Counter()
TALLY_LOCK = threading.Lock()


def thread_kind(name: str) -> str:
    if name.startswith("asyncstate-writer"):
        return "writer"
    if name.startswith("asyncstate-listener"):
        return "listener"
    return "other"


class ThreadCountingConnection(redis.Connection):
    """Counts round trips (one per command sent, one per pipeline) by the sending thread's kind."""

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        kind = thread_kind(threading.current_thread().name)
        with TALLY_LOCK:
            TALLY[kind] += 1
        return super().send_packed_command(command, check_health)


def jobs_instance(url: str, n: int, seed: int, inbox: Any, outbox: Any) -> None:
    """Child: N running jobs on one app; counts and times its writer between "begin" and "end"."""
    from flask_asyncstate import JobContext

    pool = redis.ConnectionPool(
        connection_class=ThreadCountingConnection, host="127.0.0.1", port=port_of(url)
    )
    app, ext = make_app(
        "bench-growth-jobs",
        redis_client=redis.Redis(connection_pool=pool),
        ASYNCSTATE_MAX_WORKERS=n,
        ASYNCSTATE_MAX_QUEUED=n + 10,
    )
    times: list[list[float]] = [[] for _ in range(n)]
    stop = threading.Event()
    go = threading.Event()  # every job waits for the others to start (a quick start)
    arrived: list[int] = []

    @ext.job(name="bench_growth_io")
    def io_job(job: JobContext, index: int, job_seed: int) -> int:
        """``progress(i)`` then a 10-50 ms wait, until told to stop (bounded)."""
        rng = random.Random(job_seed)
        mine = times[index]
        arrived.append(index)
        if not go.wait(120):
            return 0
        for i in range(1, 100_000):
            job.progress(i)
            mine.append(time.time())  # the in-memory counter is i by now
            if stop.wait(rng.uniform(*PAUSE)) or job.cancelled.is_set():
                break
        return len(mine)

    try:
        with app.app_context():
            state = ext.app_state()
            handles = [io_job.start(i, seed * 100_003 + i) for i in range(n)]
            deadline = time.monotonic() + 60
            while len(arrived) < n or sum(1 for t in times if t) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {sum(1 for t in times if t)} of {n} jobs started")
                if len(arrived) == n:
                    go.set()
                time.sleep(0.02)
            time.sleep(3 * FLUSH)  # every running document written at least once
            writer = state.writer.thread  # type: ignore[attr-defined]
            assert writer is not None and writer.ident is not None
            writer_clock = time.pthread_getcpuclockid(writer.ident)
            ticks: list[tuple[float, float, int, float]] = []  # cpu s, wall s, round trips, start
            lifecycle = state.lifecycle
            original = lifecycle.flush

            def timed_flush() -> None:
                sent = TALLY["writer"]
                cpu, wall, began = time.thread_time(), time.perf_counter(), time.monotonic()
                try:
                    original()
                finally:
                    ticks.append(
                        (
                            time.thread_time() - cpu,
                            time.perf_counter() - wall,
                            TALLY["writer"] - sent,
                            began,
                        )
                    )

            lifecycle.flush = timed_flush  # type: ignore[method-assign]
            keys = [state.records.job_key(h.id) for h in handles]
            outbox.put(("ready", keys))
            kind = inbox.get(timeout=120)
            assert kind == "begin", kind
            with TALLY_LOCK:
                sent0 = Counter(TALLY)
            cpu0, at0, tick0 = time.clock_gettime(writer_clock), time.monotonic(), len(ticks)
            outbox.put(("begun",))
            kind = inbox.get(timeout=120)
            assert kind == "end", kind
            with TALLY_LOCK:
                sent1 = Counter(TALLY)
            cpu1, at1, tick1 = time.clock_gettime(writer_clock), time.monotonic(), len(ticks)
            stop.set()
            # N jobs ending at once overflow redis-py's default pool of 100 connections with
            # their final writes, which are deferred and retried: not what this part measures.
            logging.getLogger("flask_asyncstate").setLevel(logging.ERROR)
            outbox.put(
                (
                    "done",
                    {
                        "seconds": at1 - at0,
                        "sent": dict(sent1 - sent0),
                        "writer_cpu": cpu1 - cpu0,
                        "ticks": ticks[tick0:tick1],
                        "times": times,
                        "threads": threading.active_count(),
                    },
                )
            )
    finally:
        stop.set()
        go.set()
        ext.shutdown(5)


@dataclass
class JobsRow:
    """Part 1, one size."""

    jobs: int
    seconds: float
    sent: dict[str, int]
    writer_cpu: float
    ticks: list[tuple[float, float, int, float]]
    commands: Counter[str]
    staleness: list[float]
    reads: int
    #: progress() calls per second of all jobs together, during the reads.
    calls_per_second: float

    @property
    def tick_count(self) -> int:
        """Flushes completed in the window."""
        return len(self.ticks)

    def _per_tick(self, value: float) -> float:
        return value / self.tick_count if self.ticks else float("nan")

    @property
    def per_second(self) -> float:
        return sum(self.sent.values()) / self.seconds

    @property
    def per_tick(self) -> float:
        return self._per_tick(sum(self.sent.values()))

    def kind_per_tick(self, kind: str) -> float:
        return self._per_tick(self.sent.get(kind, 0))

    @property
    def flush_trips_max(self) -> float:
        return max((t[2] for t in self.ticks), default=float("nan"))

    @property
    def flush_trips_median(self) -> float:
        return median([t[2] for t in self.ticks]) if self.ticks else float("nan")

    @property
    def writer_cpu_ms_per_tick(self) -> float:
        return self._per_tick(self.writer_cpu * 1000)

    @property
    def commands_per_tick(self) -> float:
        return self._per_tick(sum(self.commands.values()))

    def flush_cpu_ms(self, pct: float) -> float:
        return percentile([t[0] for t in self.ticks], pct) * 1000 if self.ticks else float("nan")

    def flush_wall_ms(self, pct: float) -> float:
        return percentile([t[1] for t in self.ticks], pct) * 1000 if self.ticks else float("nan")

    @property
    def tick_period(self) -> float:
        return self._per_tick(self.seconds)

    @property
    def longest_gap_ms(self) -> float:
        """The longest time from one flush's start to the next one's (heartbeats fall between)."""
        starts = [t[3] for t in self.ticks]
        return max((b - a for a, b in itertools.pairwise(starts)), default=float("nan")) * 1000

    def stale_ms(self, pct: float) -> float:
        return percentile(self.staleness, pct) * 1000 if self.staleness else float("nan")


def staleness_of(
    reads: list[tuple[float, list[int | None]]], times: list[list[float]]
) -> list[float]:
    """Seconds each read document had been stale: since the job's counter passed ``current``.

    ``reads`` holds (server time of the read, each job's ``current``); ``times[j][i]`` is the
    wall-clock time job j's call ``progress(i + 1)`` returned, so the call after ``current``
    is ``times[j][current]``; 0 when the job had not moved on yet.
    """
    ages: list[float] = []
    for at, currents in reads:
        for current, calls in zip(currents, times):
            if current is None:
                continue
            if current < len(calls) and calls[current] <= at:
                ages.append(at - calls[current])
            else:
                ages.append(0.0)
    return ages


def measure_jobs(url: str, n: int, window: float, seed: int) -> JobsRow:
    inbox, outbox = SPAWN.Queue(), SPAWN.Queue()
    proc = SPAWN.Process(
        target=run_child, args=(jobs_instance, outbox, url, n, seed, inbox, outbox), daemon=True
    )
    proc.start()
    reader = redis.Redis.from_url(url)
    rng = random.Random(seed)
    what = f"the {n}-job instance"
    try:
        _kind, keys = next_message(outbox, what, proc, 120)
        inbox.put("begin")
        next_message(outbox, what, proc)
        before = command_stats(reader)
        reads: list[tuple[float, list[int | None]]] = []
        end = time.monotonic() + window
        while time.monotonic() < end:  # bounded by the window
            pipe = reader.pipeline(transaction=False)
            pipe.time()  # the server's clock as it runs the reads: no delay of ours counts
            for key in keys:
                pipe.hgetall(key)
            (seconds, micros), *rows = pipe.execute()
            reads.append(
                (
                    seconds + micros / 1e6,
                    [json.loads(row[b"d"])["current"] if row.get(b"d") else None for row in rows],
                )
            )
            time.sleep(rng.uniform(*READ_EVERY))
        after = command_stats(reader)
        inbox.put("end")
        _kind, result = next_message(outbox, what, proc, 120)
    finally:
        reader.close()
        stop_process(proc, 30)
    return JobsRow(
        jobs=n,
        seconds=result["seconds"],
        sent=result["sent"],
        writer_cpu=result["writer_cpu"],
        ticks=[tuple(t) for t in result["ticks"]],  # type: ignore[misc]
        commands=commands_between(before, after, ignore=("hgetall", "time")),
        staleness=staleness_of(reads, result["times"]),
        reads=len(reads),
        calls_per_second=calls_between(result["times"], reads[0][0], reads[-1][0]),
    )


def calls_between(times: list[list[float]], start: float, end: float) -> float:
    """progress() calls per second of all jobs together between two wall-clock times."""
    if end <= start:
        return float("nan")
    return sum(start <= t <= end for calls in times for t in calls) / (end - start)


def jobs_table(rows: list[JobsRow]) -> str:
    base = rows[0]
    out = []
    for r in rows:
        out.append(
            [
                f"{r.jobs:,}",
                f"{r.tick_count} ({r.tick_period:.3f} s)" if r.ticks else "0 (none completed)",
                fmt(r.per_second, 1),
                fmt(r.per_tick),
                " / ".join(fmt(r.kind_per_tick(k)) for k in ("writer", "listener", "other")),
                f"{fmt(r.flush_trips_median, 0)} / {fmt(r.flush_trips_max, 0)}",
                fmt(r.commands_per_tick, 1),
                fmt(r.writer_cpu_ms_per_tick),
                f"{fmt(r.flush_cpu_ms(50))} / {fmt(r.flush_cpu_ms(99))}",
                f"{fmt(r.flush_wall_ms(50))} / {fmt(r.flush_wall_ms(99))}",
                fmt(r.writer_cpu_ms_per_tick / base.writer_cpu_ms_per_tick, 1) + "x",
            ]
        )
    header = [
        "running jobs",
        "writer ticks (s apart)",
        "round trips/s, process",
        "round trips per tick, process",
        "per tick: writer / listener / other",
        "flush round trips, median / max",
        "server commands per tick",
        "writer CPU ms per tick",
        "flush CPU ms p50 / p99",
        "flush wall ms p50 / p99",
        f"writer CPU per tick / {base.jobs:,} job(s)",
    ]
    return markdown_table(header, out)


def staleness_table(rows: list[JobsRow]) -> str:
    out = [
        [
            f"{r.jobs:,}",
            f"{r.calls_per_second:,.0f} ({r.calls_per_second / r.jobs:.0f} per job)",
            fmt(r.longest_gap_ms, 0),
            f"{r.reads:,} x {r.jobs:,}",
            fmt(r.stale_ms(50), 1),
            fmt(r.stale_ms(99), 1),
            fmt(r.stale_ms(100), 1),
            f"{r.stale_ms(99) / 1000 / FLUSH:.2f}",
        ]
        for r in rows
    ]
    header = [
        "running jobs",
        "progress calls/s, all jobs",
        "longest gap between two flushes ms",
        "documents read",
        "staleness p50 ms",
        "p99 ms",
        "max ms",
        "p99 / flush interval",
    ]
    return markdown_table(header, out)


def jobs_captions(rows: list[JobsRow], window: float, load: float) -> tuple[str, str]:
    flush_max = max_of(r.flush_trips_max for r in rows)
    process_max = max_of(r.per_tick for r in rows)
    worst = max(rows, key=lambda r: nan_low(r.stale_ms(99)))
    stalled = [f"{r.jobs:,}" for r in rows if not r.ticks]
    if stalled:
        stall_note = (
            f" At {', '.join(stalled)} job(s) no flush completed in the window: per-tick "
            f"figures there are '-', and the staleness below shows the wait."
        )
    else:
        stall_note = ""
    first = (
        f"Running I/O-bound jobs on one instance (a fresh process per row, "
        f"ASYNCSTATE_MAX_WORKERS = jobs; each job: `progress(i)`, then a random "
        f"{PAUSE[0] * 1000:.0f}-{PAUSE[1] * 1000:.0f} ms wait), {window:g} s window per row, "
        f"load average {load:.2f} at the start. Round trips counted on the client side (a "
        f"counting `redis.Connection`: one per command, one per pipeline), by the sending "
        f"thread; server commands from `INFO commandstats` (Lua-inner commands included); "
        f"writer CPU from the writer thread's own CPU clock (flush, heartbeat every "
        f"{HEARTBEAT:g} s, timeouts), divided by its ticks. Target: <= "
        f"{TARGET_ROUND_TRIPS_PER_TICK:g} round trips per tick whatever the number of jobs; "
        f"this run: the writer's flush at most {flush_max:.0f} per tick "
        f"({'met' if flush_max <= TARGET_ROUND_TRIPS_PER_TICK else 'NOT met'}), the whole "
        f"process at most {process_max:.2f} per tick "
        f"({'met' if process_max <= TARGET_ROUND_TRIPS_PER_TICK else 'NOT met'}).{stall_note}"
    )
    second = (
        f"Staleness of the documents when read from another process (every document every "
        f"{READ_EVERY[0] * 1000:.0f}-{READ_EVERY[1] * 1000:.0f} ms, one pipeline, timed by the "
        f"server's `TIME` in it): how long the job's counter had already been past the "
        f"`current` the document showed (each job logs when each `progress(i)` returned; a "
        f"job at ~{2 / (PAUSE[0] + PAUSE[1]):.0f} calls/s is the nominal pace). Target: p99 <= 2 "
        f"flush intervals ({TARGET_STALENESS * 1000:.0f} ms); this run: worst p99 "
        f"{worst.stale_ms(99):.0f} ms at {worst.jobs:,} jobs "
        f"({'met' if worst.stale_ms(99) / 1000 <= TARGET_STALENESS else 'NOT met'})."
    )
    return first, second


# -- 2. open event streams on one gevent worker -------------------------------------------


class GrowthGunicorn(GunicornServer):
    """``gunicorn -k gevent --workers 1`` running bench/_growth_app.py on a free loopback port."""

    def __init__(self, redis_url: str, streams: int, pool: int, log_dir: str) -> None:
        super().__init__(
            log_dir,
            workers=1,
            worker_class="gevent",
            worker_connections=streams + 100,
            graceful_timeout=5.0,
            extra_args=("--log-level", "warning"),
            env={
                "BENCH_GROWTH_REDIS_URL": redis_url,
                "BENCH_GROWTH_MAX_STREAMS": str(streams),
                "BENCH_GROWTH_POOL": str(pool),
                "SECRET_KEY": SECRET,
                "PYTHONPATH": os.pathsep.join([HERE, ROOT, os.environ.get("PYTHONPATH", "")]),
            },
        )

    def command(self) -> list[str]:
        return [*super().command()[:-1], "_growth_app:create_app()"]


def send(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, Any]:
    """One request on a fresh connection: (status, body, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response.headers
    finally:
        conn.close()


def http_json(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    status, body, _ = send(port, method, path, headers)
    if status != 200:
        raise RuntimeError(f"{method} {path} answered {status}: {body[:300]!r}")
    return json.loads(body)


@dataclass
class Stream:
    """One SSE client connection (HTTP/1.0, so the body is the raw event stream)."""

    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    status: int | None = None
    data_frames: int = 0
    events: Counter[str] = field(default_factory=Counter)
    closed: bool = False


class StreamClients:
    """Many SSE clients on raw non-blocking sockets in one ``selectors`` loop (this thread)."""

    def __init__(self, port: int, path: str, cookie: str) -> None:
        self.port = port
        self.request = (
            f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        self.selector = selectors.DefaultSelector()
        self.streams: list[Stream] = []
        self.on_frame: Callable[[float, dict[str, Any]], None] | None = None

    def open(self, count: int) -> list[Stream]:
        opened = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.sendall(self.request)
            sock.setblocking(False)
            stream = Stream(sock)
            self.selector.register(sock, selectors.EVENT_READ, stream)
            self.streams.append(stream)
            opened.append(stream)
        return opened

    def pump(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        """Read whatever arrives for ``seconds`` (or until ``until()``); frames to ``on_frame``."""
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end and not (until is not None and until()):
            ready = self.selector.select(timeout=min(0.05, end - now))
            arrived = time.time()
            for key, _mask in ready:
                stream: Stream = key.data
                try:
                    chunk = stream.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    self._drop(stream)
                    continue
                stream.buffer += chunk
                self._frames(stream, arrived)

    def _drop(self, stream: Stream) -> None:
        stream.closed = True
        self.selector.unregister(stream.sock)
        stream.sock.close()

    def _frames(self, stream: Stream, arrived: float) -> None:
        buffer = stream.buffer
        if stream.status is None:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            status_line = bytes(buffer[: buffer.find(b"\r\n")]).decode("latin-1")
            stream.status = int(status_line.split()[1])
            del buffer[: head_end + 4]
            if stream.status != 200:
                return
        while (end := buffer.find(b"\n\n")) >= 0:
            frame = bytes(buffer[:end]).decode("utf-8")
            del buffer[: end + 2]
            name, data = "message", None
            for line in frame.split("\n"):
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
            if data is None:
                continue  # retry: and : ping
            stream.events[name] += 1
            if name == "message":
                stream.data_frames += 1
                if self.on_frame is not None:
                    self.on_frame(arrived, json.loads(data))

    def close(self) -> None:
        for stream in self.streams:
            if not stream.closed:
                self._drop(stream)
        self.streams = []
        self.selector.close()


@dataclass
class StreamsRow:
    """Part 2, one size."""

    streams: int
    seconds: float
    updates: int
    latencies: list[float]
    commands: Counter[str]
    events: Counter[str]
    clients: int
    refused: int

    @property
    def per_update(self) -> float:
        return sum(self.commands.values()) / self.updates if self.updates else float("nan")

    def of(self, name: str) -> float:
        return self.commands.get(name, 0) / self.updates if self.updates else float("nan")

    @property
    def delivered(self) -> float:
        expected = self.updates * self.streams
        return len(self.latencies) / expected if expected else float("nan")

    def ms(self, pct: float) -> float:
        return percentile(self.latencies, pct) * 1000 if self.latencies else float("nan")


def wait_streams(port: int, count: int, timeout: float) -> int:
    """Poll ``/bench/streams`` until ``count`` streams are open there; the last count seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = int(http_json(port, "GET", "/bench/streams")["open"])
        if seen == count or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def measure_streams(
    port: int, path: str, cookie: str, n: int, window: float, admin: redis.Redis
) -> StreamsRow:
    clients = StreamClients(port, path, cookie)
    try:
        opened = 0
        while opened < n:  # in batches, each read until every stream has its first frame
            batch = clients.open(min(OPEN_BATCH, n - opened))
            opened += len(batch)

            def settled(batch: list[Stream] = batch) -> bool:
                return all(
                    s.closed or (s.status not in (None, 200)) or s.data_frames for s in batch
                )

            clients.pump(30, settled)
        refused = sum(1 for s in clients.streams if s.status != 200 or s.closed)
        before = command_stats(admin)
        start = time.time()
        latencies: list[float] = []
        updates: set[tuple[str, int]] = set()

        def frame(arrived: float, doc: dict[str, Any]) -> None:
            try:
                sent = float(doc.get("message") or "nan")
            except ValueError:
                return
            if sent >= start:  # an update made inside the window
                latencies.append(arrived - sent)
                updates.add((doc["id"], doc["current"]))

        clients.on_frame = frame
        clients.pump(window)
        after = command_stats(admin)
        seconds = time.time() - start
        connected = int(admin.info("clients")["connected_clients"])
        events: Counter[str] = Counter()
        for s in clients.streams:
            events.update(s.events)
    finally:
        clients.close()
    wait_streams(port, 0, 15)  # the server notices closed sockets at its next write
    return StreamsRow(
        streams=n,
        seconds=seconds,
        updates=len(updates),
        latencies=latencies,
        commands=commands_between(before, after),
        events=events,
        clients=connected,
        refused=refused,
    )


def run_streams(url: str, sizes: list[int], args: argparse.Namespace) -> list[StreamsRow]:
    admin = redis.Redis.from_url(url)
    log_dir = tempfile.mkdtemp(prefix="asyncstate-bench-growth-")
    server = GrowthGunicorn(url, max(sizes), args.pool, log_dir)
    rows: list[StreamsRow] = []
    try:
        server.start()
        budget = 60 + len(sizes) * (args.stream_window + 40)
        status, body, headers = send(
            server.port,
            "POST",
            f"/bench/start?jobs={args.stream_jobs}&period={args.period}&seconds={budget:.0f}",
        )
        if status != 200:
            raise RuntimeError(f"/bench/start answered {status}: {body[:300]!r}")
        tokens = json.loads(body)["tokens"]
        match = re.search(r"(session=[^;,\s]+)", headers.get("Set-Cookie") or "")
        if not match:
            raise RuntimeError(f"no session cookie in {headers.get('Set-Cookie')!r}")
        cookie = match.group(1)
        time.sleep(3 * FLUSH)
        for n in sizes:
            # one job: every stream on it; several: the streams spread over them in turn
            path = f"/asyncstate/events/{tokens[0]}"
            rows.append(measure_streams(server.port, path, cookie, n, args.stream_window, admin))
        send(server.port, "POST", "/bench/stop")
    except BaseException:
        sys.stderr.write(f"gunicorn log:\n{server.log_text(4000)}\n")
        raise
    finally:
        server.stop()
        admin.close()
        shutil.rmtree(log_dir, ignore_errors=True)
    return rows


def top_commands(commands: Counter[str], per: float, count: int = 4) -> str:
    return ", ".join(f"{name} {calls / per:.1f}" for name, calls in commands.most_common(count))


def streams_table(rows: list[StreamsRow]) -> str:
    base = rows[0]
    out = []
    for r in rows:
        out.append(
            [
                f"{r.streams:,}" + (f" ({r.refused} refused)" if r.refused else ""),
                f"{r.updates}",
                f"{r.delivered:.0%}",
                fmt(r.ms(50), 1),
                fmt(r.ms(99), 1),
                fmt(r.ms(100), 1),
                fmt(r.per_update, 1),
                top_commands(r.commands, r.updates),
                f"{r.per_update / base.per_update:.1f}x",
                str(r.events.get("unavailable", 0)),
                str(r.clients),
            ]
        )
    header = [
        "open streams",
        "updates in window",
        "frames delivered",
        "update-to-frame p50 ms",
        "p99 ms",
        "max ms",
        "Redis commands per update",
        "most run, per update",
        f"commands per update / {base.streams:,} streams",
        "`unavailable` frames",
        "Redis clients",
    ]
    return markdown_table(header, out)


def streams_caption(rows: list[StreamsRow], args: argparse.Namespace, load: float) -> str:
    worst = max(rows, key=lambda r: nan_low(r.ms(99)))
    ratio = rows[-1].per_update / rows[0].per_update
    return (
        f"Open `/events` streams on one gunicorn gevent worker (`-k gevent --workers 1 "
        f"--worker-connections {max(r.streams for r in rows) + 100}`), Redis client on a "
        f"BlockingConnectionPool of {args.pool}, {args.stream_jobs} job(s) calling "
        f"`progress()` every {args.period:g} s, every stream on the first job; raw-socket "
        f"clients in one selector loop in the bench process; {args.stream_window:g} s window per "
        f"row; load average {load:.2f} at the start. Latency: arrival (`time.time()` when "
        f"`select` returned) minus the time the job put in the message; Redis commands: "
        f"`INFO commandstats` deltas over the window divided by the updates (Lua-inner "
        f"commands included). Targets: p99 update-to-frame <= 2 flush intervals "
        f"({TARGET_FRAME_LATENCY * 1000:.0f} ms), this run worst p99 {worst.ms(99):.0f} ms at "
        f"{worst.streams:,} streams ({'met' if worst.ms(99) / 1000 <= TARGET_FRAME_LATENCY else 'NOT met'}); "
        f"Redis commands per update independent of the streams (within {FLAT_RATIO:g}x from "
        f"{rows[0].streams:,} to {rows[-1].streams:,}), this run {ratio:.1f}x "
        f"({'met' if ratio <= FLAT_RATIO else 'NOT met'})."
    )


# -- 3. instances on one Redis --------------------------------------------------------------

PROGRESS_PATH = "/asyncstate/progress/"
CANCEL_PATH = "/asyncstate/cancel/"
#: What each instance does in turn, and the table's name for one of it.
OPERATIONS = {
    "poll": "poll: `GET /progress/<token>`",
    "cancel": "cancel: `POST /cancel/<token>`",
    "write": "document write (`store.write`, the job's instance)",
}


class QuietCookieWarning(logging.Filter):
    """Drops the library's one-off note that an app uses Flask's cookie session (on purpose here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "cookie session" not in record.getMessage()


def cluster_instance(url: str, index: int, inbox: Any, outbox: Any) -> None:
    """Child: one instance holding a watcher (its listener subscribes for it); serves commands."""
    import flask

    from flask_asyncstate import JobContext
    from flask_asyncstate.owners import OWNER_KEY

    logging.getLogger("flask_asyncstate").addFilter(QuietCookieWarning())
    app, ext = make_app("bench-growth-instance", redis_url=url)
    release = threading.Event()
    heard = [0]

    @ext.job(name="bench_growth_silent")
    def silent(job: JobContext) -> None:
        """Runs without writing anything, and ignores cancels, until released (bounded)."""
        release.wait(600)

    try:
        with app.app_context():
            state = ext.app_state()
            store = state.store
            notify = getattr(getattr(store, "watchers", None), "notify", None)
            if notify is not None:  # count every message the listener hands to the watchers

                def counting_notify(*args: Any, **kwargs: Any) -> Any:
                    heard[0] += 1
                    return notify(*args, **kwargs)

                store.watchers.notify = counting_notify  # type: ignore[attr-defined]

            def watch() -> None:
                with store.watch(store.key("bench.growth.watch", str(index))):
                    release.wait(600)

            threading.Thread(target=watch, daemon=True, name="bench-watcher").start()
            if index == 0:
                with app.test_request_context("/"):
                    flask.session[OWNER_KEY] = OWNER
                    token = silent.start().token
                outbox.put(("token", token))
            else:
                kind, token = inbox.get(timeout=120)
                assert kind == "token", kind
            key = state.records.job_key(state.signer.unsign(token))
            store.subscribed.wait(10)  # type: ignore[attr-defined]
            client = app.test_client()
            with client.session_transaction() as sess:
                sess[OWNER_KEY] = OWNER
            headers = {"X-Requested-With": "XMLHttpRequest"}
            warm = client.get(PROGRESS_PATH + token)  # connections, scripts, token memo
            assert warm.status_code == 200, (warm.status_code, warm.get_data(as_text=True))
            outbox.put(("ready", index))
            for _ in range(1000):  # bounded: a handful of commands per size
                command = inbox.get(timeout=300)
                if command[0] == "stop":
                    break
                if command[0] == "heard":
                    outbox.put(("heard", heard[0] if notify is not None else -1))
                    continue
                what, count = command
                if what == "write":
                    entry = store.read(key, refresh=False)
                    assert entry is not None
                for _ in range(count):
                    if what == "poll":
                        answer = client.get(PROGRESS_PATH + token)
                        ok = answer.status_code == 200
                    elif what == "cancel":
                        answer = client.post(CANCEL_PATH + token, headers=headers)
                        ok = answer.status_code == 202
                    else:
                        ok = store.write(key, entry.data)
                    if not ok:
                        raise RuntimeError(f"{what} failed")
                outbox.put(("did", what, count))
    finally:
        release.set()
        ext.shutdown(2)


def subscriptions(admin: redis.Redis, prefix: str) -> tuple[int, int, int]:
    """(subscribers of ``<prefix>cancel``, other channels of ours, their subscriptions)."""
    names = [
        c.decode() if isinstance(c, bytes) else str(c) for c in admin.pubsub_channels(prefix + "*")
    ]
    counts = {
        c.decode() if isinstance(c, bytes) else str(c): int(n)
        for c, n in (admin.pubsub_numsub(*names) if names else [])
    }
    cancel = counts.pop(f"{prefix}cancel", 0)
    return cancel, len(counts), sum(counts.values())


@dataclass
class Operation:
    """Part 3: one kind of request at one size."""

    count: int
    commands: Counter[str]
    heard: int
    seconds: float

    @property
    def per_op(self) -> float:
        return sum(self.commands.values()) / self.count

    @property
    def heard_per_op(self) -> float:
        return self.heard / self.count if self.heard >= 0 else float("nan")


@dataclass
class InstancesRow:
    """Part 3, one size."""

    instances: int
    subscriptions: tuple[int, int, int]
    ops: dict[str, Operation]


def measure_instances(url: str, k: int, counts: dict[str, int], prefix: str) -> InstancesRow:
    admin = redis.Redis.from_url(url)
    boxes = [(SPAWN.Queue(), SPAWN.Queue()) for _ in range(k)]
    procs = [
        SPAWN.Process(
            target=run_child, args=(cluster_instance, outbox, url, i, inbox, outbox), daemon=True
        )
        for i, (inbox, outbox) in enumerate(boxes)
    ]
    for proc in procs:
        proc.start()

    def ask(i: int, message: tuple[Any, ...]) -> tuple[Any, ...]:
        boxes[i][0].put(message)
        return next_message(boxes[i][1], f"instance {i}", procs[i], 120)

    try:
        _kind, token = next_message(boxes[0][1], "instance 0", procs[0], 120)
        for inbox, _outbox in boxes[1:]:
            inbox.put(("token", token))
        for i, (_inbox, outbox) in enumerate(boxes):
            next_message(outbox, f"instance {i}", procs[i], 120)
        deadline = time.monotonic() + 10
        while True:  # every listener on the cancel channel and on its watcher's (bounded)
            subs = subscriptions(admin, prefix)
            if (subs[0] >= k and subs[2] >= k) or time.monotonic() > deadline:
                break
            time.sleep(0.05)

        def heard() -> int:
            found = [int(ask(i, ("heard",))[1]) for i in range(k)]
            return -1 if min(found) < 0 else sum(found)

        ops: dict[str, Operation] = {}
        time.sleep(2 * FLUSH)
        for what, total in counts.items():
            senders = [0] if what == "write" else list(range(k))
            shares = [total // len(senders) + (i < total % len(senders)) for i in senders]
            heard0, before, start = heard(), command_stats(admin), time.monotonic()
            for i, share in zip(senders, shares):
                ask(i, (what, share))
            seconds = time.monotonic() - start
            after = command_stats(admin)
            heard1 = heard()
            ops[what] = Operation(
                total,
                commands_between(before, after),
                -1 if min(heard0, heard1) < 0 else heard1 - heard0,
                seconds,
            )
    finally:
        for inbox, _outbox in boxes:
            inbox.put(("stop",))
        for proc in procs:
            stop_process(proc)
        admin.close()
    return InstancesRow(k, subs, ops)


def instances_table(rows: list[InstancesRow]) -> str:
    base = rows[0]
    out = []
    for what, label in OPERATIONS.items():
        for r in rows:
            op = r.ops[what]
            out.append(
                [
                    label,
                    f"{r.instances}",
                    f"{r.subscriptions[0]} / {r.subscriptions[1]} / {r.subscriptions[2]}",
                    f"{op.count:,}",
                    fmt(op.per_op),
                    top_commands(op.commands, op.count, 5),
                    f"{op.per_op / base.ops[what].per_op:.2f}x",
                    fmt(op.heard_per_op),
                ]
            )
    header = [
        "request",
        "instances",
        "subscribers of cancel / change channels / their subscribers",
        "requests",
        "Redis commands per request",
        "most run, per request",
        f"commands / {base.instances} instance(s)",
        "listener wake-ups per request, all instances",
    ]
    return markdown_table(header, out)


def instances_caption(rows: list[InstancesRow], load: float) -> str:
    counts = {what: rows[0].ops[what].count for what in OPERATIONS}
    return (
        f"Instances on one Redis (separate processes, each holding a watcher on a key of its "
        f"own, as an open stream would, so its listener subscribes for it; instance 0 runs a "
        f"job that writes nothing and ignores cancels), load average {load:.2f} at the start. "
        f"Each instance in turn sends its share of {counts['poll']:,} `GET "
        f"/asyncstate/progress/<token>` and of {counts['cancel']:,} `POST "
        f"/asyncstate/cancel/<token>` through its Flask test client (cookie session: no Redis "
        f"for sessions); then instance 0 writes the job's document {counts['write']:,} times "
        f"(`store.write`, what a flush does per job). Commands: `INFO commandstats` deltas "
        f"divided by the requests (Lua-inner commands and the instances' background work "
        f"included: heartbeats every {HEARTBEAT:g} s, the listener's sweep "
        f"every second); wake-ups: messages the listeners handed to their watchers, all "
        f"instances together (each instance's `watchers.notify` counted). No target; flat "
        f"commands are expected."
    )


def run_instances(url: str, sizes: list[int], args: argparse.Namespace) -> list[InstancesRow]:
    counts = {"poll": args.polls, "cancel": args.cancels, "write": args.writes}
    return [measure_instances(url, k, counts, KEY_PREFIX) for k in sizes]


# -- driver --------------------------------------------------------------------------------


def sizes(text: str, low: int, high: int, what: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise SystemExit(f"--{what} takes comma-separated integers, got {text!r}") from None
    if not values or values[0] < low or values[-1] > high:
        raise SystemExit(f"--{what} values must be {low}..{high}, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}"
    )
    parser.add_argument("--jobs", help="part 1: running jobs per row (default 1,10,100,1000)")
    parser.add_argument("--window", type=float, help="part 1: seconds per row (default 5, quick 2)")
    parser.add_argument(
        "--streams", help="part 2: open streams per row (default 10,100,1000, quick 10,100)"
    )
    parser.add_argument(
        "--stream-window", type=float, help="part 2: seconds per row (default 8, quick 3)"
    )
    parser.add_argument(
        "--stream-jobs", type=int, default=1, help="part 2: running jobs in the worker (1)"
    )
    parser.add_argument(
        "--period", type=float, default=0.3, help="part 2: seconds between progress calls (0.3)"
    )
    parser.add_argument(
        "--pool", type=int, default=100, help="part 2: the worker's Redis pool size (100)"
    )
    parser.add_argument("--instances", help="part 3: instances per row (default 1,2,4)")
    parser.add_argument("--polls", type=int, help="part 3: polls per row (default 400, quick 100)")
    parser.add_argument(
        "--cancels", type=int, help="part 3: cancels per row (default 200, quick 50)"
    )
    parser.add_argument(
        "--writes", type=int, help="part 3: document writes per row (default 200, quick 50)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the random waits")
    parser.add_argument("--quick", action="store_true", help="smoke run: shorter windows")
    add_common_options(parser)
    args = fill_defaults(parser.parse_args(argv), DEFAULTS, QUICK)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not args.parts or set(args.parts) - set(PARTS):
        parser.error(f"--parts takes a subset of {', '.join(PARTS)}")
    args.jobs = sizes(args.jobs, 1, 2000, "jobs")
    args.streams = sizes(args.streams, 1, 2000, "streams")
    args.instances = sizes(args.instances, 1, 8, "instances")
    if not (0.5 <= args.window <= 60 and 0.5 <= args.stream_window <= 60):
        parser.error("--window and --stream-window must be 0.5..60 s")
    if not (1 <= args.stream_jobs <= 4 and 0.05 <= args.period <= 5 and 1 <= args.pool <= 5000):
        parser.error("--stream-jobs must be 1..4, --period 0.05..5 s, --pool 1..5000")
    if not all(1 <= n <= 100_000 for n in (args.polls, args.cancels, args.writes)):
        parser.error("--polls, --cancels and --writes must be 1..100,000")
    return args


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(f"bench/growth.py: signal {signum}, stopping what it started")

    signal.signal(signal.SIGTERM, terminated)
    jobs: list[JobsRow] = []
    streams: list[StreamsRow] = []
    instances: list[InstancesRow] = []
    loads: dict[str, float] = {}
    with redis_server(args.redis_url) as server:
        env = environment(
            server.url,
            f"clock {time.get_clock_info('time').implementation} (jobs, Redis TIME and stream clients share it)",
        )
        if "jobs" in args.parts:
            loads["jobs"] = load_average()
            jobs = [measure_jobs(server.url, n, args.window, args.seed) for n in args.jobs]
        if "streams" in args.parts:
            loads["streams"] = load_average()
            streams = run_streams(server.url, args.streams, args)
        if "instances" in args.parts:
            loads["instances"] = load_average()
            instances = run_instances(server.url, args.instances, args)
    print(env)
    panels: list[dict[str, Any]] = []
    if jobs:
        first, second = jobs_captions(jobs, args.window, loads["jobs"])
        print()
        print(first)
        print()
        print(jobs_table(jobs))
        print()
        print(second)
        print()
        print(staleness_table(jobs))
        panels += [
            loglog_panel(
                "growth.py: Redis round trips per writer tick vs running jobs",
                "running jobs",
                "round trips per tick",
                {
                    "whole process": [(r.jobs, r.per_tick) for r in jobs],
                    "writer's flush (max)": [(r.jobs, r.flush_trips_max) for r in jobs],
                },
                target=TARGET_ROUND_TRIPS_PER_TICK,
                target_label=f"target <= {TARGET_ROUND_TRIPS_PER_TICK:g}",
            ),
            loglog_panel(
                "growth.py: writer CPU per tick vs running jobs",
                "running jobs",
                "ms",
                {
                    "writer thread, per tick": [(r.jobs, r.writer_cpu_ms_per_tick) for r in jobs],
                    "flush CPU p99": [(r.jobs, r.flush_cpu_ms(99)) for r in jobs],
                },
            ),
            loglog_panel(
                "growth.py: document staleness when read vs running jobs",
                "running jobs",
                "ms",
                {
                    "p50": [(r.jobs, r.stale_ms(50)) for r in jobs],
                    "p99": [(r.jobs, r.stale_ms(99)) for r in jobs],
                },
                target=TARGET_STALENESS * 1000,
                target_label=f"target p99 <= {TARGET_STALENESS * 1000:.0f} ms",
            ),
        ]
    if streams:
        print()
        print(streams_caption(streams, args, loads["streams"]))
        print()
        print(streams_table(streams))
        panels += [
            loglog_panel(
                "growth.py: update-to-frame latency vs open streams (one gevent worker)",
                "open streams",
                "ms",
                {
                    "p50": [(r.streams, r.ms(50)) for r in streams],
                    "p99": [(r.streams, r.ms(99)) for r in streams],
                },
                target=TARGET_FRAME_LATENCY * 1000,
                target_label=f"target p99 <= {TARGET_FRAME_LATENCY * 1000:.0f} ms",
            ),
            loglog_panel(
                "growth.py: Redis commands per update vs open streams",
                "open streams",
                "commands",
                {"per update": [(r.streams, r.per_update) for r in streams]},
                target=streams[0].per_update,
                target_label=f"target: flat (= at {streams[0].streams:,} streams)",
            ),
        ]
    if instances:
        print()
        print(instances_caption(instances, loads["instances"]))
        print()
        print(instances_table(instances))
        series = {
            f"commands per {what}": [(r.instances, r.ops[what].per_op) for r in instances]
            for what in OPERATIONS
        }
        series["listener wake-ups per cancel"] = [
            (r.instances, r.ops["cancel"].heard_per_op) for r in instances
        ]
        writes = [(r.instances, r.ops["write"].heard_per_op) for r in instances]
        if any(y > 0 for _x, y in writes):  # zeros cannot be drawn on a log axis
            series["listener wake-ups per write"] = writes
        panels.append(
            loglog_panel(
                "growth.py: per request vs instances (one Redis)",
                "instances",
                "per request",
                series,
            )
        )
    write_json(
        args.json,
        {
            "jobs": [
                {
                    "jobs": r.jobs,
                    "round_trips_per_tick": r.per_tick,
                    "flush_round_trips_max": r.flush_trips_max,
                    "writer_cpu_ms_per_tick": r.writer_cpu_ms_per_tick,
                    "staleness_p99_ms": r.stale_ms(99),
                }
                for r in jobs
            ],
            "streams": [
                {
                    "streams": r.streams,
                    "p50_ms": r.ms(50),
                    "p99_ms": r.ms(99),
                    "commands_per_update": r.per_update,
                }
                for r in streams
            ],
            "instances": [
                {
                    "instances": r.instances,
                    **{f"commands_per_{w}": op.per_op for w, op in r.ops.items()},
                    **{f"wakeups_per_{w}": op.heard_per_op for w, op in r.ops.items()},
                }
                for r in instances
            ],
            "panels": panels,
        },
    )


if __name__ == "__main__":
    main()
