"""A single redis-server beside a 3-primary Redis Cluster, one run: cross-process cancel latency, /progress throughput.

The job store runs on a Redis Cluster when the extension is given a
``RedisCluster`` client (``AsyncState(app, redis=RedisCluster(...))``). This
script measures the same things on both topologies in one run:

- the single server: ``--redis-url`` (``run.py`` passes the one it started), or
  a throwaway one of its own;
- the cluster: 3 primaries with a replica each (``tests/redis_topologies.py``'s
  ``RedisClusterServers``: six ``redis-server`` processes on free loopback
  ports, never 6379, built with ``redis-cli --cluster create``), always
  started here and stopped at the end.

1. Cross-process cancel latency. Instance A is another OS process
   (``multiprocessing``, spawn) with its own app on the topology (a
   ``redis.Redis`` from the server's URL, or a ``RedisCluster`` on the nodes);
   it runs ``--cancels`` jobs one after another (plus one unmeasured warm-up),
   each of which says "ready" with its token once A's cancel listener is
   subscribed and then blocks in ``job.cancelled.wait()``. This process, with
   its own app on the same topology, waits a random 0-2 ms, reads
   ``time.monotonic()`` and calls ``asyncstate.cancel(token)``; A's job reads
   ``time.monotonic()`` the moment its Event fires (set by A's pub/sub
   listener) and sends it back. ``CLOCK_MONOTONIC`` is one system-wide clock on
   Linux, so the two readings compare. On the cluster the cancel is a script on
   the primary that holds the job's key and a ``PUBLISH`` that the cluster bus
   carries to the node A's listener is subscribed on. Target: p99 <= 10 ms on
   both.
2. ``GET /asyncstate/progress/<token>`` throughput under gunicorn, as
   ``throughput.py`` measures it (its server class, load runs and settings):
   ``bench/_topology_app.py`` under ``gunicorn -w 2 -k gthread --threads 8
   --reuse-port``, once with the jobs on the single server and once on the
   cluster, both servers up at once; sessions on the single server in both
   (Flask-Session takes no cluster client). One job per app reports progress
   every 0.1 s for the whole run; ``wrk -t1`` with 16 keep-alive connections,
   ``--rounds`` runs of ``--duration`` s per topology, taking turns, after a
   1 s warm-up each; runs whose connections are lopsided across the workers
   are restarted, as in ``throughput.py``; every answer must be 200. The table
   gives the median requests/s, the cluster / single ratio, the Redis commands
   per request counted by the servers (``total_commands_processed``: the single
   server, and the cluster's primaries), and the Redis round trips of one poll
   counted on the client side: the same app in this process, ``--polls``
   requests through the Flask test client, every command or pipeline sent by
   the request's thread counted, sessions apart from the job store (with the
   median in-process time of a poll). No target is set for throughput.

Figures are medians and nearest-rank percentiles; nothing is asserted about
timings. Every process started here (instance A, gunicorn, the cluster, the
throwaway server) is stopped at the end, also on failure or SIGTERM, and every
wait is bounded. Needs ``redis-server`` and ``redis-cli``, ``wrk`` (else a
Python client stands in), and ``pip install -e '.[bench,session]' gunicorn``.

Run from the repository root::

    python bench/topologies.py              # 30 cancels each, 2 rounds x 8 s per topology (about 45 s)
    python bench/topologies.py --quick      # 10 cancels each, 1 round x 3 s (about 17 s)
    python bench/topologies.py --parts cancel --cancels 100
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import redis
import redis.connection
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
from _topology_app import SESSIONS_CLIENT_NAME, build_app, store_client
from cancel import next_message, stop_process
from redis_topologies import RedisClusterServers
from throughput import (
    WARMUP,
    Gunicorn,
    Run,
    choose_client,
    median_run,
    one_run,
    request,
    session_cookie,
)

from flask_asyncstate import JobContext

SPAWN = multiprocessing.get_context("spawn")
PARTS = ("cancel", "throughput")
#: A cancel not seen within this many seconds is a miss.
WAIT_LIMIT = 10.0
#: This process waits a random 0..JITTER s before each cancel.
JITTER = 0.002
#: Target stated in the caption (not asserted), on both topologies.
TARGET_P99_MS = 10.0
DEFAULTS = {"cancels": 30, "duration": 8.0, "rounds": 2, "polls": 200}
QUICK = {"cancels": 10, "duration": 3.0, "rounds": 1, "polls": 50}
XHR = {"X-Requested-With": "XMLHttpRequest"}

Nodes = list[tuple[str, int]]


@dataclass
class Topology:
    """Where the jobs live: the single server's URL, and the cluster's nodes (None: the server)."""

    name: str
    sessions_url: str
    nodes: Nodes | None
    #: Clients of the servers holding this topology's data: the single server, then primaries.
    counted: list[redis.Redis] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.nodes is None:
            return "single redis-server"
        return f"Redis Cluster, {len(self.counted) - 1} primaries (+ replicas)"


# -- 1. cross-process cancel latency --------------------------------------------------


def cancel_instance(sessions_url: str, nodes: Nodes | None, count: int, outbox: Any) -> None:
    """Instance A: ``count`` jobs one after another, each reporting when it saw its cancel."""
    app, ext = make_app("bench-topologies", redis_client=store_client(sessions_url, nodes))

    @ext.job(name="bench_topology_cancel")
    def wait_for_cancel(job: JobContext) -> None:
        runner = ext.app_state()
        runner.store.subscribed.wait(5)  # type: ignore[attr-defined]  # listener is up
        outbox.put(("ready", runner.signer.sign(job.id), job.id))
        seen = job.cancelled.wait(WAIT_LIMIT)
        outbox.put(("seen", time.monotonic(), seen))

    try:
        with app.app_context():
            for _ in range(count):
                handle = wait_for_cancel.start()
                doc = handle.wait(WAIT_LIMIT + 10)
                if doc is None or doc["status"] not in ("cancelled", "succeeded"):
                    raise RuntimeError(f"instance A's job ended {doc!r}")
    finally:
        ext.shutdown(2)


@dataclass
class CancelSample:
    latencies: list[float]  # ms
    misses: int = 0
    #: Per latency, on a cluster: the job's key lives on the primary the listeners subscribe on.
    same_node: list[bool] = field(default_factory=list)

    def where(self, same: bool) -> CancelSample:
        """The latencies of the cancels whose key was (or was not) on the listeners' primary."""
        kept = [ms for ms, here in zip(self.latencies, self.same_node) if here == same]
        return CancelSample(kept, 0, [same] * len(kept))


