"""A single redis-server beside a 3-primary Redis Cluster, one run: cross-process cancel latency, /progress throughput.

The job store runs on a Redis Cluster when the extension is given a
``RedisCluster`` client (``AsyncState(app, redis=RedisCluster(...))``). This
script measures the same things on both topologies in one run:

- the single server: ``--redis-url`` (``run.py`` passes the one it started), or
  a throwaway one of its own;
- the cluster: 3 primaries with a replica each (``tests/support/redis_topologies.py``'s
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
   ``throughput.py`` measures it (the harness's gunicorn and load runs):
   ``_apps.topology_app()`` under ``gunicorn -w 2 -k gthread --threads 8
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

The cancel is ``cancel.py``'s idle job cancelled through the API; the load runs
are ``throughput.py``'s. On the cluster a cancel's script runs, and publishes,
on the primary holding the job's key, while the listeners (redis-py's
``ClusterPubSub``) subscribe on the primary owning the channel name's slot;
when the two differ the message crosses the cluster bus, and the table has a
row for each case. A bus crossing alone used to take about 40 ms now and then
(Linux's minimum delayed ACK: redis-server 7.0 sets ``TCP_NODELAY`` only on the
bus connections it accepts, valkey-io/valkey#1758; the first run here had p99
42.2 ms), so the store also publishes each cancel on the channel's primary.

Every process started here (instance A, gunicorn, the cluster, the throwaway
server) is stopped at the end, also on failure or SIGTERM, and every wait is
bounded. Needs ``redis-server`` and ``redis-cli``, and ``wrk`` (else a Python
client stands in).

Targets: cancel p99 <= 10 ms, no miss, on both topologies; none for throughput
(cluster / single is reported).

    python bench/topologies.py              # 30 cancels each, 2 rounds x 8 s per topology (about 45 s)
    python bench/topologies.py --quick      # 10 cancels each, 1 round x 3 s (about 17 s)
    python bench/topologies.py --parts cancel --cancels 100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import harness
import redis
import redis.connection
from _apps import SESSIONS_CLIENT_NAME, build_topology_app
from cancel import ours_latencies

TARGET_P99 = harness.Target("cancel latency p99", "<=", 10.0, " ms")
TARGET_MISSES = harness.Target("cancels not seen within 10 s", "<=", 0)
PARTS = ("cancel", "throughput")
FULL = {"parts": "cancel,throughput", "cancels": 30, "duration": 8.0, "rounds": 2, "polls": 200}
QUICK = {**FULL, "cancels": 10, "duration": 3.0, "rounds": 1, "polls": 50}
HELP = {
    "parts": "cancel, throughput or both",
    "cancels": "cancels per topology",
    "polls": "in-process polls for the round trips",
    **harness.LOAD_SIZED,
}
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


def cancel_samples(
    topology: Topology, count: int, rng: random.Random
) -> list[tuple[str, str, harness.Latencies]]:
    """(label, short label, sample) rows: the topology's cancels, on the cluster also by where
    the job's key lives (on the listeners' primary, or on another: the bus is crossed)."""
    store = {"url": topology.sessions_url, "nodes": topology.nodes}
    if topology.nodes is None:
        sample, _ = ours_latencies(store, count, "idle", "api", rng)
        return [(topology.label, topology.name, sample)]
    from redis.cluster import ClusterNode, RedisCluster

    # a client-side slot lookup, no round trip: the job key's primary vs the channel's
    nodes = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in topology.nodes])

    def on_listeners_primary(ext: harness.AsyncState, job_id: str) -> bool:
        node = nodes.get_node_from_key
        return bool(
            node(harness.job_key(ext, job_id)).name == node(harness.cancel_channel(ext)).name
        )

    try:
        sample, here = ours_latencies(store, count, "idle", "api", rng, on_listeners_primary)
    finally:
        nodes.close()
    rows = [(topology.label, topology.name, sample)]
    for same, label, short in (
        (True, "cluster, job key on the listeners' primary", "cluster, key on listeners' node"),
        (
            False,
            "cluster, job key on another primary (PUBLISH crosses the bus)",
            "cluster, key on another node",
        ),
    ):
        kept = [ms for ms, h in zip(sample.ms, here, strict=True) if h == same]
        rows.append((label, short, harness.Latencies(label, kept)))
    return rows


# -- 2. /progress throughput under gunicorn ---------------------------------------------


def topology_server(topology: Topology, args: argparse.Namespace, log_dir: str) -> harness.Gunicorn:
    """throughput.py's server on ``_apps.topology_app()``, jobs on the topology."""
    nodes = ",".join(f"{h}:{p}" for h, p in topology.nodes or [])
    env = {"BENCH_SESSIONS_URL": topology.sessions_url, "BENCH_CLUSTER_NODES": nodes}
    return harness.Gunicorn(
        log_dir,
        "_apps:topology_app()",
        env=env,
        workers=args.workers,
        threads=args.threads,
        reuse_port=True,
        graceful_timeout=15.0,
    )


