"""Jobs on RQ and Celery workers: start() cost, web->worker cancel latency, throughput, progress() cost.

``ASYNCSTATE_EXECUTOR = "rq"`` or ``"celery"`` runs tracked jobs in worker
processes. This script measures that side by side with the engines alone,
against one ``redis-server`` on loopback, with real worker processes (the
app is ``_apps.worker_app``, the bare side ``_alt_jobs.py``):

1. ``start()`` cost in this process (no request, an app context pushed, no
   worker consuming): our ``TrackedJob.start()`` with executor ``rq`` (queued
   document, queue place, ``enqueue_call`` of the payload) and ``celery``
   (the same, then ``apply_async``), against a bare
   ``Queue.enqueue_call(fn, args)`` (RQ, ``JSONSerializer``) and a bare
   ``task.delay(...)`` (Celery, JSON). Each call timed alone; median µs.
2. Web->worker cancel latency: a job running on a worker waits on
   ``job.cancelled``; this process calls ``handle.cancel()`` and the job, the
   moment its Event fires, pushes ``time.monotonic()`` to a Redis list this
   process ``BLPOP``\\ s (``CLOCK_MONOTONIC`` is one system-wide clock on
   Linux). Ours on 2 RQ forking workers, 2 RQ simple workers and a Celery
   prefork worker; against RQ's ``send_stop_job_command`` (a plain forking
   ``rq worker``; until the work horse has exited, and until the job's status
   reads ``stopped``), Celery's ``revoke(terminate=True)`` (until the pool
   process running the task has exited) and a real Celery ``AbortableTask``
   checking ``is_aborted()`` every 0.5 s.
3. Throughput: ``--jobs`` trivial jobs (one ``INCR`` each, ours and bare
   alike; ``--fork-jobs`` on the RQ forking workers, which do tens of jobs/s)
   over 2 worker processes: 2 RQ forking workers, 2 RQ simple workers, 1
   Celery worker with ``--concurrency 2`` (prefork). To time the workers and
   not the producer, each worker process is first held by a gate job, the
   queue is filled, then the gates are released; the clock runs from the
   release until the counter reaches the count. Bare: a plain ``rq worker``
   (``-S json``) / a Celery app without flask-asyncstate running the same
   function, queued with defaults. The server's command count over each round
   (``INFO stats``, less this process's own polls) gives Redis commands per job.
4. ``progress()`` cost inside a worker: a job times a loop of
   ``--progress-calls`` ``job.progress(i)`` calls and returns µs per call, on
   each engine, and in turns with those in the thread pool
   (``ASYNCSTATE_EXECUTOR = "threads"``, an app in this process).

Ours and bare workers of one engine run at the same time (the idle ones
wait in a blocking pop) and the throughput rounds alternate, so drift in
the machine's load hits both. Every worker is started in a session of its
own and stopped (SIGTERM, then SIGKILL of it and everything below it) at the
end, also on failure; worker logs are shown if one dies or never gets ready.
For a trivial job the per-job bookkeeping is the whole cost: ours also takes
the job with one conditional update of its document, writes the running and
final documents and leaves the queue index. The RQ forking worker is
expected to fall short: each job's work horse opens its own Redis
connections, starts its own writer and cancel-listener threads and beats a
heartbeat before the job runs; the simple worker and Celery's pool processes
keep all that from job to job.

Targets: ours cancel p99 <= 10 ms, no miss, on every engine; throughput ours /
bare >= 0.8x on every engine.

    python bench/workers.py              # 30 cancels per row, 3 rounds of 1,000 jobs (about 80 s)
    python bench/workers.py --quick      # 10 cancels per row, 1 round of 200 jobs (about 20 s)
    python bench/workers.py --engines rq-simple,celery --jobs 2000 --cancels 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import harness
import redis

try:
    import _alt_jobs
    from rq import Queue, Worker
    from rq.command import send_stop_job_command
    from rq.job import Job, JobStatus
    from rq.serializers import JSONSerializer
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    raise SystemExit(f"bench/workers.py needs rq and celery: pip install -e '.[bench]' ({exc})")

import _apps

TARGET_P99 = harness.Target("ours, web->worker cancel latency p99", "<=", 10.0, " ms")
TARGET_MISSES = harness.Target("ours, cancels not seen within 10 s", "<=", 0)
TARGET_THROUGHPUT = harness.Target("trivial jobs/s, ours / bare", ">=", 0.8, "x")
FULL = {
    "engines": "rq,rq-simple,celery",
    "start_calls": 500,
    "start_repeats": 5,
    "cancels": 30,
    "aborts": 10,
    "jobs": 1000,
    "fork_jobs": 200,
    "rounds": 3,
    "progress_calls": 100_000,
    "progress_repeats": 3,
}
QUICK = {
    **FULL,
    "start_calls": 200,
    "start_repeats": 3,
    "cancels": 10,
    "aborts": 4,
    "jobs": 200,
    "fork_jobs": 60,
    "rounds": 1,
    "progress_repeats": 1,
}
HELP = {
    "engines": "a subset of rq,rq-simple,celery",
    "start_calls": "start(): calls per column and round",
    "start_repeats": "start(): rounds",
    "cancels": "cancels per row",
    "aborts": "Celery AbortableTask aborts, 0 skips",
    "jobs": "throughput: jobs per round",
    "fork_jobs": "throughput: jobs per round on the RQ forking workers (tens of jobs/s)",
    "rounds": "throughput: rounds per side",
    "progress_calls": "progress(): calls per job",
    "progress_repeats": "progress(): jobs per engine",
}
#: This process waits a random 0..JITTER s before each cancel (ours, RQ, revoke).
JITTER = 0.002
#: The AbortableTask's pause between two ``is_aborted()`` checks (as in cancel.py).
ABORT_POLL = 0.5
#: A cancel not seen within this many seconds is a miss; every wait here is bounded.
WAIT_LIMIT = 10.0
#: How often the stop latencies (horse gone, status, pool process gone) are polled.
POLL = 0.0005
ENGINES = ("rq", "rq-simple", "celery")
ENGINE_LABELS = {
    "rq": "RQ forking worker x 2",
    "rq-simple": "RQ simple worker x 2",
    "celery": "Celery prefork, 1 worker x concurrency 2",
}


def wait_for(check: Callable[[], Any], timeout: float, what: str, alive: Callable[[], None]) -> Any:
    """Poll ``check`` every 50 ms until it returns something truthy; ``alive()`` raises if a
    worker died meanwhile."""

    def ready() -> Any:
        alive()
        return check()

    return harness.wait_until(ready, timeout, interval=0.05, message=what)


# -- one engine's workers: ours and bare ----------------------------------------------------


@dataclass
class Side:
    """The workers of one side (ours or bare) of one engine, and how to feed them."""

    name: str  # "ours" or "bare"
    engine: str
    queue: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


class Bench:
    """One redis-server, the processes started on it, and the bench-side apps."""

    def __init__(self, url: str, processes: harness.Processes) -> None:
        self.url = url
        self.redis = redis.Redis.from_url(url)
        self.processes = processes
        self.tag = secrets.token_hex(3)
        self.base_env = {
            **os.environ,
            "BW_REDIS_URL": url,
            "PYTHONPATH": os.pathsep.join([str(harness.BENCH), harness.ROOT]),
            "PYTHONUNBUFFERED": "1",
        }
        self.serial = 0

    def key(self, what: str) -> str:
        self.serial += 1
        return f"bw{self.tag}:{what}:{self.serial}"

    def pop(self, key: str, timeout: float = 30) -> list[Any]:
        """The next reply a job pushed to ``key`` (bounded wait)."""
        found = self.redis.blpop([key], timeout=int(timeout))
        if found is None:
            raise RuntimeError(f"no reply on {key} within {timeout:g} s")
        return list(json.loads(found[1]))

    # -- starting workers ------------------------------------------------------------------

    def env(self, engine: str, prefix: str, queue: str) -> dict[str, str]:
        return {
            **self.base_env,
            "BW_PREFIX": prefix,
            "BW_EXECUTOR": "celery" if engine == "celery" else "rq",
            "BW_QUEUE": queue,
            "BW_BARE_QUEUE": queue,
        }

    def ours_argv(self, engine: str, queue: str) -> list[str]:
        if engine == "celery":
            return celery_argv("_apps:celery_app", queue, self.tag)
        argv = [sys.executable, "-m", "flask", "--app", "_apps:worker_app()", "asyncstate"]
        argv.append("worker")
        return argv + ["--queue", queue] + (["--simple"] if engine == "rq-simple" else [])

    def bare_argv(self, engine: str, queue: str) -> list[str]:
        if engine == "celery":
            return celery_argv("_alt_jobs:bare_celery", queue, self.tag)
        argv = [sys.executable, "-m", "rq.cli", "worker", "-u", self.url, "-S", "json"]
        return argv + (["-w", "rq.worker.SimpleWorker"] if engine == "rq-simple" else []) + [queue]

    def start_side(self, name: str, engine: str, prefix: str) -> Side:
        queue = f"bw{self.tag}-{engine}-{name}"
        side = Side(name, engine, queue)
        argv = self.ours_argv(engine, queue) if name == "ours" else self.bare_argv(engine, queue)
        count = 1 if engine == "celery" else 2
        for _ in range(count):
            side.procs.append(
                self.processes.spawn(f"{engine}-{name}", argv, self.env(engine, prefix, queue))
            )
        return side

    def wait_ready(self, side: Side, prefix: str, celery: Any = None) -> None:
        """RQ: both workers registered on the queue; Celery: the worker answers a ping.
        Ours also: 2 processes (RQ workers, or Celery pool processes) beating."""

        def alive() -> None:
            self.processes.check_alive(side.procs)

        what = f"{side.name} {side.engine} workers ready"
        connection = self.redis
        if side.engine == "celery":
            up = lambda: len(celery.control.ping(timeout=0.3) or []) >= 1
        else:
            queue = Queue(side.queue, connection=connection)
            up = lambda: Worker.count(connection=connection, queue=queue) >= 2
        try:
            wait_for(up, 60, what, alive)
            if side.name == "ours":
                beating = lambda: len(harness.worker_instances(self.url, prefix)) >= 2
                wait_for(beating, 60, what, alive)
        except (RuntimeError, AssertionError) as exc:
            raise RuntimeError(f"{exc}\n{self.processes.logs(side.procs)}") from None


def celery_argv(target: str, queue: str, tag: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        target,
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "2",
        "-O",
        "fair",
        "--queues",
        queue,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "INFO",
        "--hostname",
        f"bw{tag}-{secrets.token_hex(2)}@%h",
    ]


# -- the bench-side apps --------------------------------------------------------------------


class OursClient:
    """This process's app for one engine (a web instance: it only queues), its jobs by name.

    Push ``app.app_context()`` around ``start()``; handles work without one.
    """

    def __init__(self, url: str, prefix: str, executor: str, queue: str) -> None:
        self.app = _apps.worker_app(url, prefix, executor, queue)
        self.celery = harness.celery_of(self.app)

    def job(self, name: str) -> Any:
        return harness.registered_job(self.app, name)

    def close(self) -> None:
        try:
            harness.extension(self.app).shutdown(2)
        finally:
            if self.celery is not None:
                self.celery.close()


# -- 1. start() cost --------------------------------------------------------------------------


def measure_start(
    bench: Bench, calls: int, repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median µs per submitting call, and Redis commands per call (server side); nothing
    consumes these queues (they are emptied after)."""
    tag = bench.tag
    prefix = f"bw{tag}-start-"
    queue = f"bw{tag}-start"
    ours_rq = OursClient(bench.url, prefix + "rq:", "rq", queue + "-ours-rq")
    ours_celery = OursClient(bench.url, prefix + "celery:", "celery", queue + "-ours-celery")
    bare_celery, bare_tasks = _alt_jobs.make_bare_celery(bench.url, queue + "-bare-celery")
    bare_queue = Queue(queue + "-bare-rq", connection=bench.redis, serializer=JSONSerializer)
    counter = f"bw{tag}:start-counter"
    trivial_rq, trivial_celery = ours_rq.job("bench_trivial"), ours_celery.job("bench_trivial")
    columns: dict[str, tuple[Callable[[], Any], Any]] = {  # (call, app whose context it needs)
        "ours-rq": (lambda: trivial_rq.start(counter), ours_rq.app),
        "bare-rq": (
            lambda: bare_queue.enqueue_call(_alt_jobs.bare_trivial, args=[counter]),
            None,
        ),
        "ours-celery": (lambda: trivial_celery.start(counter), ours_celery.app),
        "bare-celery": (lambda: bare_tasks["trivial"].delay(counter), None),
    }
    samples: dict[str, list[float]] = {name: [] for name in columns}
    commands: dict[str, int] = dict.fromkeys(columns, 0)
    try:
        for rep in range(repeats + 1):  # the first round warms up (connections, scripts)
            for name, (call, app) in columns.items():
                with app.app_context() if app is not None else nullcontext():
                    before = harness.commands_processed(bench.redis)
                    took = harness.each_timed(call, calls if rep else min(calls, 50))
                    ran = harness.commands_processed(bench.redis) - before - 1  # less the INFO
                if rep:
                    samples[name] += took
                    commands[name] += ran
    finally:
        for client in (ours_rq, ours_celery):
            client.close()
        bare_celery.close()
        for name in (queue + "-ours-celery", queue + "-bare-celery"):
            bench.redis.delete(name)
        for q in (queue + "-ours-rq", queue + "-bare-rq"):
            Queue(q, connection=bench.redis, serializer=JSONSerializer).empty()
        delete_matching(bench.redis, f"{prefix}*")
    us = {name: harness.median(values) for name, values in samples.items()}
    return us, {name: commands[name] / len(samples[name]) for name in columns}