class Locator:
    """Where a cancel's ``PUBLISH`` goes from: the job key's primary, vs the listeners' one.

    The cancel is a script on the primary holding the job's key, and it publishes there;
    a cancel listener (redis-py's ``ClusterPubSub``) subscribes on the primary owning the
    channel name's slot. When the two differ the message crosses the cluster bus.
    A client-side slot lookup: no round trip.
    """

    def __init__(self, nodes: Nodes) -> None:
        from redis.cluster import ClusterNode, RedisCluster

        self.client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes])

    def same_node(self, key: str, channel: str) -> bool:
        node = self.client.get_node_from_key
        return bool(node(key).name == node(channel).name)

    def close(self) -> None:
        self.client.close()


def cancel_latencies(
    topology: Topology, count: int, rng: random.Random, locator: Locator | None = None
) -> CancelSample:
    inbox = SPAWN.Queue()
    proc = SPAWN.Process(  # one job more than measured: the first cancel is a warm-up
        target=cancel_instance,
        args=(topology.sessions_url, topology.nodes, count + 1, inbox),
        daemon=True,
    )
    proc.start()
    app, ext = make_app(
        "bench-topologies", redis_client=store_client(topology.sessions_url, topology.nodes)
    )
    sample = CancelSample([])
    try:
        with app.app_context():
            ext.cancel(ext.app_state().signer.sign("warm-up"))  # connections and scripts
            for i in range(count + 1):
                kind, token, job_id = next_message(inbox, "instance A", proc)
                if kind != "ready":
                    raise RuntimeError(f"instance A sent {kind!r}, not 'ready'")
                time.sleep(rng.uniform(0, JITTER))
                start = time.monotonic()
                if not ext.cancel(token):
                    raise RuntimeError("the cancel found no job")
                kind, seen_at, seen = next_message(inbox, "instance A", proc)
                if kind != "seen":
                    raise RuntimeError(f"instance A sent {kind!r}, not 'seen'")
                if i == 0:
                    continue
                if not seen:
                    sample.misses += 1
                    continue
                sample.latencies.append((seen_at - start) * 1000)
                if locator is not None:
                    runner = ext.app_state()
                    key = runner.records.job_key(job_id)
                    sample.same_node.append(locator.same_node(key, runner.store.channel))  # type: ignore[attr-defined]
    finally:
        ext.shutdown(2)
        stop_process(proc)
    return sample