class CommandCounter:
    """``info("stats")`` over several servers, for ``harness.load_run``'s command count.

    ``total_commands_processed`` summed over the servers, less ``n - 1`` per read (each
    read's INFO counts once on every server; load_run takes one off); each read's
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
    server: harness.Gunicorn
    counter: CommandCounter
    paths: dict[str, str] = field(default_factory=dict)
    cookie: str = ""
    runs: list[harness.LoadRun] = field(default_factory=list)
    #: Per run: commands on the single server, and on the cluster's primaries.
    splits: list[tuple[int, int]] = field(default_factory=list)


def start_watched_job(served: Served, job_seconds: float) -> None:
    host = served.server.host
    status, body, headers = harness.http_request(
        host, "POST", f"/bench/start?seconds={job_seconds:.0f}"
    )
    if status != 200:
        raise RuntimeError(f"{served.topology.name}: /bench/start answered {status}: {body!r}")
    started = json.loads(body)
    served.cookie = harness.session_cookie(headers.get("Set-Cookie"))
    served.paths = {
        "progress": f"/asyncstate/progress/{started['token']}",
        "cancel": f"/asyncstate/cancel/{started['token']}",
    }
    status, body, _ = harness.http_request(
        host, "GET", served.paths["progress"], {"Cookie": served.cookie}
    )
    if status != 200 or json.loads(body).get("status") not in ("queued", "running"):
        raise RuntimeError(f"{served.topology.name}: /progress answered {status}: {body!r}")


def end_watched_job(served: Served) -> None:
    host, cookie = served.server.host, served.cookie
    status, body, _ = harness.http_request(
        host, "GET", served.paths["progress"], {"Cookie": cookie}
    )
    still = json.loads(body).get("status") if status == 200 else status
    if still != "running":
        raise RuntimeError(f"{served.topology.name}: the watched job was {still!r}, not running")
    status, body, _ = harness.http_request(
        host, "POST", served.paths["cancel"], {"Cookie": cookie, **XHR}
    )
    if status != 202:
        raise RuntimeError(f"{served.topology.name}: cancel answered {status}: {body!r}")


def load_run(
    served: Served, seconds: float, args: argparse.Namespace
) -> tuple[harness.LoadRun, tuple[int, int]]:
    """One of throughput.py's load runs; with commands on the single server and on the primaries."""
    path, cookie = served.paths["progress"], served.cookie
    run = harness.load_run(served.server, path, cookie, served.counter, seconds, args)
    split = served.counter.last_split()
    return run, (split[0], sum(split[1:]))


def measure_throughput(all_served: list[Served], args: argparse.Namespace) -> None:
    """A warm-up run per topology, then ``args.rounds`` runs each, taking turns."""
    for served in all_served:
        load_run(served, harness.WARMUP, args)
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
    app, ext = build_topology_app(topology.sessions_url, topology.nodes)
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
    us = harness.median(times) * 1e6
    return PollCost(polls, counts["sessions"] / polls, counts["store"] / polls, us)


