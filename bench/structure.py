"""A parent job's children counts: what reading a parent costs as its children grow, and what each child's state change costs.

The parents are real tracked jobs of one app on Redis, with ``ASYNCSTATE_EXECUTOR
= "inline"`` (a child runs inside ``job.spawn()``, which returns once the child's
final document is stored). Each parent runs in a thread of this process, spawns
one real child with ``job.spawn`` (from then on its document says it has
children), then runs what the bench hands it, inside the job, until told to end.

Its other children are counted as the lifecycle counts a child, through the same
calls (``harness.job_records``), without a document or a run of their own:
``adopt_child(parent, id)`` (a child's ``start()``), ``count_child(parent,
{"running": 1})`` (its run begins), ``count_child(parent, {status: 1, "running":
-1}, ended=id)`` (its end, ``Lifecycle.ended``; a child cancelled while queued
was never counted running: ``"running": 0``). A poll reads none of that but the
counters, so spawning thousands of real children would only make the bench slow.
The mix is that of a batch under way, the oldest children ended: 60% succeeded
(the real child among them), 5% failed, 3% cancelled while queued, 1% lost, 1%
running, 30% queued.

1. Reading a parent with ``--sizes`` children (10, 1,000, 10,000). µs per poll:
   the median of every poll timed alone (GC paused), ``--repeats`` rounds of
   ``--polls`` polls, the reads and sizes taking turns poll by poll:

   - ``records.status(parent_id)``: the document as the progress route reads it,
     in-process (the parent's entry, then its counters: one ``HGETALL``);
   - ``GET /asyncstate/progress/<token>``: the route, through Flask's test client
     with the owner's session cookie (Flask's request handling included);
   - Celery, on the same Redis in the same run: N results stored with
     ``backend.store_result(task_id, result, "SUCCESS")`` (the Redis result
     backend, no worker), their ``GroupResult`` saved; a poll is
     ``GroupResult.restore(group_id).completed_count()``, what a group's progress
     endpoint does in each request: one ``GET`` for the group and one per task
     (``successful()`` of each; ``result_cache_max`` is -1, Celery's default, so
     nothing is kept between polls), and on the Redis backend a ``SUBSCRIBE`` and
     an ``UNSUBSCRIBE`` of each task's channel (a restored group's results wait
     for their tasks until they are collected, at the end of the poll). A round
     of Celery polls reads at most ``--polls`` x 10 results (one poll at 10,000
     children).

   Also the Redis commands per poll (``INFO commandstats`` deltas over a batch of
   up to 20 polls of each, Lua-inner commands included).

2. Redis commands per child state change. On each size's parent, ``--steps``
   children go through the three changes a child's counts see (spawned: queued;
   started: running; ended: succeeded), the sizes taking turns step by step. Each
   change is timed alone (µs, GC paused) and counted alone: round trips sent by
   the thread making it (a counting ``redis.Connection`` on the app's client), and
   server commands (``INFO commandstats`` before and after it; Lua-inner commands
   included). Figures are medians over the steps: a heartbeat or a listener sweep
   landing inside one change moves no median. Three ways:

   - in order, as a queue drains: a new child is spawned, the oldest queued child
     starts, the oldest running child ends;
   - newest first: the new child starts and ends while its older siblings still
     wait (a child that fails at once; a short one among long ones);
   - real children: ``job.spawn(child)`` of a job that returns at once, inside the
     parent (the inline executor runs the child in the call): the three changes
     and the child's own documents and indexes, counted together, per child.

   The parent of the largest size goes past the 10,000 children the library
   allows (N + 3 x steps): ``MAX_CHILDREN`` is raised for the run
   (``harness.children_limit``). At the end each parent's counts, read through the
   records and through the route, must be exactly what the bench counted.

Targets: reading a parent flat: at 10,000 children <= 1.2x at 10, for
``records.status`` and for the route; Redis commands per child state change
constant: at 10,000 children the same as at 10 (<= 1.0x), each change of each way.

    python bench/structure.py           # 10 / 1,000 / 10,000 children, 5 x 200 polls, 200 steps (~1 min)
    python bench/structure.py --quick   # 10 / 100 / 1,000 children, 3 x 50 polls, 50 steps (~10 s)
"""