# -- 2. /progress throughput under gunicorn ---------------------------------------------


class TopologyGunicorn(Gunicorn):
    """throughput.py's gunicorn (--reuse-port, its readiness wait) on bench/_topology_app.py."""

    def __init__(self, topology: Topology, workers: int, threads: int, log_dir: str) -> None:
        super().__init__(topology.sessions_url, workers, threads, log_dir)
        self.env.pop("REDIS_URL", None)
        self.env["BENCH_SESSIONS_URL"] = topology.sessions_url
        self.env["BENCH_CLUSTER_NODES"] = ",".join(f"{h}:{p}" for h, p in topology.nodes or [])

    def command(self) -> list[str]:
        return [*super().command()[:-1], "_topology_app:create_app()"]


class CommandCounter:
    """``info("stats")`` over several servers, for throughput.one_run's command count.

    ``total_commands_processed`` summed over the servers, less ``n - 1`` per read (each
    read's INFO counts once on every server; one_run takes one off); each read's
    per-server figures are kept, so the kept run's split is the last two reads.
    """

    def __init__(self, clients: list[redis.Redis]) -> None:
        self.clients = clients
        self.reads: list[list[int]] = []

    def info(self, section: str) -> dict[str, int]:
        values = [int(c.info(section)["total_commands_processed"]) for c in self.clients]
        self.reads.append(values)
        extra = (len(self.clients) - 1) * len(self.reads)
        return {"total_commands_processed": sum(values) - extra}

    def last_split(self) -> list[int]:
        """Commands per server over the last run, less the INFO of its first read."""
        before, after = self.reads[-2], self.reads[-1]
        return [b - a - 1 for a, b in zip(before, after, strict=True)]


@dataclass
class Served:
    """One topology's gunicorn, its watched job and its runs."""

    topology: Topology
    server: TopologyGunicorn
    counter: CommandCounter
    paths: dict[str, str] = field(default_factory=dict)
    cookie: str = ""
    runs: list[Run] = field(default_factory=list)
    #: Per run: commands on the single server, and on the cluster's primaries.
    splits: list[tuple[int, int]] = field(default_factory=list)


def start_watched_job(served: Served, job_seconds: float) -> None:
    host = served.server.host
    status, body, headers = request(host, "POST", f"/bench/start?seconds={job_seconds:.0f}")
    if status != 200:
        raise RuntimeError(f"{served.topology.name}: /bench/start answered {status}: {body!r}")
    started = json.loads(body)
    served.cookie = session_cookie(headers.get("Set-Cookie"))
    served.paths = {
        "progress": f"/asyncstate/progress/{started['token']}",
        "cancel": f"/asyncstate/cancel/{started['token']}",
    }
    status, body, _ = request(host, "GET", served.paths["progress"], {"Cookie": served.cookie})
    if status != 200 or json.loads(body).get("status") not in ("queued", "running"):
        raise RuntimeError(f"{served.topology.name}: /progress answered {status}: {body!r}")