# -- driver -------------------------------------------------------------------------------


def rps_of(served: Served) -> float:
    return harness.median([r.rps for r in served.runs])


def primaries(cluster: Any) -> list[tuple[str, int]]:
    nodes = cluster.cluster_nodes(cluster.startup_nodes[0])
    return sorted(n["address"] for n in nodes if "master" in n["flags"])


def run_throughput(
    topologies: dict[str, Topology], args: argparse.Namespace, log_dir: str
) -> tuple[list[Served], dict[str, PollCost]]:
    job_seconds = 2 * harness.WARMUP + 2 * args.rounds * (args.duration + 2) + 60
    all_served = [
        Served(t, topology_server(t, args, log_dir), CommandCounter(t.counted))
        for t in topologies.values()
    ]
    with ExitStack() as stack:
        for served in all_served:
            stack.enter_context(harness.serving(served.server))
        for served in all_served:
            start_watched_job(served, job_seconds)
        measure_throughput(all_served, args)
        for served in all_served:
            end_watched_job(served)
    costs = {name: poll_cost(topology, args.polls) for name, topology in topologies.items()}
    return all_served, costs


def report_cancels(
    report: harness.Report, rows: list[tuple[str, str, harness.Latencies]], count: int
) -> None:
    single = rows[0][2].pct(50)
    met = []
    for _label, short, s in rows:
        if short in ("single", "cluster"):
            met.append(report.check(TARGET_P99, s.pct(99), short))
            met.append(report.check(TARGET_MISSES, s.misses, short, str(s.misses)))
    report.out(
        "Cross-process cancel latency, from `asyncstate.cancel(token)` in this process to the "
        "job seeing `job.cancelled` set in instance A (another OS process, its own app on the "
        f"same topology; an idle job blocked on the Event), {count} cancels per topology after "
        "a warm-up, a random 0-2 ms wait before each. On the cluster, the cancels are also "
        "sorted by where the job's key lives: on the primary the listeners subscribe on, or on "
        "another (the message crosses the cluster bus)."
    )
    report.table(
        ["job store", *harness.LATENCY_HEADER, "p50 / single"],
        [
            [label, *s.cells(), f"{s.pct(50) / single:.2f}x" if s.ms else "-"]
            for label, _short, s in rows
        ],
    )
    bars = []
    for _label, short, s in rows:
        if s.ms:
            bars += [(f"{short} p50", s.pct(50)), (f"{short} p99", s.pct(99), TARGET_P99.limit)]
    report.panel(harness.panel("topologies.py: cross-process cancel latency (ms)", "ms", bars))
    by = {short: s for _label, short, s in rows}
    report.summary(
        "Redis Cluster (3 primaries): cross-process cancel",
        f"p99 {harness.fmt(by['cluster'].pct(99))} ms (key on another primary: "
        f"{harness.fmt(by['cluster, key on another node'].pct(99))} ms)",
        f"single server p99 {harness.fmt(by['single'].pct(99))} ms",
        "p99 <= 10 ms",
        all(met),
    )


