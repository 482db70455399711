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
   100, 1,000; --quick 10, 100). ``_apps.streams_app()`` under ``gunicorn -k
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
   counted: one per message its listener heard).

   Target: commands per request flat (at the most instances within 1.5x of one).

No alternative: each size is measured against the smallest. Every process
started here (the spawned instances, gunicorn, a throwaway redis-server) is
stopped at the end, also on failure or SIGTERM, and every loop and wait is
bounded. In part 1 the flush's round trips are the writer's per tick on
progress; the rest of the process's are the listener's sweep of held cancel
flags (one a second) and the heartbeat. Writer CPU per tick and server
commands per tick grow with the jobs (each document is encoded and run through
a Lua script), and a slow tick pushes the next one back, which the longest gap
shows and staleness follows; at 1,000 jobs on two cores the jobs run well below
their nominal pace (they share the GIL), so read the calls/s column first.

    python bench/growth.py               # 1-1,000 jobs, 10-1,000 streams, 1-4 instances (about 70 s)
    python bench/growth.py --quick       # shorter windows, 10 and 100 streams (about 40 s)
    python bench/growth.py --parts streams --streams 10,100,300,1000
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import random
import selectors
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import harness
import redis

FLUSH = harness.FLUSH
PARTS = ("jobs", "streams", "instances")
TARGET_ROUND_TRIPS = harness.Target("Redis round trips per writer tick", "<=", 2.0)
TARGET_STALENESS = harness.Target("document staleness p99", "<=", 2 * FLUSH * 1000, " ms")
TARGET_FRAME = harness.Target("update-to-frame latency p99", "<=", 2 * FLUSH * 1000, " ms")
#: "Independent of the size": the largest size's figure within this of the smallest's.
TARGET_FLAT = harness.Target(
    "Redis commands per update or request, largest / smallest size", "<=", 1.5, "x"
)

#: Part 1: each job's wait between two progress calls, uniform in seconds.
PAUSE = (0.010, 0.050)
#: Part 1: the reader's wait between two reads of every document, uniform in seconds.
READ_EVERY = (0.030, 0.090)
#: Part 2: streams opened at once before waiting for their first frames.
OPEN_BATCH = 100
#: Part 3: the owner both the job and every instance's test client carry.
OWNER = "bench-growth-owner"

FULL = {
    "parts": "jobs,streams,instances",
    "jobs": "1,10,100,1000",
    "window": 5.0,
    "streams": "10,100,1000",
    "stream_window": 8.0,
    "instances": "1,2,4",
    "polls": 400,
    "cancels": 200,
    "writes": 200,
    "stream_jobs": 1,
    "period": 0.3,
    "pool": 100,
}
QUICK = {
    **FULL,
    "window": 2.0,
    "streams": "10,100",
    "stream_window": 3.0,
    "polls": 100,
    "cancels": 50,
    "writes": 50,
}
HELP = {
    "parts": "a subset of jobs,streams,instances",
    "jobs": "part 1: running jobs per row",
    "window": "part 1: seconds per row",
    "streams": "part 2: open streams per row",
    "stream_window": "part 2: seconds per row",
    "stream_jobs": "part 2: running jobs in the worker",
    "period": "part 2: seconds between progress calls",
    "pool": "part 2: the worker's Redis pool size",
    "instances": "part 3: instances per row",
    "polls": "part 3: polls per row",
    "cancels": "part 3: cancels per row",
    "writes": "part 3: document writes per row",
}


def nan_low(value: float) -> float:
    """A sort key that ranks NaN below everything."""
    return float("-inf") if math.isnan(value) else value


def p50_p99_panel(
    title: str, x_label: str, sizes: list[tuple[int, Callable[[float], float]]], target: Any
) -> dict[str, Any]:
    """Lines of p50 and p99 (ms) over the sizes, ``(size, pct -> ms)`` each, and the p99 target."""
    return harness.loglog_panel(
        title,
        x_label,
        "ms",
        {f"p{pct}": [(size, ms(pct)) for size, ms in sizes] for pct in (50, 99)},
        target=target.limit,
        target_label=f"target p99 <= {target.limit:.0f} ms",
    )


def top_commands(commands: Counter[str], per: float, count: int = 4) -> str:
    return ", ".join(f"{name} {calls / per:.1f}" for name, calls in commands.most_common(count))