def end_watched_job(served: Served) -> None:
    host, cookie = served.server.host, served.cookie
    status, body, _ = request(host, "GET", served.paths["progress"], {"Cookie": cookie})
    still = json.loads(body).get("status") if status == 200 else status
    if still != "running":
        raise RuntimeError(f"{served.topology.name}: the watched job was {still!r}, not running")
    status, body, _ = request(host, "POST", served.paths["cancel"], {"Cookie": cookie, **XHR})
    if status != 202:
        raise RuntimeError(f"{served.topology.name}: cancel answered {status}: {body!r}")


def load_run(
    served: Served, seconds: float, args: argparse.Namespace
) -> tuple[Run, tuple[int, int]]:
    """One of throughput.py's load runs; with commands on the single server and on the primaries."""
    path, cookie = served.paths["progress"], served.cookie
    run = one_run(served.server, path, cookie, served.counter, seconds, args)  # type: ignore[arg-type]
    split = served.counter.last_split()
    return run, (split[0], sum(split[1:]))


def measure_throughput(all_served: list[Served], args: argparse.Namespace) -> None:
    """A warm-up run per topology, then ``args.rounds`` runs each, taking turns."""
    for served in all_served:
        load_run(served, WARMUP, args)
    for i in range(args.rounds):
        for served in all_served if i % 2 == 0 else all_served[::-1]:
            run, split = load_run(served, args.duration, args)
            served.runs.append(run)
            served.splits.append(split)


# -- round trips of one poll, counted on the client side ---------------------------------


@dataclass
class PollCost:
    polls: int
    sessions: float  # round trips per poll to the session store
    store: float  # round trips per poll to the job store
    us_per_poll: float  # median, in-process through the test client


@contextmanager
def counting_round_trips() -> Iterator[dict[str, int]]:
    """Count what this thread sends (a command, or a pipeline per connection), sessions apart.

    Patches ``AbstractConnection.send_packed_command`` for the duration (every connection
    class of redis-py, cluster nodes included); background threads (writer, heartbeat,
    listener) are not counted.
    """
    counts = {"sessions": 0, "store": 0}
    me = threading.get_ident()
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        if threading.get_ident() == me:
            counts["sessions" if self.client_name == SESSIONS_CLIENT_NAME else "store"] += 1
        original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def poll_cost(topology: Topology, polls: int) -> PollCost:
    """The same app in this process: ``polls`` GETs of /progress through the test client."""
    app, ext = build_app(topology.sessions_url, topology.nodes)
    try:
        client = app.test_client()
        started = client.post("/bench/start?seconds=60")
        if started.status_code != 200:
            raise RuntimeError(f"/bench/start answered {started.status_code}")
        token = started.get_json()["token"]
        path = f"/asyncstate/progress/{token}"
        for _ in range(5):  # warm-up: connections, scripts, slot map
            client.get(path)
        times = []
        with counting_round_trips() as counts:
            for _ in range(polls):
                begin = time.perf_counter()
                answer = client.get(path)
                times.append(time.perf_counter() - begin)
                if answer.status_code != 200:
                    raise RuntimeError(f"/progress answered {answer.status_code} in process")
        cancel = client.post(f"/asyncstate/cancel/{token}", headers=XHR)
        if cancel.status_code != 202:
            raise RuntimeError(f"cancel answered {cancel.status_code} in process")
    finally:
        ext.shutdown(2)
    return PollCost(polls, counts["sessions"] / polls, counts["store"] / polls, median(times) * 1e6)


# -- output -------------------------------------------------------------------------------


def fmt(ms: float) -> str:
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def p99(sample: CancelSample) -> float:
    return percentile(sample.latencies, 99) if sample.latencies else float("inf")


def cancel_rows(
    cancels: dict[str, CancelSample], topologies: dict[str, Topology]
) -> list[tuple[str, str, CancelSample]]:
    """(label, short label for the chart, sample) per row: each topology, the cluster by node."""
    rows = []
    for name, s in cancels.items():
        rows.append((topologies[name].label, name, s))
        if s.same_node:
            rows += [
                (
                    "cluster, job key on the listeners' primary",
                    "cluster, key on listeners' node",
                    s.where(True),
                ),
                (
                    "cluster, job key on another primary (PUBLISH crosses the bus)",
                    "cluster, key on another node",
                    s.where(False),
                ),
            ]
    return rows