def report_throughput(
    report: harness.Report,
    all_served: list[Served],
    costs: dict[str, PollCost],
    args: argparse.Namespace,
    client_note: str,
) -> None:
    rps = {s.topology.name: rps_of(s) for s in all_served}
    ratio = rps["cluster"] / rps["single"]
    restarts = sum(r.restarts for s in all_served for r in s.runs)
    report.out(
        f"`GET /asyncstate/progress/<token>` throughput under gunicorn {version('gunicorn')} "
        f"(-w {args.workers} -k gthread --threads {args.threads} --reuse-port), the same app "
        "(`_apps.topology_app`) with its jobs on the single server or on the cluster, both up "
        f"at once; sessions (Flask-Session {version('flask-session')}) on the single server in "
        f"both; one running job each; load: {client_note}, {args.connections} keep-alive "
        f"connections, {args.rounds} round(s) x {args.duration:g} s per topology, taking turns, "
        f"after a {harness.WARMUP:g} s warm-up each; all answers 200; {restarts} run(s) "
        "restarted for a lopsided split of connections. Commands per request are the servers' "
        "`total_commands_processed` over the run (sessions included; commands inside Lua "
        "scripts count); round trips per poll are counted on the client side, in this process "
        f"({args.polls} polls through the Flask test client, the request's own thread only). "
        f"Server, load generator and every redis-server share the machine's {os.cpu_count()} "
        "CPUs. No target."
    )
    rows = []
    for served in all_served:
        mid = harness.median_run(served.runs)
        cost = costs[served.topology.name]
        pairs = list(zip(served.splits, served.runs, strict=True))
        on_single = harness.median([a / r.requests for (a, _), r in pairs])
        on_cluster = harness.median([b / r.requests for (_, b), r in pairs])
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
                harness.splits(served.runs),
                f"{rps_of(served) / rps['single']:.2f}x",
            ]
        )
    report.table(
        [
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
        ],
        rows,
    )
    report.summary(
        "Redis Cluster (3 primaries): `/progress` requests/s",
        f"{rps['cluster']:,.0f} req/s ({ratio:.2f}x the single server)",
        f"single server {rps['single']:,.0f} req/s",
        "none (reported)",
    )
    report.figures.update(
        requests_per_second=rps,
        round_trips_per_poll={
            n: {"sessions": c.sessions, "jobs": c.store} for n, c in costs.items()
        },
        client=args.client,
    )
    report.panel(
        harness.panel(
            f"topologies.py: /progress requests/s, cluster / single ({rps['cluster']:,.0f} vs "
            f"{rps['single']:,.0f} req/s)",
            "x",
            [("cluster / single", ratio)],
            reference=1.0,
        )
    )


def main(argv: list[str] | None = None) -> None:
    found = harness.parser(__doc__, FULL, QUICK, HELP)
    found.add_argument("--seed", type=int, default=1, help="seed of the random waits")
    harness.add_load_options(found)
    ranges = {"cancels": (1, 2000), "polls": (1, 10_000), **harness.LOAD_RANGES}
    args = harness.parse(found, argv, ranges, {"parts": PARTS})
    report = harness.Report(__file__, args)
    rng = random.Random(args.seed)
    client_note = ""
    if "throughput" in args.parts:
        args.client, client_note = harness.choose_client(args.client)
    log_dir = tempfile.mkdtemp(prefix="asyncstate-bench-topologies-")
    cancels: list[tuple[str, str, harness.Latencies]] = []
    all_served: list[Served] = []
    costs: dict[str, PollCost] = {}
    clients: list[redis.Redis] = []
    try:
        with (
            harness.redis_server(args.redis_url) as server,
            harness.RedisClusterServers() as cluster,
        ):
            single = redis.Redis.from_url(server.url)
            clients.append(single)
            clients += [cluster.node_client(a) for a in primaries(cluster)]
            topologies = {
                "single": Topology("single", server.url, None, [single]),
                "cluster": Topology("cluster", server.url, cluster.startup_nodes, clients),
            }
            if "cancel" in args.parts:
                for topology in topologies.values():
                    cancels += cancel_samples(topology, args.cancels, rng)
            if "throughput" in args.parts:
                all_served, costs = run_throughput(topologies, args, log_dir)
            node_version = clients[1].info("server")["redis_version"]
            env = harness.environment(
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
    report.out(env)
    if cancels:
        report_cancels(report, cancels, args.cancels)
        report.figures["cancel_latencies_ms"] = {short: s.ms for _l, short, s in cancels}
    if all_served:
        report_throughput(report, all_served, costs, args, client_note)
    report.finish()


if __name__ == "__main__":
    main()
