"""Cross-process cancel latency: from a cancel on one instance to the job noticing it in another.

Instance A is a separate OS process (``multiprocessing``, spawn) with its own
app on a throwaway ``redis-server``; it runs tracked jobs one after another.
Each job says "ready" (with its token) and then waits for its cancel:

- idle: ``job.cancelled.wait()``, the job blocked on the Event;
- busy: a pure-Python loop calling ``job.progress(i)`` and checking
  ``job.cancelled.is_set()`` each iteration, so the job thread holds the GIL
  and the cancel listener has to take it over (``progress()`` releases it at
  most once a millisecond for exactly this).

Instance B, this process, has its own app on the same Redis, and cancels in
one of two ways (each a row of its own):

- API: ``asyncstate.cancel(token)``;
- HTTP: ``POST /asyncstate/cancel/<token>`` with ``X-Requested-With``, through
  the Flask test client of B's app, which keeps its sessions in the same Redis
  (Flask-Session, as in the deployment docs). The job's id is put in the test
  client's session first (``session_transaction``), as ``start()`` in a request
  would have done, so the whole route runs: session load, token check, status
  read, cancel. The test client calls the WSGI app in-process: no socket.

Per job B reads ``time.monotonic()`` just before the call or the request; A
reads it the moment the job sees the cancel, and the latency is the difference.
``CLOCK_MONOTONIC`` is one system-wide clock on Linux, so readings from two
processes compare. B waits a random 0-2 ms before each cancel so the cancel
meets the listener in any phase of its loop. One unmeasured cancel per row
comes first (first requests load scripts and warm caches on both sides).

For comparison, against the same Redis, if installed:

- RQ ``send_stop_job_command``: a real forking ``rq`` ``Worker`` in another
  process runs a job that sleeps; B sends the stop command and polls the job's
  status every 0.5 ms until it reads ``stopped`` (the horse is SIGKILLed, the
  worker reaps it and records the status).
- Celery ``AbortableTask`` polling every 0.5 s: a process that, like a task
  calling ``self.is_aborted()`` between units of work, checks an
  ``AbortableAsyncResult`` against the Redis result backend every 0.5 s; B calls
  ``abort()`` after a random wait of 0 to 0.5 s (uniform phase), so the
  expected median is about 250 ms. No broker or worker is involved: it is the
  abort flag round trip alone, measured for real.

Figures are p50 / p95 / p99 / max in ms (nearest rank). A "miss" is a cancel
that was not seen within 10 s. Targets (stated, not asserted): p50 <= 2 ms and
p99 <= 10 ms. A busy job holds the GIL; without the millisecond release in
``progress()``/``check_cancelled()`` the listener thread that sets the Event
would get it only at Python's switch interval (``sys.getswitchinterval()``, 5 ms).

It starts its own redis-server on a free loopback port (never 6379) and stops
it at the end. Needs ``redis-server`` on PATH, and ``pip install -e '.[bench]'``.

Run from the repository root::

    python bench/cancel.py            # 200 cancels per mode and way, 50 RQ stops, 40 Celery aborts
    python bench/cancel.py --quick    # smoke run: 50, 10, 8
    python bench/cancel.py --ways http --rq-stops 0 --celery-aborts 0   # HTTP rows only
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flask
import redis
from _common import (
    add_common_options,
    environment,
    fill_defaults,
    make_app,
    markdown_table,
    median,
    panel,
    percentile,
    redis_server,
    write_json,
)
from flask import Flask

from flask_asyncstate import AsyncState, JobContext
from flask_asyncstate.owners import OWNER_KEY

#: The owner both instances agree on, as a browser's session would carry it.
BENCH_OWNER = "bench-owner"

SPAWN = multiprocessing.get_context("spawn")
#: A cancel not seen within this many seconds is a miss.
WAIT_LIMIT = 10.0
#: B waits a random 0..JITTER s before each cancel (ours and RQ).
JITTER = 0.002
#: Celery model: seconds between two ``is_aborted()`` checks.
CELERY_POLL = 0.5
#: Targets stated in the caption (not asserted).
TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0
MODES = ("idle", "busy")
#: How instance B cancels: the Python API, or the HTTP route.
WAYS = ("api", "http")
CANCEL_PATH = "/asyncstate/cancel/"

DEFAULTS = {"cancels": 200, "rq_stops": 50, "celery_aborts": 40}
QUICK = {"cancels": 50, "rq_stops": 10, "celery_aborts": 8}


@dataclass
class Sample:
    """Latencies in ms of one mechanism, and how many cancels were never seen."""

    label: str
    latencies: list[float]
    misses: int = 0


def next_message(inbox: Any, what: str, proc: Any, timeout: float = 60.0) -> tuple[Any, ...]:
    """The next message from a child process, or a clear error if it died or went silent."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            message: tuple[Any, ...] = inbox.get(timeout=0.5)
            return message
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{what} exited (code {proc.exitcode})") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} sent nothing for {timeout} s") from None