def cancel_caption(cancels: dict[str, CancelSample], count: int) -> str:
    verdicts = []
    for name, s in cancels.items():
        ok = p99(s) <= TARGET_P99_MS and not s.misses
        verdicts.append(f"{name} p99 {fmt(p99(s))} ms ({'met' if ok else 'NOT met'})")
    split = ""
    cluster = cancels.get("cluster")
    if cluster is not None and cluster.same_node:
        here, away = cluster.where(True), cluster.where(False)
        slow = sum(ms > TARGET_P99_MS for ms in away.latencies)
        split = (
            f" On the cluster the cancel is a script on the primary holding the job's key, which "
            "publishes there, and the listeners (redis-py `ClusterPubSub`) subscribe on the "
            "primary owning the channel name's slot: "
            f"{len(here.latencies)} cancel(s) had their key on that primary (p99 "
            f"{fmt(p99(here))} ms); for the other {len(away.latencies)} the message crossed the "
            f"cluster bus, and {slow} of those took over {TARGET_P99_MS:.0f} ms (p50 "
            f"{fmt(median(away.latencies)) if away.latencies else '-'} ms). A bus crossing "
            "alone can take about 40 ms (Linux's minimum delayed ACK: redis-server 7.0 sets "
            "TCP_NODELAY only on the bus connections it accepts, valkey-io/valkey#1758), so on "
            "a cluster the store also publishes each cancel straight on the channel's primary."
        )
    return (
        "Cross-process cancel latency, from `asyncstate.cancel(token)` in this process to "
        "the job seeing `job.cancelled` set in instance A (another OS process, its own app "
        f"on the same topology; an idle job blocked on the Event), {count} cancels per "
        "topology after a warm-up, a random 0-2 ms wait before each. Target: p99 <= "
        f"{TARGET_P99_MS:.0f} ms on both; this run: {'; '.join(verdicts)}. A miss is a "
        f"cancel not seen within {WAIT_LIMIT:.0f} s.{split}"
    )


def cancel_table(cancels: dict[str, CancelSample], topologies: dict[str, Topology]) -> str:
    single = median(cancels["single"].latencies) if "single" in cancels else None
    rows = []
    for label, _short, s in cancel_rows(cancels, topologies):
        values = s.latencies or [float("nan")]
        ratio = f"{median(values) / single:.2f}x" if single and s.latencies else "-"
        rows.append(
            [
                label,
                str(len(s.latencies)),
                fmt(median(values)),
                fmt(percentile(values, 95)),
                fmt(percentile(values, 99)),
                fmt(max(values)),
                str(s.misses),
                ratio,
            ]
        )
    header = ["job store", "cancels", "p50 ms", "p95 ms", "p99 ms", "max ms", "misses"]
    return markdown_table([*header, "p50 / single"], rows)


def rps_of(served: Served) -> float:
    return median([r.rps for r in served.runs])


def throughput_caption(all_served: list[Served], args: argparse.Namespace, client_note: str) -> str:
    by_name = {s.topology.name: s for s in all_served}
    ratio = rps_of(by_name["cluster"]) / rps_of(by_name["single"])
    restarts = sum(r.restarts for s in all_served for r in s.runs)
    return (
        f"`GET /asyncstate/progress/<token>` throughput under gunicorn {version('gunicorn')} "
        f"(-w {args.workers} -k gthread --threads {args.threads} --reuse-port), the same app "
        "(`bench/_topology_app.py`) with its jobs on the single server or on the cluster, "
        f"both up at once; sessions (Flask-Session {version('flask-session')}) on the single "
        f"server in both; one running job each; load: {client_note}, {args.connections} "
        f"keep-alive connections, {args.rounds} round(s) x {args.duration:g} s per topology, "
        f"taking turns, after a {WARMUP:g} s warm-up each; all answers 200; {restarts} run(s) "
        "restarted for a lopsided split of connections. No target; this run: cluster / single "
        f"{ratio:.2f}x. A poll makes the same round trips on both; with the jobs on the cluster "
        "they go to two redis-server processes (sessions, and the job's primary) instead of "
        "one. Commands per request are the servers' `total_commands_processed` over "
        "the run (sessions included; commands inside Lua scripts count); round trips per poll "
        f"are counted on the client side, in this process ({args.polls} polls through the "
        "Flask test client, the request's own thread only). Server, load generator and every "
        f"redis-server share the machine's {os.cpu_count()} CPUs."
    )