from __future__ import annotations

import gc
import logging
import queue
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import harness
import redis
from _apps import QuietCookieWarning

try:
    from celery import Celery
    from celery.result import AsyncResult, GroupResult
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    raise SystemExit(f"bench/structure.py needs celery: pip install -e '.[bench]' ({exc})")

TARGET_FLAT = harness.Target("reading a parent, largest size / 10 children", "<=", 1.2, "x")
TARGET_SAME = harness.Target(
    "Redis commands per child state change, largest size / 10 children", "<=", 1.0, "x"
)
FULL = {"sizes": "10,1000,10000", "repeats": 5, "polls": 200, "steps": 200}
QUICK = {"sizes": "10,100,1000", "repeats": 3, "polls": 50, "steps": 50}
HELP = {
    "sizes": "children per parent, comma-separated (10..50,000; the first is the reference)",
    "repeats": "rounds of polls per read figure (reads and sizes take turns)",
    "polls": "polls per round (Celery: at most polls x 10 results read per round)",
    "steps": "children per way through the three changes, per size",
}
#: The children of a parent, as a batch under way: fate -> share (the oldest ended).
MIX = (
    ("succeeded", 0.60),
    ("failed", 0.05),
    ("cancelled", 0.03),
    ("lost", 0.01),
    ("running", 0.01),
    ("queued", 0.30),
)
OWNER = "bench-structure-owner"
READS = {
    "status": "`records.status`",
    "route": "`GET /progress/<token>`",
    "celery": "Celery `restore().completed_count()`",
}
WAYS = {
    "in order": "in order (the oldest queued starts, the oldest running ends)",
    "newest first": "newest first (the new child starts and ends, older ones wait)",
}
CHANGES = ("spawn", "start", "end")
REAL = "real children: `job.spawn(child)`, inline, spawn to final (3 changes)"
#: How long the bench waits for a parent's answer (s).
WAIT = 300.0
#: Each parent's mailboxes (its job's only argument, JSON, is its name here).
MAILBOXES: dict[str, tuple[queue.Queue[Any], queue.Queue[Any]]] = {}


def shares(n: int) -> dict[str, int]:
    """``n`` children split by :data:`MIX` (largest remainders), at least one succeeded."""
    exact = {fate: share * n for fate, share in MIX}
    counts = {fate: int(value) for fate, value in exact.items()}
    order = sorted(exact, key=lambda fate: exact[fate] - counts[fate], reverse=True)
    for fate in order[: n - sum(counts.values())]:
        counts[fate] += 1
    if counts["succeeded"] == 0:
        counts["succeeded"], counts["queued"] = 1, counts["queued"] - 1
    return counts


# -- the app and its parents ---------------------------------------------------------------


class Parent:
    """A parent job running in a thread of its own (the inline executor: ``start()`` returns
    when the job ends), running the calls handed to it inside the job."""

    def __init__(self, app: Any, job: Any, name: str) -> None:
        self.app, self.job, self.name = app, job, name
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.outbox: queue.Queue[Any] = queue.Queue()
        MAILBOXES[name] = (self.inbox, self.outbox)
        self.thread = threading.Thread(target=self._start, daemon=True, name=f"bench-{name}")
        self.thread.start()
        self.id: str = self._answer()

    def _start(self) -> None:
        import flask

        try:
            with self.app.test_request_context("/"):
                flask.session[harness.OWNER_KEY] = OWNER
                self.job.start(self.name)
        except BaseException as exc:  # noqa: BLE001 - handed to the bench's thread
            self.outbox.put(("error", exc))

    def _answer(self) -> Any:
        try:
            kind, value = self.outbox.get(timeout=WAIT)
        except queue.Empty:
            raise RuntimeError(f"{self.name} said nothing for {WAIT:g} s") from None
        if kind == "error":
            raise RuntimeError(f"{self.name} failed: {value!r}") from value
        return value

    def run(self, call: Callable[[Any], Any]) -> Any:
        """``call(job)`` inside the parent job; its result."""
        self.inbox.put(call)
        return self._answer()

    def stop(self) -> None:
        self.inbox.put(None)
        self.thread.join(30)