def delete_matching(client: redis.Redis, pattern: str) -> None:
    batch = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)


# -- 2. cancel latency ------------------------------------------------------------------------


@dataclass
class Latency(harness.Latencies):
    engine: str = "rq"
    ours: bool = False


def ours_cancels(
    bench: Bench, ours: OursClient, engine: str, count: int, rng: random.Random
) -> Latency:
    """``handle.cancel()`` here -> ``job.cancelled`` set in the worker process."""
    sample = Latency(
        "ours: `handle.cancel()` -> `job.cancelled` in the worker", engine=engine, ours=True
    )
    job = ours.job("bench_wait_cancel")
    for i in range(count + 1):  # the first one warms up both sides
        reply = bench.key("cancel")
        handle = job.start(reply)
        kind, _pid = bench.pop(reply)
        assert kind == "ready", kind
        time.sleep(rng.uniform(0, JITTER))
        start = time.monotonic()
        if not handle.cancel():
            raise RuntimeError("cancel found no job")
        kind, seen_at, seen = bench.pop(reply, WAIT_LIMIT + 5)
        assert kind == "seen", kind
        doc = wait_final(handle)
        if doc is None or doc["status"] != "cancelled":
            raise RuntimeError(f"a cancelled job ended {doc!r}")
        if i:
            sample.add(seen_at - start if seen else None)
    return sample


