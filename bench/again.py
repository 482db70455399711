"""Jobs that run again: from a process's death to the job running again, and what retries cost.

1. Death to the next run. A ``resumable=True`` job (``_apps.again_app``'s
   ``bench_again_hold``) says "started" (its ``time.monotonic()``, one system-wide
   clock on Linux), then works in 20 ms steps through ``job.iter``. A random
   0.3 s to one heartbeat later the process running it is SIGKILLed; the figure is
   the time from the kill to the "started" of the run that follows, in seconds and
   in heartbeats (``--heartbeat``, set on every app of ours). Rows:

   - ours, thread pool: instance A (another OS process, spawn) runs the job and is
     SIGKILLed; instance B, this process, has answered one request (a poll), so its
     writer sweeps once a beat and takes due jobs every second at most. The way
     back: A's heartbeat entry expires (2.75 heartbeats after its last beat), B's
     next sweep puts the job back in the queue, its dispatch runs it;
   - ours, RQ: two ``flask asyncstate worker`` processes; the work horse is
     SIGKILLed, its worker records it (``Work-horse terminated``), the job is due at
     once and the next look of any writer (the workers', this process's) queues it
     again;
   - ours, Celery: one prefork worker, concurrency 2; the pool process is
     SIGKILLed (``WorkerLostError``), then as for RQ.

   Against, in the same run, on the same Redis, the engines' own ways to run a job
   again after its process died (their jobs start over; ours go on from the cursor):

   - RQ alone: a plain ``rq worker`` x 2 (``-S json``), the job enqueued with
     ``retry=Retry(max=1)``: the worker that lost its horse enqueues it again;
   - Celery alone: a plain Celery worker (prefork, concurrency 2), the task
     ``acks_late=True, reject_on_worker_lost=True``: requeued when its process is lost.

   No engine runs again a job of a dead web process (the thread-pool row).

2. What a job that may run again costs when it does not. In this process, apps on
   the memory store and on Redis (each Redis app through a client counting its
   round trips), a job returning at once: a plain job in an app without the
   feature, a ``retries=2`` one and a ``resumable=True`` one in an app with it.
   Figures, medians of the columns taken in turns: ``start()`` (each call timed
   alone, then waited for, untimed), a whole run (``start()`` to the final
   document, ``handle.wait()``), Redis round trips per job, and the round trips an
   idle app's writer makes per second (the app with the feature looks for due
   jobs every second and for dead instances' jobs once a beat).

Where the way back goes through a heartbeat (the thread-pool row; Celery's
``WorkerLostError`` comes seconds late now and then, and a sweep gets there first),
the job runs again 1.75 to 3.75 heartbeats after the death: the dead process's
entry lives 2.75 heartbeats after its last beat (0 to 1 before the death), and a
sweep comes once a beat. ``--heartbeat 5 --rows threads`` measures it at the
default heartbeat (about 15 s a death).

Targets: every death of row 1 (ours) followed by the next run within 3 heartbeats;
``retries=2`` / plain <= 1.1x for ``start()`` and for a run, on both stores; no more
round trips per job than a plain job (<= 0.5 more, writer ticks aside).

    python bench/again.py               # 8 deaths per row, heartbeat 1 s, 5 x 300 calls (~2.5 min)
    python bench/again.py --quick       # 3 deaths per row, heartbeat 0.5 s, 3 x 100 (~45 s)
    python bench/again.py --rows threads,rq --deaths 5
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import harness
import redis

try:
    import _alt_jobs
    import _apps
    from rq import Queue, Retry, Worker
    from rq.serializers import JSONSerializer
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    raise SystemExit(f"bench/again.py needs rq and celery: pip install -e '.[bench]' ({exc})")

TARGET_DEATH = harness.Target("ours, death to the next run, every death", "<=", 3.0, " heartbeats")
TARGET_START = harness.Target("start(), retries=2 / plain job", "<=", 1.1, "x")
TARGET_RUN = harness.Target("a run that does not retry, retries=2 / plain job", "<=", 1.1, "x")
TARGET_TRIPS = harness.Target("Redis round trips per job, retries=2 minus plain", "<=", 0.5)
ROWS = ("threads", "rq", "celery", "rq-alone", "celery-alone")
LABELS = {
    "threads": "ours, thread pool: instance SIGKILLed, another instance runs it",
    "rq": "ours, RQ: work horse SIGKILLed",
    "celery": "ours, Celery prefork: pool process SIGKILLed",
    "rq-alone": "RQ alone, `Retry(max=1)`: work horse SIGKILLed",
    "celery-alone": "Celery alone, `acks_late` + `reject_on_worker_lost`: pool process SIGKILLed",
}
#: Our row each alternative is compared with.
AGAINST = {"rq": "rq-alone", "celery": "celery-alone"}
FULL = {"rows": ",".join(ROWS), "deaths": 8, "heartbeat": 1.0, "calls": 300, "repeats": 5}
QUICK = {**FULL, "deaths": 3, "heartbeat": 0.5, "calls": 100, "repeats": 3}
HELP = {
    "rows": f"a subset of {','.join(ROWS)}",
    "deaths": "deaths timed per row",
    "heartbeat": "ASYNCSTATE_HEARTBEAT_INTERVAL of our apps, s",
    "calls": "part 2: calls per column and repeat",
    "repeats": "part 2: repeats (the columns take turns)",
}
#: Longest wait for a job's reply (a run after a death included).
WAIT = 30.0
COLUMNS = {
    "plain": "plain job (an app without retries/resumable)",
    "retries": "`retries=2` job",
    "resumable": "`resumable=True` job",
}


# -- part 1: deaths ------------------------------------------------------------------------------


@dataclass
class Deaths:
    """The deaths of one row: seconds from each kill to the next run's start."""

    row: str
    seconds: list[float] = field(default_factory=list)
    heartbeat: float | None = None  # ours: the heartbeat interval

    def median(self) -> float:
        return harness.median(self.seconds)

    def worst(self) -> float:
        return max(self.seconds) if self.seconds else float("nan")