def make_app(url: str) -> tuple[Any, harness.AsyncState, type[harness.CountingConnection]]:
    """The app (inline executor, its Redis client counting round trips per thread), its
    parent and child jobs, and the counter's class."""
    logging.getLogger("flask_asyncstate").addFilter(QuietCookieWarning())  # on purpose
    client, counter = harness.counting_client(url, lambda _c: threading.current_thread().name)
    app, ext = harness.make_app(
        "bench-structure",
        redis_client=client,
        ASYNCSTATE_EXECUTOR="inline",
        ASYNCSTATE_MAX_JOBS_PER_OWNER=100,
    )

    @ext.job(name="bench_structure_child")
    def child(job: harness.JobContext) -> None:
        return None

    @ext.job(name="bench_structure_parent")
    def parent(job: harness.JobContext, name: str) -> None:
        """Spawns one real child, then runs what the bench hands it until told to end."""
        inbox, outbox = MAILBOXES[name]
        job.spawn(child)  # the document says "children" from here on
        outbox.put(("ready", job.id))
        for _ in range(1_000_000):  # bounded: a call per batch of the bench
            call = inbox.get(timeout=WAIT)
            if call is None:
                return
            try:
                outbox.put(("done", call(job)))
            except Exception as exc:  # noqa: BLE001 - handed to the bench's thread
                outbox.put(("error", exc))
                return

    return app, ext, counter


# -- a parent's children, counted as the lifecycle counts them ----------------------------


@dataclass
class Family:
    """One parent, its unfinished children (oldest first), and the counts it must show."""

    size: int
    parent: Parent
    token: str
    queued: deque[str] = field(default_factory=deque)
    running: deque[str] = field(default_factory=deque)
    expected: dict[str, int] = field(default_factory=dict)


def build(records: Any, parent: Parent, token: str, size: int) -> Family:
    """Count ``size - 1`` more children (the real one is there) in the :data:`MIX`, oldest
    ended first, then the running ones, then the queued ones."""
    counts = shares(size)
    family = Family(size, parent, token, expected={name: 0 for name in harness.CHILD_COUNTS})
    family.expected.update(counts, total=size)
    fates = [fate for fate, _share in MIX for _ in range(counts[fate])]
    fates.remove("succeeded")  # the real child
    pid = parent.id
    for fate in fates:
        child = secrets.token_hex(16)
        if not records.adopt_child(pid, child):
            raise RuntimeError(f"parent {pid} refused child {len(fates)}")
        if fate == "queued":
            family.queued.append(child)
        elif fate == "cancelled":  # while queued: never counted running
            records.count_child(pid, {"cancelled": 1, "running": 0}, ended=child)
        else:
            records.count_child(pid, {"running": 1})
            if fate == "running":
                family.running.append(child)
            else:
                records.count_child(pid, {fate: 1, "running": -1}, ended=child)
    return family


# -- 1. reading a parent ------------------------------------------------------------------


def celery_app(url: str) -> Celery:
    app = Celery("bench_structure", broker=url, backend=url, set_as_current=False)
    app.conf.update(result_serializer="json", accept_content=["json"])
    if app.conf.result_cache_max != -1:
        raise RuntimeError(f"result_cache_max is {app.conf.result_cache_max}, not Celery's -1")
    return app