def stop_process(proc: Any) -> None:
    proc.join(5)
    if proc.is_alive():
        proc.terminate()
        proc.join(5)


# -- ours: instance A (child process) -------------------------------------------------


def wait_idle(job: JobContext) -> bool:
    return job.cancelled.wait(WAIT_LIMIT)


def wait_busy(job: JobContext) -> bool:
    """Hot loop: a unit of pure-Python work, a progress report and a cancel check per iteration."""
    deadline = time.monotonic() + WAIT_LIMIT
    i = 0
    while not job.cancelled.is_set():
        i += 1
        sum(range(100))  # the "work": a few µs with the GIL held
        job.progress(i)
        if i % 1000 == 0 and time.monotonic() > deadline:
            return False
    return True


def ours_instance(redis_url: str, count: int, mode: str, outbox: Any) -> None:
    """Instance A: run ``count`` jobs one after another, each reporting when it saw its cancel."""
    app, ext = make_app("bench-cancel", redis_url=redis_url)  # its own app, default intervals
    waiter: Callable[[JobContext], bool] = wait_busy if mode == "busy" else wait_idle

    @ext.job(name=f"bench_cancel_{mode}")
    def wait_for_cancel(job: JobContext) -> None:
        runner = ext.app_state()
        runner.store.subscribed.wait(5)  # type: ignore[attr-defined]  # listener is up
        outbox.put(("ready", runner.signer.sign(job.id)))
        seen = waiter(job)
        outbox.put(("seen", time.monotonic(), seen))

    try:
        for _ in range(count):
            with app.test_request_context("/"):  # started by "the browser" B cancels from
                flask.session[OWNER_KEY] = BENCH_OWNER
                handle = wait_for_cancel.start()
            with app.app_context():
                doc = handle.wait(WAIT_LIMIT + 10)
                assert doc is not None and doc["status"] in ("cancelled", "succeeded"), doc
    finally:
        ext.shutdown(2)


# -- ours: instance B (this process) ----------------------------------------------------


LABELS = {
    "api": "`asyncstate.cancel(token)`",
    "http": "`POST /cancel/<token>` (test client, Redis session)",
}


def api_canceller(ext: AsyncState) -> Callable[[str], float]:
    """B cancels with ``asyncstate.cancel(token)``; returns the monotonic time it started."""
    ext.cancel(ext.app_state().signer.sign("warm-up"))  # connection and Lua script

    def cancel(token: str) -> float:
        start = time.monotonic()
        if not ext.cancel(token):
            raise RuntimeError("cancel found no job")
        return start

    return cancel


def http_canceller(
    app: Flask, ext: AsyncState
) -> tuple[Callable[[str], None], Callable[[str], float]]:
    """B cancels with ``POST /asyncstate/cancel/<token>``: (prepare the session, cancel)."""
    client = app.test_client()
    headers = {"X-Requested-With": "XMLHttpRequest"}
    # warm-up: routing, session cookie, scripts (a foreign token answers 404)
    warm = client.post(CANCEL_PATH + ext.app_state().signer.sign("warm-up"), headers=headers)
    assert warm.status_code == 404, warm.status_code

    def prepare(token: str) -> None:
        with client.session_transaction() as sess:  # the session that started the job
            sess[OWNER_KEY] = BENCH_OWNER

    def cancel(token: str) -> float:
        start = time.monotonic()
        response = client.post(CANCEL_PATH + token, headers=headers)
        body = response.get_json(silent=True) or {}
        if response.status_code != 202 or not body.get("cancel_requested"):
            raise RuntimeError(f"cancel answered {response.status_code} {body}")
        return start

    return prepare, cancel


def ours_latencies(redis_url: str, count: int, mode: str, way: str, rng: random.Random) -> Sample:
    inbox = SPAWN.Queue()
    # one more job than measured: the first cancel warms up both sides and is not counted
    proc = SPAWN.Process(
        target=ours_instance, args=(redis_url, count + 1, mode, inbox), daemon=True
    )
    proc.start()
    # B: its own app on the same Redis; for HTTP, Flask-Session keeps its sessions there too
    app, ext = make_app("bench-cancel", redis_url=redis_url, sessions=way == "http")
    sample = Sample(f"ours, {mode} job, {way.upper()}: {LABELS[way]} -> `job.cancelled`", [])
    try:
        with app.app_context():
            if way == "http":
                prepare, cancel = http_canceller(app, ext)
            else:
                prepare, cancel = (lambda token: None), api_canceller(ext)
            for i in range(count + 1):
                kind, token = next_message(inbox, "instance A", proc)
                assert kind == "ready", kind
                prepare(token)
                time.sleep(rng.uniform(0, JITTER))
                start = cancel(token)
                kind, seen_at, seen = next_message(inbox, "instance A", proc)
                assert kind == "seen", kind
                if i == 0:
                    continue  # the warm-up cancel
                if seen:
                    sample.latencies.append((seen_at - start) * 1000)
                else:
                    sample.misses += 1
    finally:
        ext.shutdown(2)
        stop_process(proc)
    return sample