# -- 1. running jobs on one instance ----------------------------------------------------


def thread_kind(_connection: Any) -> str:
    """Who sent a round trip: the writer, the listener, or another thread."""
    name = threading.current_thread().name
    if name.startswith("asyncstate-writer"):
        return "writer"
    if name.startswith("asyncstate-listener"):
        return "listener"
    return "other"


def jobs_instance(inbox: Any, outbox: Any, url: str, n: int, seed: int) -> None:
    """Child: N running jobs on one app; counts and times its writer between "begin" and "end"."""
    client, counter = harness.counting_client(url, thread_kind)
    tally, lock = counter.sent, counter.lock
    app, ext = harness.make_app(
        "bench-growth-jobs",
        redis_client=client,
        ASYNCSTATE_MAX_WORKERS=n,
        ASYNCSTATE_MAX_QUEUED=n + 10,
    )
    times: list[list[float]] = [[] for _ in range(n)]
    stop = threading.Event()
    go = threading.Event()  # every job waits for the others to start (a quick start)
    arrived: list[int] = []

    @ext.job(name="bench_growth_io")
    def io_job(job: harness.JobContext, index: int, job_seed: int) -> int:
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
            handles = [io_job.start(i, seed * 100_003 + i) for i in range(n)]
            deadline = time.monotonic() + 60
            while len(arrived) < n or sum(1 for t in times if t) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {sum(1 for t in times if t)} of {n} jobs started")
                if len(arrived) == n:
                    go.set()
                time.sleep(0.02)
            time.sleep(3 * FLUSH)  # every running document written at least once
            writer_clock = time.pthread_getcpuclockid(harness.writer_thread(ext).ident)
            ticks: list[tuple[float, float, int, float]] = []  # cpu s, wall s, round trips, start

            def timed_flush(flush: Callable[[], None]) -> None:
                sent = tally["writer"]
                cpu, wall, began = time.thread_time(), time.perf_counter(), time.monotonic()
                try:
                    flush()
                finally:
                    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
                    ticks.append((cpu, wall, tally["writer"] - sent, began))

            harness.wrap_flush(ext, timed_flush)
            outbox.put(("ready", [harness.job_key(ext, h.id) for h in handles]))
            inbox.get(timeout=120)  # begin
            with lock:
                sent0 = Counter(tally)
            cpu0, at0, tick0 = time.clock_gettime(writer_clock), time.monotonic(), len(ticks)
            outbox.put(("begun",))
            inbox.get(timeout=120)  # end
            with lock:
                sent1 = Counter(tally)
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

    def _per_tick(self, value: float) -> float:
        return value / len(self.ticks) if self.ticks else float("nan")

    @property
    def per_second(self) -> float:
        return sum(self.sent.values()) / self.seconds

    @property
    def per_tick(self) -> float:
        return self._per_tick(sum(self.sent.values()))

    def kind_per_tick(self, kind: str) -> float:
        return self._per_tick(self.sent.get(kind, 0))

    def flush_trips(self, of: Callable[[list[int]], float]) -> float:
        return of([t[2] for t in self.ticks]) if self.ticks else float("nan")

    @property
    def writer_cpu_ms_per_tick(self) -> float:
        return self._per_tick(self.writer_cpu * 1000)

    def flush_ms(self, which: int, pct: float) -> float:
        """Percentile of the flushes' CPU (``which`` 0) or wall (1) time, ms."""
        values = [t[which] for t in self.ticks]
        return harness.percentile(values, pct) * 1000 if values else float("nan")

    @property
    def longest_gap_ms(self) -> float:
        """The longest time from one flush's start to the next one's (heartbeats fall between)."""
        starts = [t[3] for t in self.ticks]
        return max((b - a for a, b in itertools.pairwise(starts)), default=float("nan")) * 1000

    def stale_ms(self, pct: float) -> float:
        return harness.percentile(self.staleness, pct) * 1000 if self.staleness else float("nan")


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
    child = harness.Child(f"the {n}-job instance", jobs_instance, url, n, seed)
    reader = redis.Redis.from_url(url)
    rng = random.Random(seed)
    try:
        _kind, keys = child.get(120, expect="ready")
        child.put("begin")
        child.get(expect="begun")
        before = harness.command_stats(reader)
        reads: list[tuple[float, list[int | None]]] = []
        end = time.monotonic() + window
        while time.monotonic() < end:  # bounded by the window
            pipe = reader.pipeline(transaction=False)
            pipe.time()  # the server's clock as it runs the reads: no delay of ours counts
            for key in keys:
                pipe.hgetall(key)
            (seconds, micros), *rows = pipe.execute()
            currents = [json.loads(row[b"d"])["current"] if row.get(b"d") else None for row in rows]
            reads.append((seconds + micros / 1e6, currents))
            time.sleep(rng.uniform(*READ_EVERY))
        after = harness.command_stats(reader)
        child.put("end")
        _kind, result = child.get(120, expect="done")
    finally:
        reader.close()
        child.stop(30)
    times = result["times"]
    start, stop = reads[0][0], reads[-1][0]
    calls = sum(start <= t <= stop for mine in times for t in mine)
    return JobsRow(
        jobs=n,
        seconds=result["seconds"],
        sent=result["sent"],
        writer_cpu=result["writer_cpu"],
        ticks=[tuple(t) for t in result["ticks"]],  # type: ignore[misc]
        commands=harness.commands_between(before, after, ignore=("hgetall", "time")),
        staleness=staleness_of(reads, times),
        reads=len(reads),
        calls_per_second=calls / (stop - start) if stop > start else float("nan"),
    )