def celery_group(app: Celery, size: int) -> str:
    """``size`` successful results and their saved group; the group's id."""
    backend = app.backend
    ids = [str(uuid.uuid4()) for _ in range(size)]
    for i, task_id in enumerate(ids):
        backend.store_result(task_id, {"file": i}, "SUCCESS")
    group_id = str(uuid.uuid4())
    results = [AsyncResult(t, app=app) for t in ids]
    GroupResult(group_id, results, app=app).save()
    for result in results:  # a GroupResult waits for its results: this one is only saved
        backend.remove_pending_result(result)
    return group_id


def celery_poll(app: Celery, group_id: str) -> Callable[[], int]:
    return lambda: GroupResult.restore(group_id, app=app).completed_count()


@dataclass
class Read:
    """µs per poll (the median of every poll timed alone) and Redis commands per poll."""

    us: float
    commands: float


#: Polls of each read counted (INFO commandstats) in a batch of their own, at most.
COUNTED = 20


def read_costs(
    reads: dict[tuple[str, int], Callable[[], object]],
    polls: dict[tuple[str, int], int],
    repeats: int,
    stats: redis.Redis,
) -> dict[tuple[str, int], Read]:
    """Each (read, size): its polls timed one by one, the reads and sizes taking turns poll
    by poll (a burst of load on a shared machine hits them all alike); its commands counted
    over a batch of its own."""
    commands: dict[tuple[str, int], float] = {}
    for key, call in reads.items():
        call()  # warm: connections, scripts, Flask's first request
        n = min(polls[key], COUNTED)
        before = harness.command_stats(stats)
        for _ in range(n):
            call()
        commands[key] = (
            sum(harness.commands_between(before, harness.command_stats(stats)).values()) / n
        )
    clock, us = time.perf_counter, {key: [] for key in reads}
    for _ in range(repeats):
        for i in range(max(polls.values())):
            for key, call in reads.items():
                if i < polls[key]:
                    with harness.gc_paused():
                        start = clock()
                        call()
                        us[key].append((clock() - start) * 1e6)
    return {key: Read(harness.median(us[key]), commands[key]) for key in reads}


# -- 2. commands per child state change ---------------------------------------------------


@dataclass
class Changes:
    """Each change of one way at one size: µs, round trips and server commands, per step."""

    us: list[float] = field(default_factory=list)
    trips: list[int] = field(default_factory=list)
    commands: list[int] = field(default_factory=list)

    def add(self, us: float, trips: int, commands: int) -> None:
        self.us.append(us)
        self.trips.append(trips)
        self.commands.append(commands)

    def medians(self) -> tuple[float, float, float]:
        return (
            harness.median(self.us),
            harness.median(self.trips),
            harness.median(self.commands),
        )


class Meter:
    """Times and counts one call: its µs, the round trips of this thread, the server's commands."""

    def __init__(self, counter: type[harness.CountingConnection], stats: redis.Redis) -> None:
        self.counter, self.stats = counter, stats

    def __call__(self, call: Callable[[], object], into: Changes) -> None:
        me = threading.current_thread().name
        before = harness.command_stats(self.stats)
        with self.counter.lock:
            sent = self.counter.sent[me]
        start = time.perf_counter()
        call()
        took = time.perf_counter() - start
        with self.counter.lock:
            trips = self.counter.sent[me] - sent
        delta = harness.commands_between(before, harness.command_stats(self.stats))
        into.add(took * 1e6, trips, sum(delta.values()))


def driven_step(
    records: Any, family: Family, way: str, meter: Meter, found: dict[str, Changes]
) -> None:
    """One child through spawn, start and end, counted as the lifecycle counts them."""
    pid, new = family.parent.id, secrets.token_hex(16)

    def spawn() -> None:
        if not records.adopt_child(pid, new):
            raise RuntimeError(f"parent {pid} refused a child")

    meter(spawn, found["spawn"])
    family.queued.append(new)
    started = family.queued.popleft() if way == "in order" else family.queued.pop()
    meter(lambda: records.count_child(pid, {"running": 1}), found["start"])
    family.running.append(started)
    ended = family.running.popleft() if way == "in order" else family.running.pop()
    meter(
        lambda: records.count_child(pid, {"succeeded": 1, "running": -1}, ended=ended),
        found["end"],
    )
    family.expected["total"] += 1
    family.expected["succeeded"] += 1