def throughput_table(all_served: list[Served], costs: dict[str, PollCost]) -> str:
    single = rps_of(next(s for s in all_served if s.topology.name == "single"))
    rows = []
    for served in all_served:
        mid = median_run(served.runs)
        cost = costs[served.topology.name]
        on_single = median([a / r.requests for (a, _), r in zip(served.splits, served.runs)])
        on_cluster = median([b / r.requests for (_, b), r in zip(served.splits, served.runs)])
        splits = ", ".join("/".join(map(str, r.split)) if r.split else "?" for r in served.runs)
        rows.append(
            [
                served.topology.label,
                f"{rps_of(served):,.0f}",
                f"{mid.p50_ms:.2f}",
                f"{mid.p99_ms:.1f}",
                f"{on_single:.1f}",
                f"{on_cluster:.1f}" if served.topology.nodes else "-",
                f"{cost.sessions:.1f} + {cost.store:.1f}",
                f"{cost.us_per_poll:,.0f}",
                splits,
                f"{rps_of(served) / single:.2f}x",
            ]
        )
    header = [
        "job store",
        "requests/s (median)",
        "p50 ms",
        "p99 ms",
        "commands / request, single server",
        "commands / request, cluster primaries",
        "round trips / poll, sessions + jobs",
        "in-process µs / poll",
        "connections per worker",
        "/ single",
    ]
    return markdown_table(header, rows)


# -- driver -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="what to measure: cancel, throughput or both (default cancel,throughput)",
    )
    parser.add_argument("--cancels", type=int, help="cancels per topology (default 30, quick 10)")
    parser.add_argument("--duration", type=float, help="seconds per load run (default 8, quick 3)")
    parser.add_argument("--rounds", type=int, help="load runs per topology (default 2, quick 1)")
    parser.add_argument(
        "--polls", type=int, help="in-process polls for the round-trip count (200, quick 50)"
    )
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (16)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--threads", type=int, default=8, help="gthread threads per worker (8)")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk if installed)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the random waits")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 10 cancels, 1 round x 3 s, 50 polls"
    )
    add_common_options(parser)
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not args.parts or set(args.parts) - set(PARTS):
        parser.error(f"--parts: choose from {', '.join(PARTS)}")
    fill_defaults(args, DEFAULTS, QUICK)
    if not (1 <= args.cancels <= 2000) or not (1 <= args.polls <= 10_000):
        parser.error("--cancels must be 1..2000 and --polls 1..10000")
    if not (1 <= args.duration <= 120) or not (1 <= args.rounds <= 10):
        parser.error("--duration must be 1..120 s and --rounds 1..10")
    if not (1 <= args.connections <= 256) or args.workers < 1 or args.threads < 1:
        parser.error("--connections must be 1..256, --workers and --threads positive")
    return args


def primaries(cluster: RedisClusterServers) -> list[tuple[str, int]]:
    nodes = cluster.cluster_nodes(cluster.startup_nodes[0])
    return sorted(n["address"] for n in nodes if "master" in n["flags"])