def wait_final(handle: Any, timeout: float = WAIT_LIMIT) -> dict[str, Any] | None:
    """The job's final document (polled every 5 ms: ``handle.wait()`` polls every 50)."""
    deadline = time.monotonic() + timeout
    while True:
        doc = handle.status()
        if doc is None or doc["status"] not in ("queued", "running"):
            return doc  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {handle.id} still {doc['status']} after {timeout:g} s")
        time.sleep(0.005)


def rq_stops(bench: Bench, side: Side, count: int, rng: random.Random) -> list[Latency]:
    """``send_stop_job_command`` -> the work horse has exited; -> the job reads ``stopped``."""
    gone = Latency("RQ: `send_stop_job_command` -> work horse exited")
    stopped = Latency("RQ: `send_stop_job_command` -> job status `stopped`")
    queue = Queue(side.queue, connection=bench.redis, serializer=JSONSerializer)
    for i in range(count + 1):
        reply = bench.key("stop")
        job = queue.enqueue_call(_alt_jobs.bare_wait, args=[reply, 30], timeout=60)
        kind, pid = bench.pop(reply)
        assert kind == "ready", kind
        time.sleep(rng.uniform(0, JITTER))
        start = time.monotonic()
        send_stop_job_command(bench.redis, job.id, serializer=JSONSerializer)
        t_gone = t_stopped = None
        deadline = start + WAIT_LIMIT
        fresh = Job.fetch(job.id, connection=bench.redis, serializer=JSONSerializer)
        while (t_gone is None or t_stopped is None) and time.monotonic() < deadline:
            if t_gone is None and harness.exited(pid):
                t_gone = time.monotonic()
            if t_stopped is None and fresh.get_status(refresh=True) == JobStatus.STOPPED:
                t_stopped = time.monotonic()
            time.sleep(POLL)
        if i:
            gone.add(None if t_gone is None else t_gone - start)
            stopped.add(None if t_stopped is None else t_stopped - start)
    return [gone, stopped]