def report_jobs(report: harness.Report, rows: list[JobsRow], window: float, load: float) -> None:
    fmt = harness.fmt
    flush_max = max((r.flush_trips(max) for r in rows), key=nan_low)
    process_max = max((r.per_tick for r in rows), key=nan_low)
    met = [
        report.check(TARGET_ROUND_TRIPS, flush_max, "the writer's flush, most jobs"),
        report.check(TARGET_ROUND_TRIPS, process_max, "the whole process, most jobs"),
    ]
    stalled = [f"{r.jobs:,}" for r in rows if not r.ticks]
    stall_note = (
        f" At {', '.join(stalled)} job(s) no flush completed in the window: per-tick figures "
        "there are '-', and the staleness below shows the wait."
        if stalled
        else ""
    )
    report.out(
        f"Running I/O-bound jobs on one instance (a fresh process per row, "
        f"ASYNCSTATE_MAX_WORKERS = jobs; each job: `progress(i)`, then a random "
        f"{PAUSE[0] * 1000:.0f}-{PAUSE[1] * 1000:.0f} ms wait), {window:g} s window per row, "
        f"load average {load:.2f} at the start. Round trips counted on the client side (a "
        f"counting `redis.Connection`: one per command, one per pipeline), by the sending "
        f"thread; server commands from `INFO commandstats` (Lua-inner commands included); "
        f"writer CPU from the writer thread's own CPU clock (flush, heartbeat every "
        f"{harness.HEARTBEAT:g} s, timeouts), divided by its ticks.{stall_note}"
    )
    base = rows[0]
    report.table(
        [
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
        ],
        [
            [
                f"{r.jobs:,}",
                f"{len(r.ticks)} ({r._per_tick(r.seconds):.3f} s)" if r.ticks else "0 (none)",
                fmt(r.per_second, 1),
                fmt(r.per_tick),
                " / ".join(fmt(r.kind_per_tick(k)) for k in ("writer", "listener", "other")),
                f"{fmt(r.flush_trips(harness.median), 0)} / {fmt(r.flush_trips(max), 0)}",
                fmt(r._per_tick(sum(r.commands.values())), 1),
                fmt(r.writer_cpu_ms_per_tick),
                f"{fmt(r.flush_ms(0, 50))} / {fmt(r.flush_ms(0, 99))}",
                f"{fmt(r.flush_ms(1, 50))} / {fmt(r.flush_ms(1, 99))}",
                fmt(r.writer_cpu_ms_per_tick / base.writer_cpu_ms_per_tick, 1) + "x",
            ]
            for r in rows
        ],
    )
    worst = max(rows, key=lambda r: nan_low(r.stale_ms(99)))
    met.append(report.check(TARGET_STALENESS, worst.stale_ms(99), f"{worst.jobs:,} jobs"))
    report.out(
        f"Staleness of the documents when read from another process (every document every "
        f"{READ_EVERY[0] * 1000:.0f}-{READ_EVERY[1] * 1000:.0f} ms, one pipeline, timed by the "
        f"server's `TIME` in it): how long the job's counter had already been past the "
        f"`current` the document showed (each job logs when each `progress(i)` returned; a "
        f"job at ~{2 / (PAUSE[0] + PAUSE[1]):.0f} calls/s is the nominal pace)."
    )
    report.table(
        [
            "running jobs",
            "progress calls/s, all jobs",
            "longest gap between two flushes ms",
            "documents read",
            "staleness p50 ms",
            "p99 ms",
            "max ms",
            "p99 / flush interval",
        ],
        [
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
        ],
    )
    sizes = " / ".join(f"{r.jobs:,}" for r in rows)
    report.summary(
        f"running jobs on one instance ({sizes}): flush round trips per tick; p99 staleness",
        " / ".join(fmt(r.flush_trips(max), 0) for r in rows)
        + "; "
        + " / ".join(fmt(r.stale_ms(99), 0) for r in rows)
        + " ms",
        "",
        "<= 2; <= 500 ms",
        all(met),
    )
    report.figures["jobs"] = [
        {
            "jobs": r.jobs,
            "round_trips_per_tick": r.per_tick,
            "flush_round_trips_max": r.flush_trips(max),
            "writer_cpu_ms_per_tick": r.writer_cpu_ms_per_tick,
            "staleness_p99_ms": r.stale_ms(99),
        }
        for r in rows
    ]
    report.panel(
        harness.loglog_panel(
            "growth.py: Redis round trips per writer tick vs running jobs",
            "running jobs",
            "round trips per tick",
            {
                "whole process": [(r.jobs, r.per_tick) for r in rows],
                "writer's flush (max)": [(r.jobs, r.flush_trips(max)) for r in rows],
            },
            target=TARGET_ROUND_TRIPS.limit,
            target_label=f"target <= {TARGET_ROUND_TRIPS.limit:g}",
        ),
        harness.loglog_panel(
            "growth.py: writer CPU per tick vs running jobs",
            "running jobs",
            "ms",
            {
                "writer thread, per tick": [(r.jobs, r.writer_cpu_ms_per_tick) for r in rows],
                "flush CPU p99": [(r.jobs, r.flush_ms(0, 99)) for r in rows],
            },
        ),
        p50_p99_panel(
            "growth.py: document staleness when read vs running jobs",
            "running jobs",
            [(r.jobs, r.stale_ms) for r in rows],
            TARGET_STALENESS,
        ),
    )