class Bench:
    """One redis-server, the processes started on it, replies from the jobs."""

    def __init__(self, url: str, heartbeat: float, processes: harness.Processes) -> None:
        self.url = url
        self.heartbeat = heartbeat
        self.redis = redis.Redis.from_url(url, socket_timeout=WAIT + 5)  # BLPOPs up to WAIT
        self.processes = processes
        os.environ["BW_REDIS_URL"] = url  # the jobs' replies, in this process and in A
        self.tag = secrets.token_hex(3)
        self.serial = 0
        self.base_env = {
            **os.environ,
            "BW_REDIS_URL": url,
            "BW_HEARTBEAT": str(heartbeat),
            "PYTHONPATH": os.pathsep.join([str(harness.BENCH), harness.ROOT]),
            "PYTHONUNBUFFERED": "1",
        }

    def key(self, what: str) -> str:
        self.serial += 1
        return f"ba{self.tag}:{what}:{self.serial}"

    def pop(self, key: str, expect: str, timeout: float = WAIT) -> list[Any]:
        """The next reply a job pushed to ``key``, checked to be ``expect``."""
        found = self.redis.blpop([key], timeout=int(timeout))
        if found is None:
            raise RuntimeError(f"no {expect!r} reply on {key} within {timeout:g} s")
        reply = list(json.loads(found[1]))
        if reply[0] != expect:
            raise RuntimeError(f"{key}: {reply[0]!r}, not {expect!r}")
        return reply

    def env(self, executor: str, prefix: str, queue: str) -> dict[str, str]:
        return {
            **self.base_env,
            "BW_PREFIX": prefix,
            "BW_EXECUTOR": executor,
            "BW_QUEUE": queue,
            "BW_BARE_QUEUE": queue,
        }

    def workers(self, row: str, prefix: str, queue: str) -> list[Any]:
        """Start the workers of ``row`` and wait until they take jobs."""
        engine = "celery" if row.startswith("celery") else "rq"
        if row == "rq":
            argv = [sys.executable, "-m", "flask", "--app", "_apps:again_app()", "asyncstate"]
            argv += ["worker", "--queue", queue]
        elif row == "rq-alone":
            argv = [sys.executable, "-m", "rq.cli", "worker", "-u", self.url, "-S", "json", queue]
        else:
            target = "_apps:again_celery_app" if row == "celery" else "_alt_jobs:bare_celery"
            argv = [sys.executable, "-m", "celery", "-A", target, "worker", "--pool", "prefork"]
            argv += ["--concurrency", "2", "-O", "fair", "--queues", queue, "--without-gossip"]
            argv += ["--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
            argv += ["--hostname", f"ba{self.tag}-{secrets.token_hex(2)}@%h"]
        count = 2 if engine == "rq" else 1
        procs = [
            self.processes.spawn(row, argv, self.env(engine, prefix, queue)) for _ in range(count)
        ]
        return procs

    def wait_ready(self, row: str, procs: list[Any], prefix: str, queue: str) -> None:
        def alive() -> None:
            self.processes.check_alive(procs)

        if row.startswith("rq"):
            connection = self.redis
            rq_queue = Queue(queue, connection=connection)
            up: Callable[[], bool] = lambda: (
                Worker.count(connection=connection, queue=rq_queue) >= 2
            )
        else:  # a ping through the broker: the worker consumes
            celery = _alt_jobs.make_celery(self.url, queue, "bench_again_ping")
            up = lambda: len(celery.control.ping(timeout=0.3) or []) >= 1
        beating = lambda: (
            row not in ("rq", "celery") or (len(harness.worker_instances(self.url, prefix)) >= 2)
        )
        try:
            harness.wait_until(lambda: (alive(), up() and beating())[1], 60, interval=0.05)
        except (RuntimeError, AssertionError) as exc:
            raise RuntimeError(f"{row} workers not ready: {exc}\n{self.processes.logs(procs)}")


def instance_a(inbox: Any, outbox: Any, url: str, prefix: str, heartbeat: float) -> None:
    """Instance A of the thread-pool row: start each job it is sent, say so, until killed."""
    app = _apps.again_app(url, prefix, "threads", "unused", heartbeat)
    job = harness.registered_job(app, "bench_again_hold")
    with app.app_context():
        while True:
            message = inbox.get()
            handle = job.start(*message[1:])
            outbox.put(("started", handle.id))


def one_death(
    bench: Bench, reply_key: str, release_key: str, rng: random.Random, kill: Callable[[int], None]
) -> float:
    """The job of ``reply_key`` has been started: wait for it, kill its process at a random
    moment, and time the next run's start; release that run and wait for its end."""
    _kind, _at, pid, _attempt = bench.pop(reply_key, "started")
    time.sleep(rng.uniform(0.3, 0.3 + bench.heartbeat))  # any phase of the beats
    killed = time.monotonic()
    kill(pid)
    _kind, at, again_pid, _attempt = bench.pop(reply_key, "started")
    if again_pid == pid:
        raise RuntimeError(f"the killed process {pid} ran the job again")
    bench.redis.set(release_key, "1", ex=120)
    bench.pop(reply_key, "done")
    return float(at) - killed


def sigkill(pid: int) -> None:
    os.kill(pid, 9)


def kill_child(child: harness.Child) -> Callable[[int], None]:
    """SIGKILL instance A, the process the job said it runs in."""

    def kill(pid: int) -> None:
        if pid != child.proc.pid:
            raise RuntimeError(f"the job runs in process {pid}, not in instance A")
        child.proc.kill()

    return kill


def thread_deaths(bench: Bench, count: int, rng: random.Random) -> Deaths:
    prefix = f"ba{bench.tag}threads:"
    app = _apps.again_app(bench.url, prefix, "threads", "unused", bench.heartbeat)
    ext = harness.extension(app)
    app.test_client().get("/asyncstate/jobs")  # B serves: its writer looks from now on
    found = Deaths("threads", heartbeat=bench.heartbeat)
    try:
        for _ in range(count):
            child = harness.Child("instance A", instance_a, bench.url, prefix, bench.heartbeat)
            try:
                reply_key, release_key = bench.key("reply"), bench.key("release")
                child.put("start", reply_key, release_key)
                child.get(expect="started")
                found.seconds.append(
                    one_death(bench, reply_key, release_key, rng, kill_child(child))
                )
            finally:
                child.stop(1)
    finally:
        ext.shutdown(2)
    return found


def worker_deaths(bench: Bench, row: str, count: int, rng: random.Random) -> Deaths:
    prefix, queue = f"ba{bench.tag}{row}:", f"ba{bench.tag}-{row}"
    procs = bench.workers(row, prefix, queue)
    found = Deaths(row, heartbeat=bench.heartbeat if row in ("rq", "celery") else None)
    client = None
    try:
        bench.wait_ready(row, procs, prefix, queue)
        if row in ("rq", "celery"):  # a web instance that starts the jobs (its writer looks too)
            executor = "celery" if row == "celery" else "rq"
            client = _apps.again_app(bench.url, prefix, executor, queue, bench.heartbeat)
            job = harness.registered_job(client, "bench_again_hold")

            def start(reply_key: str, release_key: str) -> None:
                with client.app_context():
                    job.start(reply_key, release_key)

        elif row == "rq-alone":
            rq_queue = Queue(queue, connection=bench.redis, serializer=JSONSerializer)

            def start(reply_key: str, release_key: str) -> None:
                rq_queue.enqueue(_alt_jobs.again_hold, reply_key, release_key, retry=Retry(max=1))

        else:
            _celery, tasks = _alt_jobs.make_bare_celery(bench.url, queue)

            def start(reply_key: str, release_key: str) -> None:
                tasks["again"].delay(reply_key, release_key)

        for _ in range(count):
            reply_key, release_key = bench.key("reply"), bench.key("release")
            start(reply_key, release_key)
            found.seconds.append(one_death(bench, reply_key, release_key, rng, sigkill))
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{bench.processes.logs(procs)}") from None
    finally:
        if client is not None:
            harness.extension(client).shutdown(2)
        bench.processes.stop(procs)
    return found


# -- part 2: the cost when a job does not run again ------------------------------------------------


@dataclass
class Column:
    name: str
    store: str  # "memory" or "redis"
    job: Any
    app: Any
    counter: Any = None  # the Redis app's round-trip counter class

    def starts(self, n: int) -> float:
        """Median µs of ``n`` ``start()`` calls, each timed alone and waited for, untimed."""
        with self.app.app_context():
            return harness.median(harness.each_timed(self.job.start, n, after=lambda h: h.wait(10)))

    def runs(self, n: int) -> float:
        """Median µs of ``n`` whole runs: ``start()`` to the final document."""
        with self.app.app_context():
            return harness.median(harness.each_timed(lambda: self.job.start().wait(10), n))

    def trips(self, n: int) -> float:
        """Redis round trips per job over ``n`` jobs started and waited for."""
        before = sum(self.counter.sent.values())
        with self.app.app_context():
            for _ in range(n):
                doc = self.job.start().wait(10)
                assert doc is not None and doc["status"] == "succeeded", doc
        return (sum(self.counter.sent.values()) - before) / n


def cost_columns(url: str) -> tuple[list[Column], list[Any]]:
    """The columns of part 2, and the extensions to shut down."""
    columns: list[Column] = []
    exts = []
    for store in ("memory", "redis"):
        for with_feature in (False, True):
            counter, options = None, {}
            if store == "redis":
                client, counter = harness.counting_client(url)
                options["redis_client"] = client
            feature = "again" if with_feature else "plain"
            app, ext = harness.make_app(
                f"bench-again-{store}-{feature}",
                key_prefix=f"bench:again-{store}-{feature}:",
                ASYNCSTATE_MAX_QUEUED=100_000,
                **options,
            )
            exts.append(ext)
            if not with_feature:

                @ext.job(name="bench_again_plain")
                def plain(job: harness.JobContext) -> None:
                    return None

                columns.append(Column("plain", store, plain, app, counter))
                continue

            @ext.job(name="bench_again_retries", retries=2)
            def retrying(job: harness.JobContext) -> None:
                return None

            @ext.job(name="bench_again_resumable", resumable=True)
            def resumable(job: harness.JobContext) -> None:
                return None

            columns.append(Column("retries", store, retrying, app, counter))
            columns.append(Column("resumable", store, resumable, app, counter))
    return columns, exts


def idle_trips(columns: list[Column], seconds: float) -> dict[str, float]:
    """Round trips per second of each Redis app's writer while no job runs."""
    apps = {c.name if c.name == "plain" else "again": c for c in columns if c.store == "redis"}
    before = {name: sum(c.counter.sent.values()) for name, c in apps.items()}
    time.sleep(seconds)  # the measurement window: the writers run, nothing else does
    return {
        name: (sum(c.counter.sent.values()) - before[name]) / seconds for name, c in apps.items()
    }


def costs(url: str, calls: int, repeats: int, idle: float) -> dict[str, Any]:
    columns, exts = cost_columns(url)
    try:
        for column in columns:  # the writers run from the first start
            with column.app.app_context():
                column.job.start().wait(10)
        key = lambda c: f"{c.store}/{c.name}"
        starts = harness.in_turns({key(c): c.starts for c in columns}, calls, repeats, warm=50)
        runs = harness.in_turns({key(c): c.runs for c in columns}, calls, repeats, warm=50)
        redis_columns = [c for c in columns if c.store == "redis"]
        trips = harness.in_turns({key(c): c.trips for c in redis_columns}, calls, repeats, warm=10)
        idle_rates = idle_trips(columns, idle)
    finally:
        for ext in exts:
            ext.shutdown(2)
    return {"start_us": starts, "run_us": runs, "trips": trips, "idle": idle_rates}


# -- the report ----------------------------------------------------------------------------------


def death_table(report: harness.Report, found: dict[str, Deaths], heartbeat: float) -> None:
    rows = []
    for name in ROWS:
        if name not in found:
            continue
        d = found[name]
        beats = [f"{d.median() / heartbeat:.2f}", f"{d.worst() / heartbeat:.2f}"]
        other = found.get(AGAINST.get(name, ""))
        ratio = f"{d.median() / other.median():.2f}x" if other and other.seconds else "-"
        rows.append(
            [
                LABELS[name],
                str(len(d.seconds)),
                f"{d.median():.2f}",
                f"{d.worst():.2f}",
                *(beats if d.heartbeat else ["-", "-"]),
                ratio,
            ]
        )
    report.table(
        [
            "death -> next run",
            "deaths",
            "median s",
            "max s",
            "median heartbeats",
            "max heartbeats",
            "median / alternative",
        ],
        rows,
    )


def cost_tables(report: harness.Report, found: dict[str, Any]) -> None:
    starts, runs, trips = found["start_us"], found["run_us"], found["trips"]
    rows = []
    for store in ("memory", "redis"):
        for name, label in COLUMNS.items():
            key = f"{store}/{name}"
            base = f"{store}/plain"
            row = [f"{store}: {label}"]
            row += [f"{starts[key]:.0f}", f"{starts[key] / starts[base]:.2f}x"]
            row += [f"{runs[key]:.0f}", f"{runs[key] / runs[base]:.2f}x"]
            row += [f"{trips[key]:.2f}" if key in trips else "-"]
            rows.append(row)
    report.table(
        ["job", "start() µs", "/ plain", "run µs", "/ plain", "Redis round trips per job"],
        rows,
    )
    idle = found["idle"]
    report.out(
        f"An idle app's writer on Redis: {idle['plain']:.1f} round trips/s without the feature,"
        f" {idle['again']:.1f} with it (a look for due jobs every second, one for dead"
        " instances' resumable jobs once a beat: a cost per process, not per job)."
    )


def main(argv: list[str] | None = None) -> None:
    found_parser = harness.parser(__doc__, FULL, QUICK, HELP)
    found_parser.add_argument("--seed", type=int, default=1, help="seed of the random waits")
    ranges = {"deaths": (1, 100), "heartbeat": (0.2, 10.0), "calls": (10, 10_000)}
    args = harness.parse(found_parser, argv, {**ranges, "repeats": (1, 20)}, {"rows": ROWS})
    report = harness.Report(__file__, args)
    rng = random.Random(args.seed)
    logging.getLogger("flask_asyncstate").addFilter(_apps.QuietCookieWarning())
    with (
        harness.redis_server(args.redis_url) as server,
        tempfile.TemporaryDirectory(prefix="bench-again-") as log_dir,
    ):
        processes = harness.Processes(log_dir)
        bench = Bench(server.url, args.heartbeat, processes)
        deaths: dict[str, Deaths] = {}
        try:
            for row in args.rows:
                if row == "threads":
                    deaths[row] = thread_deaths(bench, args.deaths, rng)
                else:
                    deaths[row] = worker_deaths(bench, row, args.deaths, rng)
            found = costs(server.url, args.calls, args.repeats, 2.0 if args.quick else 5.0)
        finally:
            processes.stop()
        env = harness.environment(server.url)
    hb = args.heartbeat
    report.out(
        env,
        f"1. From the SIGKILL of the process running a job to the start of its next run"
        f" (`time.monotonic()` of both processes); ours with a heartbeat of {hb:g} s (the"
        f" default is {harness.HEARTBEAT:g} s), a random 0.3 s to one heartbeat after the"
        " job started. The alternatives start the job over; ours go on from the cursor.",
    )
    death_table(report, deaths, hb)
    report.out(
        f"2. A job returning at once, {args.repeats} x {args.calls:,} calls per column in"
        " turns, medians: `start()` (each timed alone, waited for untimed), a whole run"
        " (`start()` to the final document), Redis round trips per job (client side).",
    )
    cost_tables(report, found)
    ours = [d for name, d in deaths.items() if d.heartbeat]
    for d in ours:
        shown = f"{d.worst() / hb:.2f} heartbeats"
        report.check(TARGET_DEATH, d.worst() / hb, LABELS[d.row], shown)
    starts, runs, trips = found["start_us"], found["run_us"], found["trips"]
    cheap = True
    for store in ("memory", "redis"):
        for target, figures in ((TARGET_START, starts), (TARGET_RUN, runs)):
            ratio = figures[f"{store}/retries"] / figures[f"{store}/plain"]
            cheap = report.check(target, ratio, store) and cheap
    extra = trips["redis/retries"] - trips["redis/plain"]
    report.check(TARGET_TRIPS, extra, "redis", f"{extra:+.2f}")
    report.summary(
        "death of the process running a resumable job -> its next run, median / max"
        f" (heartbeat {hb:g} s)",
        "; ".join(f"{d.row} {d.median() / hb:.2f} / {d.worst() / hb:.2f} heartbeats" for d in ours),
        "; ".join(
            f"{name} {deaths[name].median():.2f} s"
            for name in ("rq-alone", "celery-alone")
            if name in deaths
        ),
        "every death <= 3 heartbeats",
        all(d.worst() / hb <= 3 for d in ours),
    )
    report.summary(
        "`start()`; a run: `retries=2` job / plain job (memory, Redis)",
        f"{starts['memory/retries'] / starts['memory/plain']:.2f}x,"
        f" {starts['redis/retries'] / starts['redis/plain']:.2f}x;"
        f" {runs['memory/retries'] / runs['memory/plain']:.2f}x,"
        f" {runs['redis/retries'] / runs['redis/plain']:.2f}x",
        f"plain: start() {starts['memory/plain']:.0f} / {starts['redis/plain']:.0f} µs,"
        f" run {runs['memory/plain']:.0f} / {runs['redis/plain']:.0f} µs",
        "<= 1.1x",
        cheap,
    )
    report.panel(
        harness.panel(
            "again.py: SIGKILL -> the job's next run, median s",
            "s",
            [
                (LABELS[name].split(":")[0], deaths[name].median())
                for name in ROWS
                if name in deaths
            ],
            target=3 * hb,
            target_label=f"3 heartbeats of {hb:g} s",
        )
    )
    report.figures.update(
        deaths={name: d.seconds for name, d in deaths.items()},
        heartbeat=hb,
        costs=found,
    )
    report.finish()


if __name__ == "__main__":
    main()