def celery_revokes(
    bench: Bench, celery: Any, tasks: dict[str, Any], count: int, rng: random.Random
) -> Latency:
    """``revoke(task_id, terminate=True)`` -> the pool process running the task has exited."""
    sample = Latency(
        "Celery: `revoke(terminate=True)` -> the task's pool process exited", engine="celery"
    )
    for i in range(count + 1):
        reply = bench.key("revoke")
        result = tasks["wait"].apply_async(args=[reply, 30])
        kind, pid = bench.pop(reply)
        assert kind == "ready", kind
        time.sleep(rng.uniform(0, JITTER))
        start = time.monotonic()
        celery.control.revoke(result.id, terminate=True)
        at = harness.poll(lambda pid=pid: harness.exited(pid), WAIT_LIMIT, POLL)
        if i:
            sample.add(None if at is None else at - start)
    return sample


def celery_aborts(
    bench: Bench, celery: Any, tasks: dict[str, Any], count: int, rng: random.Random
) -> Latency:
    """``AbortableAsyncResult.abort()`` -> the task's next ``is_aborted()`` (every 0.5 s)."""
    from celery.contrib.abortable import AbortableAsyncResult

    sample = Latency(
        f"Celery: `AbortableAsyncResult.abort()` -> `is_aborted()` every {ABORT_POLL:g} s",
        engine="celery",
    )
    for _ in range(count):
        reply = bench.key("abort")
        result = tasks["abortable"].apply_async(args=[reply, ABORT_POLL])
        kind, _pid = bench.pop(reply)
        assert kind == "ready", kind
        time.sleep(rng.uniform(0, ABORT_POLL))  # any phase of the task's polling
        start = time.monotonic()
        AbortableAsyncResult(result.id, app=celery).abort()
        kind, seen_at, seen = bench.pop(reply, WAIT_LIMIT + 5)
        assert kind == "seen", kind
        sample.add(seen_at - start if seen else None)
    return sample