# -- 2. open event streams on one gevent worker -------------------------------------------


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
        return harness.percentile(self.latencies, pct) * 1000 if self.latencies else float("nan")


def wait_streams(host: str, count: int, timeout: float) -> None:
    """Poll ``/bench/streams`` until ``count`` streams are open there (at most ``timeout`` s)."""

    def open_now() -> bool:
        status, body, _ = harness.http_request(host, "GET", "/bench/streams")
        if status != 200:
            raise RuntimeError(f"GET /bench/streams answered {status}: {body[:300]!r}")
        return int(json.loads(body)["open"]) == count

    harness.poll(open_now, timeout, 0.1)


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
        before = harness.command_stats(admin)
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
        after = harness.command_stats(admin)
        seconds = time.time() - start
        connected = int(admin.info("clients")["connected_clients"])
        events: Counter[str] = Counter()
        for s in clients.streams:
            events.update(s.events)
    finally:
        clients.close()
    wait_streams(f"127.0.0.1:{port}", 0, 15)  # the server notices closed sockets at its next write
    return StreamsRow(
        streams=n,
        seconds=seconds,
        updates=len(updates),
        latencies=latencies,
        commands=harness.commands_between(before, after),
        events=events,
        clients=connected,
        refused=refused,
    )


def run_streams(url: str, sizes: list[int], args: argparse.Namespace) -> list[StreamsRow]:
    admin = redis.Redis.from_url(url)
    log_dir = tempfile.mkdtemp(prefix="asyncstate-bench-growth-")
    most = max(sizes)
    env = {
        "BENCH_GROWTH_REDIS_URL": url,
        "BENCH_GROWTH_MAX_STREAMS": str(most),
        "BENCH_GROWTH_POOL": str(args.pool),
    }
    server = harness.Gunicorn(
        log_dir,
        "_apps:streams_app()",
        env=env,
        workers=1,
        worker_class="gevent",
        worker_connections=most + 100,
        graceful_timeout=5.0,
    )
    rows: list[StreamsRow] = []
    try:
        with harness.serving(server):
            budget = 60 + len(sizes) * (args.stream_window + 40)
            query = f"jobs={args.stream_jobs}&period={args.period}&seconds={budget:.0f}"
            status, body, headers = harness.http_request(
                server.host, "POST", f"/bench/start?{query}"
            )
            if status != 200:
                raise RuntimeError(f"/bench/start answered {status}: {body[:300]!r}")
            tokens = json.loads(body)["tokens"]
            cookie = harness.session_cookie(headers.get("Set-Cookie"))
            time.sleep(3 * FLUSH)
            for n in sizes:  # every stream on the first job
                path = f"/asyncstate/events/{tokens[0]}"
                rows.append(
                    measure_streams(server.port, path, cookie, n, args.stream_window, admin)
                )
            harness.http_request(server.host, "POST", "/bench/stop")
    finally:
        admin.close()
        shutil.rmtree(log_dir, ignore_errors=True)
    return rows