def run_throughput(
    topologies: dict[str, Topology], args: argparse.Namespace, log_dir: str
) -> tuple[list[Served], dict[str, PollCost]]:
    job_seconds = 2 * WARMUP + 2 * args.rounds * (args.duration + 2) + 60
    all_served: list[Served] = []
    try:
        for topology in topologies.values():
            server = TopologyGunicorn(topology, args.workers, args.threads, log_dir)
            all_served.append(Served(topology, server, CommandCounter(topology.counted)))
            server.start()
            start_watched_job(all_served[-1], job_seconds)
        measure_throughput(all_served, args)
        for served in all_served:
            end_watched_job(served)
    except BaseException:
        for served in all_served:
            sys.stderr.write(f"gunicorn log ({served.topology.name}):\n")
            sys.stderr.write(served.server.log_text(4000) + "\n")
        raise
    finally:
        for served in all_served:
            served.server.stop()
    costs = {name: poll_cost(topology, args.polls) for name, topology in topologies.items()}
    return all_served, costs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rng = random.Random(args.seed)

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(f"bench/topologies.py: signal {signum}, stopping what it started")

    signal.signal(signal.SIGTERM, terminated)
    client_note = ""
    if "throughput" in args.parts:
        args.client, client_note = choose_client(args.client)
    log_dir = tempfile.mkdtemp(prefix="asyncstate-bench-topologies-")
    cancels: dict[str, CancelSample] = {}
    all_served: list[Served] = []
    costs: dict[str, PollCost] = {}
    clients: list[redis.Redis] = []
    try:
        with redis_server(args.redis_url) as server, RedisClusterServers() as cluster:
            single = redis.Redis.from_url(server.url)
            clients.append(single)
            clients += [cluster.node_client(a) for a in primaries(cluster)]
            topologies = {
                "single": Topology("single", server.url, None, [single]),
                "cluster": Topology("cluster", server.url, cluster.startup_nodes, clients),
            }
            if "cancel" in args.parts:
                locator = Locator(cluster.startup_nodes)
                try:
                    for name, topology in topologies.items():
                        where = locator if topology.nodes else None
                        cancels[name] = cancel_latencies(topology, args.cancels, rng, where)
                finally:
                    locator.close()
            if "throughput" in args.parts:
                all_served, costs = run_throughput(topologies, args, log_dir)
            node_version = clients[1].info("server")["redis_version"]
            env = environment(
                single,
                f"cluster of {len(clients) - 1} primaries + {cluster.replicas} replica each "
                f"(redis-server {node_version}, {len(cluster.ports)} processes on loopback, "
                f"ready in {cluster.startup_seconds:.1f} s)",
                f"clock {time.get_clock_info('monotonic').implementation}",
            )
    finally:
        for client in clients:
            client.close()
        shutil.rmtree(log_dir, ignore_errors=True)
    print(env)
    panels = []
    if cancels:
        print()
        print(cancel_caption(cancels, args.cancels))
        print()
        print(cancel_table(cancels, topologies))
        bars = []
        for _label, short, s in cancel_rows(cancels, topologies):
            if s.latencies:
                bars += [
                    (f"{short} p50", median(s.latencies)),
                    (f"{short} p99", percentile(s.latencies, 99), TARGET_P99_MS),
                ]
        panels.append(
            panel("topologies.py: cross-process cancel latency (ms), target p99 10", "ms", bars)
        )
    rps: dict[str, float] = {}
    if all_served:
        print()
        print(throughput_caption(all_served, args, client_note))
        print()
        print(throughput_table(all_served, costs))
        rps = {s.topology.name: rps_of(s) for s in all_served}
        panels.append(
            panel(
                f"topologies.py: /progress requests/s, cluster / single ({rps['cluster']:,.0f} "
                f"vs {rps['single']:,.0f} req/s)",
                "x",
                [("cluster / single", rps["cluster"] / rps["single"])],
                reference=1.0,
            )
        )
    write_json(
        args.json,
        {
            "cancel_latencies_ms": {n: s.latencies for n, s in cancels.items()},
            "cancel_misses": {n: s.misses for n, s in cancels.items()},
            "cancel_on_listeners_primary": {n: s.same_node for n, s in cancels.items()},
            "requests_per_second": rps,
            "round_trips_per_poll": {
                n: {"sessions": c.sessions, "jobs": c.store} for n, c in costs.items()
            },
            "client": args.client,
            "panels": panels,
        },
    )


if __name__ == "__main__":
    main()