# -- 3. throughput ------------------------------------------------------------------------------


@dataclass
class Round:
    jobs: int
    seconds: float
    commands_per_job: float
    final: dict[str, int] = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds


def gated_round(
    bench: Bench,
    side: Side,
    jobs: int,
    enqueue_gate: Callable[[list[Any]], Any],
    enqueue_job: Callable[[str], Any],
    after: Callable[[list[Any]], dict[str, int]] | None = None,
) -> Round:
    """Hold both worker processes with a gate job each, queue ``jobs``, release, time the drain."""
    release, reply, counter = bench.key("release"), bench.key("gated"), bench.key("counter")
    for _ in range(2):
        enqueue_gate([release, reply])
    pids = {bench.pop(reply)[1] for _ in range(2)}
    if len(pids) != 2:
        raise RuntimeError(f"both gates were taken by one process: {pids}")
    handles = [enqueue_job(counter) for _ in range(jobs)]
    commands_before = harness.commands_processed(bench.redis)
    start = time.monotonic()
    bench.redis.rpush(release, "go", "go")
    polls, deadline = 0, start + 120
    while int(bench.redis.get(counter) or 0) < jobs:
        polls += 1
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{side.name} {side.engine}: {bench.redis.get(counter)} of {jobs} done in 120 s"
            )
        time.sleep(0.002)
    took = time.monotonic() - start
    # every command the server ran meanwhile, less this process's own (RPUSH, GETs, INFO)
    commands = harness.commands_processed(bench.redis) - commands_before - polls - 3
    final = after(handles) if after is not None else {}
    bench.redis.delete(release, reply, counter)
    return Round(jobs, took, commands / jobs, final)


def all_final(handles: list[Any]) -> dict[str, int]:
    """Our documents, read back once the counter is full (not timed): how many by status."""
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + 30
    for handle in handles:
        while True:
            doc = handle.status()
            status = "gone" if doc is None else doc["status"]
            if status not in ("queued", "running") or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


# -- 4. progress() ------------------------------------------------------------------------------


def progress_run(ours: OursClient, calls: int) -> float:
    """µs per ``job.progress(i)`` call, as one job on ``ours``' executor timed its own loop."""
    with ours.app.app_context():
        doc = ours.job("bench_progress_loop").start(calls).wait(120)
    if doc is None or doc["status"] != "succeeded":
        raise RuntimeError(f"the progress loop ended {doc!r}")
    return float(doc["result"])


# -- one engine, ours and bare ---------------------------------------------------------------------


@dataclass
class Results:
    start_us: dict[str, float] = field(default_factory=dict)
    start_commands: dict[str, float] = field(default_factory=dict)
    latencies: list[Latency] = field(default_factory=list)
    throughput: dict[str, dict[str, list[Round]]] = field(default_factory=dict)
    #: µs per progress() call, per job, by where it ran ("threads" first).
    progress: dict[str, list[float]] = field(default_factory=lambda: {"threads": []})

    @property
    def progress_us(self) -> dict[str, float]:
        return {name: harness.median(v) for name, v in self.progress.items() if v}