# -- RQ: send_stop_job_command ------------------------------------------------------------


def rq_worker(redis_url: str, queue_name: str) -> None:
    """A forking RQ worker, in its own process group (RQ kills horses by process group)."""
    from rq import Queue, Worker

    os.setpgrp()
    connection = redis.Redis.from_url(redis_url)
    worker = Worker([Queue(queue_name, connection=connection)], connection=connection)
    worker.work(logging_level="ERROR")


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.0005) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def key_exists(connection: redis.Redis, key: str) -> Callable[[], bool]:
    return lambda: bool(connection.exists(key))


def status_is(job: Any, status: Any) -> Callable[[], bool]:
    return lambda: bool(job.get_status(refresh=True) == status)


def rq_latencies(redis_url: str, count: int, rng: random.Random) -> Sample:
    import _alt_jobs
    from rq import Queue
    from rq.command import send_stop_job_command
    from rq.job import JobStatus

    queue_name = f"bench-stop-{uuid.uuid4().hex[:8]}"
    proc = SPAWN.Process(target=rq_worker, args=(redis_url, queue_name), daemon=True)
    proc.start()
    connection = redis.Redis.from_url(redis_url)
    jobs = Queue(queue_name, connection=connection)
    sample = Sample("RQ: `send_stop_job_command` -> job status `stopped`", [])
    try:
        for i in range(count):
            running_key = f"bench:rq-running:{queue_name}:{i}"
            job = jobs.enqueue(_alt_jobs.wait_job, redis_url, running_key, 30, job_timeout=60)
            if not wait_for(key_exists(connection, running_key), 30, 0.001):
                raise RuntimeError(f"RQ worker did not start job {i} (alive: {proc.is_alive()})")
            time.sleep(rng.uniform(0, JITTER))
            start = time.monotonic()
            send_stop_job_command(connection, job.id)
            if wait_for(status_is(job, JobStatus.STOPPED), WAIT_LIMIT):
                sample.latencies.append((time.monotonic() - start) * 1000)
            else:
                sample.misses += 1
    finally:
        proc.terminate()  # SIGTERM: warm shutdown of an idle worker
        stop_process(proc)
        connection.close()
    return sample


# -- Celery: AbortableTask polling --------------------------------------------------------


def celery_app(redis_url: str) -> Any:
    from celery import Celery

    return Celery("bench_cancel", broker=redis_url, backend=redis_url, set_as_current=False)


def celery_poller(redis_url: str, count: int, outbox: Any) -> None:
    """What an ``AbortableTask`` does: check ``is_aborted()`` every CELERY_POLL s."""
    from celery.contrib.abortable import AbortableAsyncResult

    app = celery_app(redis_url)
    for _ in range(count):
        task_id = str(uuid.uuid4())
        app.backend.store_result(task_id, {"pid": os.getpid()}, "STARTED")
        outbox.put(("ready", task_id))
        result = AbortableAsyncResult(task_id, app=app)
        deadline = time.monotonic() + WAIT_LIMIT
        seen = True
        while not result.is_aborted():
            if time.monotonic() > deadline:
                seen = False
                break
            time.sleep(CELERY_POLL)
        outbox.put(("seen", time.monotonic(), seen))


def celery_latencies(redis_url: str, count: int, rng: random.Random) -> Sample:
    from celery.contrib.abortable import AbortableAsyncResult

    inbox = SPAWN.Queue()
    proc = SPAWN.Process(target=celery_poller, args=(redis_url, count, inbox), daemon=True)
    proc.start()
    app = celery_app(redis_url)
    label = f"Celery model: `AbortableAsyncResult.abort()` -> `is_aborted()` every {CELERY_POLL} s"
    sample = Sample(label, [])
    try:
        for _ in range(count):
            kind, task_id = next_message(inbox, "Celery poller", proc)
            assert kind == "ready", kind
            time.sleep(rng.uniform(0, CELERY_POLL))
            start = time.monotonic()
            AbortableAsyncResult(task_id, app=app).abort()
            kind, seen_at, seen = next_message(inbox, "Celery poller", proc)
            assert kind == "seen", kind
            if seen:
                sample.latencies.append((seen_at - start) * 1000)
            else:
                sample.misses += 1
    finally:
        stop_process(proc)
    return sample