def report_streams(
    report: harness.Report, rows: list[StreamsRow], args: argparse.Namespace, load: float
) -> None:
    fmt = harness.fmt
    worst = max(rows, key=lambda r: nan_low(r.ms(99)))
    ratio = rows[-1].per_update / rows[0].per_update
    where = f"{rows[0].streams:,} -> {rows[-1].streams:,} streams"
    met = [
        report.check(TARGET_FRAME, worst.ms(99), f"{worst.streams:,} streams"),
        report.check(TARGET_FLAT, ratio, f"commands per update, {where}"),
    ]
    report.out(
        f"Open `/events` streams on one gunicorn gevent worker (`-k gevent --workers 1 "
        f"--worker-connections {max(r.streams for r in rows) + 100}`), Redis client on a "
        f"BlockingConnectionPool of {args.pool}, {args.stream_jobs} job(s) calling "
        f"`progress()` every {args.period:g} s, every stream on the first job; raw-socket "
        f"clients in one selector loop in the bench process; {args.stream_window:g} s window per "
        f"row; load average {load:.2f} at the start. Latency: arrival (`time.time()` when "
        f"`select` returned) minus the time the job put in the message; Redis commands: "
        f"`INFO commandstats` deltas over the window divided by the updates (Lua-inner "
        f"commands included)."
    )
    base = rows[0]
    report.table(
        [
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
        ],
        [
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
            for r in rows
        ],
    )
    sizes = " / ".join(f"{r.streams:,}" for r in rows)
    report.summary(
        f"`/events` streams of one job on one gevent worker ({sizes}): p99 update-to-frame; "
        "Redis commands per update",
        " / ".join(fmt(r.ms(99), 0) for r in rows)
        + " ms; "
        + " / ".join(fmt(r.per_update, 1) for r in rows),
        "",
        "<= 500 ms; flat (<= 1.5x)",
        all(met),
    )
    report.figures["streams"] = [
        {
            "streams": r.streams,
            "p50_ms": r.ms(50),
            "p99_ms": r.ms(99),
            "commands_per_update": r.per_update,
        }
        for r in rows
    ]
    report.panel(
        p50_p99_panel(
            "growth.py: update-to-frame latency vs open streams (one gevent worker)",
            "open streams",
            [(r.streams, r.ms) for r in rows],
            TARGET_FRAME,
        ),
        harness.loglog_panel(
            "growth.py: Redis commands per update vs open streams",
            "open streams",
            "commands",
            {"per update": [(r.streams, r.per_update) for r in rows]},
            target=rows[0].per_update,
            target_label=f"target: flat (= at {rows[0].streams:,} streams)",
        ),
    )


# -- 3. instances on one Redis --------------------------------------------------------------

#: What each instance does in turn, and the table's name for one of it.
OPERATIONS = {
    "poll": "poll: `GET /progress/<token>`",
    "cancel": "cancel: `POST /cancel/<token>`",
    "write": "document write (`store.write`, the job's instance)",
}