def run_engine(
    bench: Bench,
    engine: str,
    args: argparse.Namespace,
    rng: random.Random,
    results: Results,
    threads: OursClient,
) -> None:
    prefix = f"bw{bench.tag}-{engine}:"
    with ExitStack() as stack:
        ours_side = bench.start_side("ours", engine, prefix)
        bare_side = bench.start_side("bare", engine, prefix)
        stack.callback(bench.processes.stop, ours_side.procs + bare_side.procs)
        ours = OursClient(
            bench.url, prefix, "celery" if engine == "celery" else "rq", ours_side.queue
        )
        stack.callback(ours.close)
        stack.enter_context(ours.app.app_context())
        bare_celery = bare_tasks = None
        if engine == "celery":
            bare_celery, bare_tasks = _alt_jobs.make_bare_celery(bench.url, bare_side.queue)
            stack.callback(bare_celery.close)
        bench.wait_ready(ours_side, prefix, ours.celery)
        bench.wait_ready(bare_side, prefix, bare_celery)

        trivial, hold = ours.job("bench_trivial"), ours.job("bench_gate")
        ours_feed = (lambda a: hold.start(*a), trivial.start, all_final)
        if engine == "celery":
            bare_feed = (
                lambda a: bare_tasks["gate"].apply_async(args=a),
                bare_tasks["trivial"].delay,
                None,
            )
        else:
            bare_queue = Queue(bare_side.queue, connection=bench.redis, serializer=JSONSerializer)
            bare_feed = (
                lambda a: bare_queue.enqueue_call(_alt_jobs.gate, args=a, timeout=60),
                lambda counter: bare_queue.enqueue_call(_alt_jobs.bare_trivial, args=[counter]),
                None,
            )
        feeders = {"ours": ours_feed, "bare": bare_feed}
        sides = {"ours": ours_side, "bare": bare_side}
        # warm-up: first jobs import modules, open connections, load scripts in every process
        for name, (gate, enqueue, after) in feeders.items():
            gated_round(bench, sides[name], 20, gate, enqueue, after)

        # 2. cancel latency
        results.latencies.append(ours_cancels(bench, ours, engine, args.cancels, rng))
        if engine == "rq":
            results.latencies += rq_stops(bench, bare_side, args.cancels, rng)
        if engine == "celery":
            results.latencies.append(
                celery_revokes(bench, bare_celery, bare_tasks, args.cancels, rng)
            )
            if args.aborts:
                results.latencies.append(
                    celery_aborts(bench, bare_celery, bare_tasks, args.aborts, rng)
                )

        # 3. throughput, ours and bare taking turns
        rounds: dict[str, list[Round]] = {"ours": [], "bare": []}
        jobs = args.fork_jobs if engine == "rq" else args.jobs
        for _ in range(args.rounds):
            for name, (gate, enqueue, after) in feeders.items():
                rounds[name].append(gated_round(bench, sides[name], jobs, gate, enqueue, after))
        results.throughput[engine] = rounds

        # 4. progress() inside a job on this engine's worker, and in the thread pool, in turns
        for _ in range(args.progress_repeats):
            results.progress.setdefault(engine, []).append(progress_run(ours, args.progress_calls))
            results.progress["threads"].append(progress_run(threads, args.progress_calls))


# -- output ---------------------------------------------------------------------------------------

START_LABELS = {
    "ours-rq": ("ours, executor rq: `job.start()`", "bare-rq"),
    "bare-rq": ("bare RQ: `Queue.enqueue_call(fn, args)` (JSONSerializer)", "bare-rq"),
    "ours-celery": ("ours, executor celery: `job.start()`", "bare-celery"),
    "bare-celery": ("bare Celery: `task.delay(...)` (JSON)", "bare-celery"),
}
PROGRESS_LABELS = {
    "threads": 'thread pool (`ASYNCSTATE_EXECUTOR = "threads"`, this process)',
    "rq": "RQ forking worker (in the work horse)",
    "rq-simple": "RQ simple worker",
    "celery": "Celery prefork pool process",
}


def throughput_figures(results: Results) -> dict[str, tuple[float, float]]:
    """Per engine: median jobs/s of ours and of bare."""
    return {
        engine: tuple(  # type: ignore[misc]
            harness.median([r.jobs_per_s for r in rounds[side]]) for side in ("ours", "bare")
        )
        for engine, rounds in results.throughput.items()
    }


def documents(rounds: list[Round]) -> str:
    """Our documents of all rounds by status, of how many jobs."""
    total: dict[str, int] = {}
    for r in rounds:
        for status, n in r.final.items():
            total[status] = total.get(status, 0) + n
    jobs = sum(r.jobs for r in rounds)
    return ", ".join(f"{status} {n:,}" for status, n in sorted(total.items())) + f" of {jobs:,}"


def short_label(s: Latency) -> str:
    engine = {"rq": "RQ fork", "rq-simple": "RQ simple", "celery": "Celery"}[s.engine]
    if s.ours:
        return f"ours, {engine}"
    if "horse" in s.label:
        return "RQ stop -> horse exited"
    if "stopped" in s.label:
        return "RQ stop -> status stopped"
    if "revoke" in s.label:
        return "Celery revoke(terminate)"
    return f"Celery abort, {ABORT_POLL:g} s poll"