# -- output -------------------------------------------------------------------------------


def fmt(ms: float) -> str:
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def table(samples: list[Sample]) -> str:
    rows = []
    for s in samples:
        values = s.latencies or [float("nan")]
        rows.append(
            [
                s.label,
                str(len(s.latencies)),
                fmt(median(values)),
                fmt(percentile(values, 95)),
                fmt(percentile(values, 99)),
                fmt(max(values)),
                str(s.misses),
            ]
        )
    header = ["cancel mechanism", "cancels", "p50 ms", "p95 ms", "p99 ms", "max ms", "misses"]
    return markdown_table(header, rows, right=1)


def caption(samples: list[Sample]) -> str:
    verdicts = []
    for s in samples:
        if s.label.startswith("ours"):
            p50 = median(s.latencies) if s.latencies else float("inf")
            p99 = percentile(s.latencies, 99) if s.latencies else float("inf")
            ok = p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS and not s.misses
            verdicts.append(
                f"{s.label.split(':')[0]} p50 {fmt(p50)} / p99 {fmt(p99)} ms "
                f"({'met' if ok else 'NOT met'})"
            )
    return (
        "Cross-process cancel latency, from instance B's cancel (API call, or HTTP POST "
        "through B's test client) to the job noticing it in instance A (another OS process), "
        f"same Redis. Target: ours p50 <= {TARGET_P50_MS:.0f} ms and p99 <= "
        f"{TARGET_P99_MS:.0f} ms; this run: {'; '.join(verdicts)}. A CPU-busy job holds the "
        "GIL; `job.progress()` and `check_cancelled()` release it at most once a "
        "millisecond, so the listener thread that sets `job.cancelled` need not wait for "
        f"Python's switch interval ({sys.getswitchinterval() * 1000:g} ms)."
    )


# -- driver -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cancels", type=int, help="ours: cancels per mode and way (default 200)")
    parser.add_argument(
        "--ways", default=",".join(WAYS), help="how B cancels: api, http or both (default api,http)"
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="what the job does while waiting: idle, busy or both",
    )
    parser.add_argument("--rq-stops", type=int, help="RQ stop commands (default 50; 0 skips)")
    parser.add_argument("--celery-aborts", type=int, help="Celery aborts (default 40; 0 skips)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random waits")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 / 10 / 8")
    add_common_options(parser)
    args = parser.parse_args(argv)
    args.ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.ways or set(args.ways) - set(WAYS):
        parser.error(f"--ways: choose from {', '.join(WAYS)}")
    if not args.modes or set(args.modes) - set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    fill_defaults(args, DEFAULTS, QUICK)
    if args.cancels < 1 or args.rq_stops < 0 or args.celery_aborts < 0:
        parser.error("--cancels must be positive, --rq-stops and --celery-aborts not negative")
    return args


def installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    notes = []
    with redis_server(args.redis_url) as server:
        samples = [
            ours_latencies(server.url, args.cancels, mode, way, rng)
            for mode in args.modes
            for way in args.ways
        ]
        if args.rq_stops and installed("rq"):
            samples.append(rq_latencies(server.url, args.rq_stops, rng))
        elif args.rq_stops:
            notes.append("RQ skipped: pip install rq")
        if args.celery_aborts and installed("celery"):
            samples.append(celery_latencies(server.url, args.celery_aborts, rng))
        elif args.celery_aborts:
            notes.append("Celery skipped: pip install 'celery[redis]'")
        clock = time.get_clock_info("monotonic").implementation
        env = environment(
            server.url,
            f"clock {clock}",
            f"GIL switch interval {sys.getswitchinterval() * 1000:g} ms",
        )
    print(env)
    print()
    print(caption(samples))
    print()
    print(table(samples))
    for note in notes:
        print(f"\n{note}")
    bars = []
    for s in samples:
        if s.latencies:
            short = s.label.split(":")[0].replace("ours, ", "").replace(" model", "")
            bars += [
                (
                    f"{short} p50",
                    median(s.latencies),
                    TARGET_P50_MS if s.label.startswith("ours") else None,
                ),
                (
                    f"{short} p99",
                    percentile(s.latencies, 99),
                    TARGET_P99_MS if s.label.startswith("ours") else None,
                ),
            ]
    write_json(
        args.json,
        {
            "samples": [
                {"label": s.label, "latencies_ms": s.latencies, "misses": s.misses} for s in samples
            ],
            "panels": [
                panel(
                    "cancel.py: cross-process cancel latency (ms), targets p50 2 / p99 10",
                    "ms",
                    bars,
                )
            ],
        },
    )


if __name__ == "__main__":
    main()