def cluster_instance(inbox: Any, outbox: Any, url: str, index: int) -> None:
    """Child: one instance holding a watcher (its listener subscribes for it); serves commands."""
    import flask
    from _apps import QuietCookieWarning

    logging.getLogger("flask_asyncstate").addFilter(QuietCookieWarning())
    app, ext = harness.make_app("bench-growth-instance", redis_url=url)
    release = threading.Event()

    @ext.job(name="bench_growth_silent")
    def silent(job: harness.JobContext) -> None:
        """Runs without writing anything, and ignores cancels, until released (bounded)."""
        release.wait(600)

    try:
        with app.app_context():
            heard = harness.count_notifications(ext)

            def watch() -> None:
                with harness.watching(ext, str(index)):
                    release.wait(600)

            threading.Thread(target=watch, daemon=True, name="bench-watcher").start()
            if index == 0:
                with app.test_request_context("/"):
                    flask.session[harness.OWNER_KEY] = OWNER
                    token = silent.start().token
                outbox.put(("token", token))
            else:
                _kind, token = inbox.get(timeout=120)
            key = harness.job_key(ext, harness.signer(ext).unsign(token))
            harness.wait_listening(ext, 10)
            client = app.test_client()
            with client.session_transaction() as sess:
                sess[harness.OWNER_KEY] = OWNER
            headers = {"X-Requested-With": "XMLHttpRequest"}
            warm = client.get(f"/asyncstate/progress/{token}")  # connections, scripts, memo
            assert warm.status_code == 200, (warm.status_code, warm.get_data(as_text=True))
            outbox.put(("ready", index))
            for _ in range(1000):  # bounded: a handful of commands per size
                command = inbox.get(timeout=300)
                if command[0] == "stop":
                    break
                if command[0] == "heard":
                    outbox.put(("heard", heard[0] if heard is not None else -1))
                    continue
                what, count = command
                write = harness.rewrite_document(ext, key) if what == "write" else None
                for _ in range(count):
                    if what == "poll":
                        ok = client.get(f"/asyncstate/progress/{token}").status_code == 200
                    elif what == "cancel":
                        answer = client.post(f"/asyncstate/cancel/{token}", headers=headers)
                        ok = answer.status_code == 202
                    else:
                        ok = write()  # type: ignore[misc]
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


def measure_instances(url: str, k: int, counts: dict[str, int]) -> InstancesRow:
    admin = redis.Redis.from_url(url)
    children = [harness.Child(f"instance {i}", cluster_instance, url, i) for i in range(k)]
    try:
        _kind, token = children[0].get(120, expect="token")
        for child in children[1:]:
            child.put("token", token)
        for child in children:
            child.get(120, expect="ready")
        deadline = time.monotonic() + 10
        while True:  # every listener on the cancel channel and on its watcher's (bounded)
            subs = subscriptions(admin, harness.KEY_PREFIX)
            if (subs[0] >= k and subs[2] >= k) or time.monotonic() > deadline:
                break
            time.sleep(0.05)

        def heard() -> int:
            found = [int(child.ask("heard")[1]) for child in children]
            return -1 if min(found) < 0 else sum(found)

        ops: dict[str, Operation] = {}
        time.sleep(2 * FLUSH)
        for what, total in counts.items():
            senders = children[:1] if what == "write" else children
            shares = [
                total // len(senders) + (i < total % len(senders)) for i in range(len(senders))
            ]
            heard0, before, start = heard(), harness.command_stats(admin), time.monotonic()
            for child, share in zip(senders, shares):
                child.ask(what, share)
            seconds = time.monotonic() - start
            after = harness.command_stats(admin)
            heard1 = heard()
            wakeups = -1 if min(heard0, heard1) < 0 else heard1 - heard0
            ops[what] = Operation(total, harness.commands_between(before, after), wakeups, seconds)
    finally:
        for child in children:
            child.put("stop")
        for child in children:
            child.stop()
        admin.close()
    return InstancesRow(k, subs, ops)