def print_report(report: harness.Report, results: Results, args: argparse.Namespace) -> None:
    us, commands = results.start_us, results.start_commands
    report.out(
        f"`start()` cost in the web process (no request, app context pushed, no worker consuming "
        f"the queues): {args.start_repeats} x {args.start_calls:,} calls per column after a "
        f"warm-up round, each call timed alone (GC paused), median; the columns take turns. Ours "
        f"writes the queued document and takes a place in the queue index, then makes the "
        f"engine's call with its JSON payload; bare is the engine's own call with its defaults. "
        f"Redis commands / call: counted by the server over the timed calls (commands inside Lua "
        f"scripts and `MULTI` blocks count). No target."
    )
    report.table(
        ["submitting call", "µs per call (median)", "ours / bare", "Redis commands / call"],
        [
            [label, f"{us[name]:.1f}", f"{us[name] / us[base]:.2f}x", f"{commands[name]:.1f}"]
            for name, (label, base) in START_LABELS.items()
        ],
    )
    cancel_met = []
    for s in results.latencies:
        if s.ours:
            where = ENGINE_LABELS[s.engine]
            cancel_met.append(report.check(TARGET_P99, s.pct(99), where))
            cancel_met.append(report.check(TARGET_MISSES, s.misses, where, str(s.misses)))
    report.out(
        f"Web->worker cancel latency, from this process's cancel call to the moment the job, "
        f"running in a worker process, observed it: {args.cancels} cancels per row after one "
        f"unmeasured, a random 0-{JITTER * 1000:g} ms wait before each; {args.aborts} aborts, "
        f"each after a random 0-{ABORT_POLL:g} s wait (any phase of the task's polling). Ours: "
        f"the job blocks in `job.cancelled.wait()` and pushes `time.monotonic()` to a Redis "
        f"list the moment its Event fires (set by that worker process's pub/sub listener); the "
        f"RQ and revoke rows poll the horse or pool process in /proc and the job status every "
        f"{POLL * 1000:g} ms."
    )
    report.table(
        ["cancel mechanism", "worker", *harness.LATENCY_HEADER],
        [[s.label, ENGINE_LABELS[s.engine], *s.cells()] for s in results.latencies],
        right=2,
    )
    figures = throughput_figures(results)
    throughput_met = [
        report.check(TARGET_THROUGHPUT, ours / bare, ENGINE_LABELS[e])
        for e, (ours, bare) in figures.items()
    ]
    report.out(
        f"Throughput of trivial jobs (one `INCR` each, ours and bare) over 2 worker processes: "
        f"{args.jobs:,} jobs per round ({args.fork_jobs:,} on the RQ forking workers, which do "
        f"tens of jobs/s here), median of {args.rounds} round(s), ours and bare taking turns. "
        f"Each worker process is first held by a gate job, the queue is filled, the gates are "
        f"released, and the clock runs from the release until the counter reads the count, so "
        f"the producer's cost is not in it (our documents are read back after, untimed). Bare: "
        f"a plain `rq worker -S json` / a Celery app without flask-asyncstate, same function, "
        f"queued with defaults. Redis commands / job: counted by the server over the round, "
        f"less this process's polls."
    )
    rows = []
    for engine, (ours, bare) in figures.items():
        rounds = results.throughput[engine]
        rows.append(
            [
                ENGINE_LABELS[engine],
                f"{rounds['ours'][0].jobs:,}",
                f"{ours:,.0f}",
                f"{bare:,.0f}",
                f"{ours / bare:.2f}x",
                *(
                    " / ".join(f"{r.seconds:.2f}" for r in rounds[side])
                    for side in ("ours", "bare")
                ),
                *(
                    f"{harness.median([r.commands_per_job for r in rounds[side]]):.1f}"
                    for side in ("ours", "bare")
                ),
                documents(rounds["ours"]),
            ]
        )
    report.table(
        [
            "engine",
            "jobs per round",
            "ours jobs/s",
            "bare jobs/s",
            "ours / bare",
            "ours s",
            "bare s",
            "ours Redis commands / job",
            "bare Redis commands / job",
            "our documents after",
        ],
        rows,
    )
    pus = results.progress_us
    report.out(
        f"`job.progress(i)` inside a job: {args.progress_calls:,} calls timed by the job itself "
        f"(GC paused); the job returns the µs per call as its result. Median of "
        f"{args.progress_repeats} job(s) per worker row; the thread-pool row (an app on executor "
        f"`threads` in this process, same Redis) is the median of as many jobs as all the worker "
        f"rows together, each run right after a worker's, so both see the same machine. "
        f"Expected: the same wherever the job runs (a dict update in memory; that process's "
        f"writer thread flushes every {harness.FLUSH:g} s)."
    )
    report.table(
        ["where the job runs", "µs per `job.progress(i)` (median)", "/ thread pool"],
        [
            [PROGRESS_LABELS[name], f"{value:.2f}", f"{value / pus['threads']:.2f}x"]
            for name, value in pus.items()
        ],
    )
    ours_rows = [s for s in results.latencies if s.ours]
    others = [s for s in results.latencies if not s.ours and s.ms]
    report.summary(
        "web -> worker cancel (" + " / ".join(short_label(s)[6:] for s in ours_rows) + ")",
        "p99 " + " / ".join(harness.fmt(s.pct(99)) for s in ours_rows) + " ms",
        ", ".join(
            f"{short_label(s)} {'p50' if 'abort' in short_label(s) else 'p99'} "
            f"{harness.fmt(s.pct(50 if 'abort' in short_label(s) else 99))} ms"
            for s in others
        ),
        "p99 <= 10 ms",
        all(cancel_met),
    )
    report.summary(
        "trivial jobs/s over 2 worker processes, ours / bare",
        ", ".join(
            f"{ENGINE_LABELS[e].split(',')[0]} {o / b:.2f}x" for e, (o, b) in figures.items()
        ),
        ", ".join(
            f"bare {ENGINE_LABELS[e].split(',')[0]} {b:,.0f} jobs/s"
            for e, (_o, b) in figures.items()
        ),
        ">= 0.8x",
        all(throughput_met),
    )
    report.figures.update(
        start_us=us,
        start_commands_per_call=commands,
        latencies_ms={
            f"{s.engine}: {s.label}": {"ms": s.ms, "misses": s.misses} for s in results.latencies
        },
        throughput_jobs_per_s={e: {"ours": o, "bare": b} for e, (o, b) in figures.items()},
        progress_us=pus,
    )
    latency_bars: list[tuple[Any, ...]] = []
    for s in results.latencies:
        if s.ms:
            latency_bars.append((f"{short_label(s)} p50", s.pct(50)))
            latency_bars.append(
                (f"{short_label(s)} p99", s.pct(99), TARGET_P99.limit if s.ours else None)
            )
    report.panel(
        harness.panel(
            "workers.py: start() µs per call / the engine's own enqueue call",
            "x",
            [
                ("ours rq / Queue.enqueue_call", us["ours-rq"] / us["bare-rq"]),
                ("ours celery / task.delay", us["ours-celery"] / us["bare-celery"]),
            ],
            reference=1.0,
        ),
        harness.panel("workers.py: web->worker cancel latency (ms)", "ms", latency_bars),
        harness.panel(
            "workers.py: trivial jobs/s over 2 worker processes, ours / bare",
            "x",
            [(ENGINE_LABELS[e], o / b) for e, (o, b) in figures.items()],
            target=TARGET_THROUGHPUT.limit,
            reference=1.0,
        ),
        harness.panel(
            "workers.py: µs per job.progress(i) call, by where the job runs",
            "µs",
            [(PROGRESS_LABELS[name].split(" (")[0], value) for name, value in pus.items()],
        ),
    )