def real_steps(child: Any, n: int, meter: Meter) -> Callable[[Any], Changes]:
    """A call for a parent: ``n`` real children spawned, each measured spawn to final."""

    def call(job: Any) -> Changes:
        found = Changes()
        for _ in range(n):
            meter(lambda: job.spawn(child), found)
        return found

    return call


# -- the run --------------------------------------------------------------------------------


@dataclass
class Bench:
    """What the run works with: the app (in an app context), its parents, Celery, counters."""

    app: Any
    ext: harness.AsyncState
    records: Any
    celery: Celery
    stats: redis.Redis
    meter: Meter
    families: list[Family] = field(default_factory=list)
    groups: dict[int, str] = field(default_factory=dict)
    parents: list[Parent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = self.app.test_client()
        with self.client.session_transaction() as session:
            session[harness.OWNER_KEY] = OWNER

    def populate(self, sizes: list[int]) -> None:
        """A parent per size with its children, and Celery's results of as many tasks."""
        job = harness.registered_job(self.app, "bench_structure_parent")
        for size in sizes:
            parent = Parent(self.app, job, f"parent-{size}")
            self.parents.append(parent)
            token = harness.sign(self.ext, parent.id)
            self.families.append(build(self.records, parent, token, size))
        self.groups = {size: celery_group(self.celery, size) for size in sizes}

    def route(self, token: str) -> Callable[[], object]:
        def get() -> object:
            answer = self.client.get(f"/asyncstate/progress/{token}")
            if answer.status_code != 200:
                raise RuntimeError(f"progress answered {answer.status_code}")
            return answer.get_json()

        return get

    def reads(self, args: Any) -> dict[tuple[str, int], Read]:
        """Part 1: each read at each size."""
        reads: dict[tuple[str, int], Callable[[], object]] = {}
        polls: dict[tuple[str, int], int] = {}
        for family in self.families:
            n = family.size
            reads["status", n] = lambda pid=family.parent.id: self.records.status(pid)
            reads["route", n] = self.route(family.token)
            reads["celery", n] = celery_poll(self.celery, self.groups[n])
            polls["status", n] = polls["route", n] = args.polls
            polls["celery", n] = celery_polls(args.polls, n)
            got = reads["celery", n]()
            if got != n:
                raise RuntimeError(f"Celery counted {got} of {n}")
        return read_costs(reads, polls, args.repeats, self.stats)

    def changes(
        self, steps: int
    ) -> tuple[dict[tuple[str, int], dict[str, Changes]], dict[int, Changes]]:
        """Part 2: each way through the three changes at each size, the sizes taking turns."""
        driven = {
            (way, f.size): {c: Changes() for c in CHANGES} for way in WAYS for f in self.families
        }
        with harness.gc_paused():
            for way in WAYS:
                for _ in range(steps):
                    for family in self.families:
                        driven_step(self.records, family, way, self.meter, driven[way, family.size])
        real = {f.size: Changes() for f in self.families}
        child = harness.registered_job(self.app, "bench_structure_child")
        with harness.gc_paused():
            for done in range(0, steps, 10):  # ten at a time, the sizes taking turns
                n = min(10, steps - done)
                for family in self.families:
                    part = family.parent.run(real_steps(child, n, self.meter))
                    for us, trips, commands in zip(part.us, part.trips, part.commands):
                        real[family.size].add(us, trips, commands)
                    family.expected["total"] += n
                    family.expected["succeeded"] += n
        return driven, real

    def verify(self) -> None:
        """The timed calls did real work: every parent shows what the bench counted."""
        for family in self.families:
            counts = self.records.child_counts(family.parent.id)
            shown = self.route(family.token)()
            for what, got in (("records", counts), ("the route", shown.get("children"))):
                if got != family.expected:
                    raise RuntimeError(
                        f"{family.size} children: {what} shows {got}, not {family.expected}"
                    )


def celery_polls(polls: int, size: int) -> int:
    """Celery polls per round: at most ``polls`` x 10 results read."""
    return max(1, min(polls, polls * 10 // size))


def main(argv: list[str] | None = None) -> None:
    found = harness.parser(__doc__, FULL, QUICK, HELP)
    args = harness.parse(
        found, argv, {"repeats": (1, 50), "polls": (1, 10_000), "steps": (2, 5_000)}
    )
    sizes = harness.sizes(args.sizes, 10, 50_000, "sizes")
    report = harness.Report(__file__, args)
    limit = sizes[-1] + 3 * args.steps + 1  # room for the children of part 2
    with harness.redis_server(args.redis_url) as server, harness.children_limit(limit):
        stats = redis.Redis.from_url(server.url)
        app, ext, counter = make_app(server.url)
        celery = celery_app(server.url)
        bench: Bench | None = None
        try:
            with app.app_context():
                records = harness.job_records(ext)
                bench = Bench(app, ext, records, celery, stats, Meter(counter, stats))
                built = time.monotonic()
                bench.populate(sizes)
                built = time.monotonic() - built
                read = bench.reads(args)
                driven, real = bench.changes(args.steps)
                bench.verify()
                env = harness.environment(stats)
        finally:
            for parent in bench.parents if bench is not None else ():
                parent.stop()
            ext.shutdown(2)
            gc.collect()  # Celery's results unsubscribe when collected: while Redis is up
            celery.close()
            stats.close()
    show(report, args, sizes, env, built, read, driven, real)


def show(
    report: harness.Report,
    args: Any,
    sizes: list[int],
    env: str,
    built: float,
    read: dict[tuple[str, int], Read],
    driven: dict[tuple[str, int], dict[str, Changes]],
    real: dict[int, Changes],
) -> None:
    small, big = sizes[0], sizes[-1]
    report.out(
        env,
        f"Part 1: {len(sizes)} parents ({', '.join(f'{n:,}' for n in sizes)} children, "
        f"counted as the lifecycle counts them; Celery's results stored) in {built:.1f} s. "
        f"µs per poll: the median of {args.repeats} rounds of {args.polls} polls (Celery: "
        + ", ".join(f"{celery_polls(args.polls, n)}" for n in sizes)
        + "), each timed alone, the reads and sizes taking turns poll by poll; in brackets "
        f"the ratio to the same read at {small:,} children.",
    )

    def us(read_name: str, n: int) -> str:
        value = read[read_name, n].us
        return f"{harness.fmt(value)} ({value / read[read_name, small].us:.2f}x)"

    report.table(
        ["children", *(f"{label} µs" for label in READS.values()), "Celery / status"],
        [
            [
                f"{n:,}",
                *(us(name, n) for name in READS),
                f"{read['celery', n].us / read['status', n].us:,.1f}x",
            ]
            for n in sizes
        ],
    )
    report.out("Redis commands per poll (INFO commandstats, Lua-inner commands included).")
    report.table(
        ["children", *READS.values()],
        [[f"{n:,}", *(f"{read[name, n].commands:,.1f}" for name in READS)] for n in sizes],
    )
    flat = {name: read[name, big].us / read[name, small].us for name in ("status", "route")}
    met_flat = [
        report.check(TARGET_FLAT, flat[name], f"{READS[name]}, {big:,} / {small:,} children")
        for name in flat
    ]

    rows: dict[str, list[float]] = {}  # a target's row -> commands at each size
    table_rows: list[tuple[str, str, dict[int, tuple[float, float, float]]]] = []
    for way, label in WAYS.items():
        for change in CHANGES:
            table_rows.append((label, change, {n: driven[way, n][change].medians() for n in sizes}))
    table_rows.append((REAL, "spawn to final", {n: real[n].medians() for n in sizes}))
    report.out(
        f"Part 2: {args.steps} children per way and size through the three changes, the "
        "sizes taking turns; medians per change of server commands (INFO commandstats, "
        "Lua-inner included) and, in brackets, round trips sent (the calling thread's, "
        "client side)."
    )
    report.table(
        ["way", "change", *(f"{n:,} children" for n in sizes), f"{big:,} / {small:,}"],
        [
            [
                way,
                change,
                *(f"{at[n][2]:,.0f} ({at[n][1]:,.0f})" for n in sizes),
                f"{at[big][2] / at[small][2]:.2f}x",
            ]
            for way, change, at in table_rows
        ],
        right=2,
    )
    report.out("The same changes, µs each (median; each change timed alone, GC paused).")
    report.table(
        ["way", "change", *(f"{n:,} children" for n in sizes), f"{big:,} / {small:,}"],
        [
            [
                way,
                change,
                *(harness.fmt(at[n][0]) for n in sizes),
                f"{at[big][0] / at[small][0]:.2f}x",
            ]
            for way, change, at in table_rows
        ],
        right=2,
    )
    met_same = []
    for way, change, at in table_rows:
        ratio = at[big][2] / at[small][2]
        shown = f"{at[small][2]:,.0f} -> {at[big][2]:,.0f} ({ratio:.2f}x)"
        where = f"{way.split(' (')[0].split(':')[0]}, {change}"
        met_same.append(report.check(TARGET_SAME, ratio, where, shown))
        rows[where] = [at[n][2] for n in sizes]

    sized = " / ".join(f"{n:,}" for n in sizes)
    report.summary(
        f"reading a parent with {sized} children: `records.status`; progress route",
        " / ".join(f"{read['status', n].us:,.0f}" for n in sizes)
        + " µs; "
        + " / ".join(f"{read['route', n].us:,.0f}" for n in sizes)
        + f" µs ({flat['status']:.2f}x / {flat['route']:.2f}x)",
        "Celery `GroupResult.restore().completed_count()` "
        + " / ".join(f"{read['celery', n].us / 1000:,.1f}" for n in sizes)
        + f" ms ({read['celery', big].commands:,.0f} commands a poll at {big:,})",
        f"flat: {big:,} / {small:,} <= {TARGET_FLAT.limit:g}x",
        all(met_flat),
    )
    report.summary(
        f"Redis commands per child state change (spawn / start / end) at {sized} children",
        "; ".join(
            f"{way.split(' (')[0]}: "
            + ", ".join(
                " / ".join(f"{driven[way, n][c].medians()[2]:,.0f}" for c in CHANGES) for n in sizes
            )
            for way in WAYS
        )
        + "; a real child, spawn to final: "
        + " / ".join(f"{real[n].medians()[2]:,.0f}" for n in sizes),
        "",
        "the same at every size",
        all(met_same),
    )
    report.figures.update(
        {
            "read": {f"{name} {n}": vars(b) for (name, n), b in read.items()},
            "changes": {
                f"{way} {change} {n}": dict(zip(("us", "trips", "commands"), at[n]))
                for way, change, at in table_rows
                for n in sizes
            },
        }
    )
    report.panel(
        harness.loglog_panel(
            "structure.py: reading a parent vs its children (µs per poll)",
            "children",
            "µs",
            {label: [(n, read[name, n].us) for n in sizes] for name, label in READS.items()},
        ),
        harness.loglog_panel(
            "structure.py: Redis commands per child state change vs the parent's children",
            "children",
            "commands",
            {where: list(zip(sizes, values)) for where, values in rows.items()},
        ),
    )
    report.finish()


if __name__ == "__main__":
    main()