def report_instances(report: harness.Report, rows: list[InstancesRow], load: float) -> None:
    fmt = harness.fmt
    base, last = rows[0], rows[-1]
    met = [
        report.check(
            TARGET_FLAT,
            last.ops[what].per_op / base.ops[what].per_op,
            f"commands per {what}, {base.instances} -> {last.instances} instances",
        )
        for what in OPERATIONS
    ]
    counts = {what: base.ops[what].count for what in OPERATIONS}
    report.out(
        f"Instances on one Redis (separate processes, each holding a watcher on a key of its "
        f"own, as an open stream would, so its listener subscribes for it; instance 0 runs a "
        f"job that writes nothing and ignores cancels), load average {load:.2f} at the start. "
        f"Each instance in turn sends its share of {counts['poll']:,} `GET "
        f"/asyncstate/progress/<token>` and of {counts['cancel']:,} `POST "
        f"/asyncstate/cancel/<token>` through its Flask test client (cookie session: no Redis "
        f"for sessions); then instance 0 writes the job's document {counts['write']:,} times "
        f"(`store.write`, what a flush does per job). Commands: `INFO commandstats` deltas "
        f"divided by the requests (Lua-inner commands and the instances' background work "
        f"included: heartbeats every {harness.HEARTBEAT:g} s, the listener's sweep every "
        f"second); wake-ups: messages the listeners handed to their watchers, all instances "
        f"together (each instance's `watchers.notify` counted)."
    )
    report.table(
        [
            "request",
            "instances",
            "subscribers of cancel / change channels / their subscribers",
            "requests",
            "Redis commands per request",
            "most run, per request",
            f"commands / {base.instances} instance(s)",
            "listener wake-ups per request, all instances",
        ],
        [
            [
                label,
                f"{r.instances}",
                " / ".join(str(n) for n in r.subscriptions),
                f"{r.ops[what].count:,}",
                fmt(r.ops[what].per_op),
                top_commands(r.ops[what].commands, r.ops[what].count, 5),
                f"{r.ops[what].per_op / base.ops[what].per_op:.2f}x",
                fmt(r.ops[what].heard_per_op),
            ]
            for what, label in OPERATIONS.items()
            for r in rows
        ],
    )
    sizes = " / ".join(str(r.instances) for r in rows)
    report.summary(
        f"instances on one Redis ({sizes}): Redis commands per poll; cancel; document write",
        "; ".join(" / ".join(fmt(r.ops[what].per_op) for r in rows) for what in OPERATIONS),
        "",
        "flat (<= 1.5x)",
        all(met),
    )
    report.figures["instances"] = [
        {
            "instances": r.instances,
            **{f"commands_per_{w}": op.per_op for w, op in r.ops.items()},
            **{f"wakeups_per_{w}": op.heard_per_op for w, op in r.ops.items()},
        }
        for r in rows
    ]
    series = {
        f"commands per {what}": [(r.instances, r.ops[what].per_op) for r in rows]
        for what in OPERATIONS
    }
    series["listener wake-ups per cancel"] = [
        (r.instances, r.ops["cancel"].heard_per_op) for r in rows
    ]
    writes = [(r.instances, r.ops["write"].heard_per_op) for r in rows]
    if any(y > 0 for _x, y in writes):  # zeros cannot be drawn on a log axis
        series["listener wake-ups per write"] = writes
    report.panel(
        harness.loglog_panel(
            "growth.py: per request vs instances (one Redis)", "instances", "per request", series
        )
    )


# -- driver --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    found = harness.parser(__doc__, FULL, QUICK, HELP)
    found.add_argument("--seed", type=int, default=1, help="seed of the random waits")
    ranges = {
        "window": (0.5, 60),
        "stream_window": (0.5, 60),
        "stream_jobs": (1, 4),
        "period": (0.05, 5),
        "pool": (1, 5000),
        "polls": (1, 100_000),
        "cancels": (1, 100_000),
        "writes": (1, 100_000),
    }
    args = harness.parse(found, argv, ranges, {"parts": PARTS})
    args.jobs = harness.sizes(args.jobs, 1, 2000, "jobs")
    args.streams = harness.sizes(args.streams, 1, 2000, "streams")
    args.instances = harness.sizes(args.instances, 1, 8, "instances")
    report = harness.Report(__file__, args)
    with harness.redis_server(args.redis_url) as server:
        clock = time.get_clock_info("time").implementation
        report.out(
            harness.environment(
                server.url, f"clock {clock} (jobs, Redis TIME and stream clients share it)"
            )
        )
        if "jobs" in args.parts:
            load = harness.load_average()
            rows = [measure_jobs(server.url, n, args.window, args.seed) for n in args.jobs]
            report_jobs(report, rows, args.window, load)
        if "streams" in args.parts:
            load = harness.load_average()
            report_streams(report, run_streams(server.url, args.streams, args), args, load)
        if "instances" in args.parts:
            load = harness.load_average()
            counts = {"poll": args.polls, "cancel": args.cancels, "write": args.writes}
            rows3 = [measure_instances(server.url, k, counts) for k in args.instances]
            report_instances(report, rows3, load)
    report.finish()


if __name__ == "__main__":
    main()