def main(argv: list[str] | None = None) -> None:
    found = harness.parser(__doc__, FULL, QUICK, HELP)
    found.add_argument("--seed", type=int, default=1, help="seed of the random waits")
    ranges = {
        "start_calls": (1, 10_000),
        "start_repeats": (1, 20),
        "cancels": (1, 500),
        "aborts": (0, 100),
        "jobs": (10, 20_000),
        "fork_jobs": (10, 20_000),
        "rounds": (1, 10),
        "progress_calls": (1, 2_000_000),
        "progress_repeats": (1, 20),
    }
    args = harness.parse(found, argv, ranges, {"engines": ENGINES})
    report = harness.Report(__file__, args)
    rng = random.Random(args.seed)
    results = Results()
    with (
        tempfile.TemporaryDirectory(prefix="asyncstate-workers-") as log_dir,
        harness.redis_server(args.redis_url) as server,
    ):
        processes = harness.Processes(log_dir)
        bench = Bench(server.url, processes)
        # the thread pool's progress() runs beside each engine's: an app on executor "threads"
        threads = OursClient(server.url, f"bw{bench.tag}-threads:", "threads", "unused")
        try:
            results.start_us, results.start_commands = measure_start(
                bench, args.start_calls, args.start_repeats
            )
            for engine in args.engines:
                run_engine(bench, engine, args, rng, results, threads)
        finally:
            try:
                processes.stop()
            finally:
                threads.close()
        report.out(
            harness.environment(
                server.url,
                f"rq {version('rq')}, celery {version('celery')}",
                f"clock {time.get_clock_info('monotonic').implementation}",
            )
        )
        bench.redis.close()
    print_report(report, results, args)
    report.finish()


if __name__ == "__main__":
    main()
