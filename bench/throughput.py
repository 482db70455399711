"""Throughput of ``GET /asyncstate/progress/<token>`` under gunicorn, against a bare route in the same app.

What it measures, against one ``redis-server`` on loopback:

- the app: ``bench/_throughput_app.py``, i.e. the example app with
  ``REDIS_URL`` set (jobs in Redis, sessions in Redis through Flask-Session),
  under ``gunicorn -w 2 -k gthread --threads 8 --reuse-port`` on a free
  loopback port (``--reuse-port``: each worker listens on its own socket and
  the kernel spreads new connections over them; with one shared socket a
  burst of keep-alive connections often lands 16/0 on one worker, which
  halves the throughput whatever the route);
- one job, started through a route with a cookie jar (so the session holds
  it), runs for the whole benchmark reporting progress every 0.1 s, as a job
  being watched would;
- ours: ``GET /asyncstate/progress/<token>`` with that session's cookie
  (session load, token check, status read from Redis, JSON answer);
- bare: ``GET /bench/bare/<job_id>`` in the same app: session load, the id
  checked against the session, one Redis ``GET`` of the same document, the
  stored JSON returned as is;
- the load: ``wrk`` (Debian's package; ``apt-get install -y wrk``) with
  ``--connections`` keep-alive connections for ``--duration`` seconds per run,
  after a 1 s warm-up per route. Without wrk, a small Python client
  (threads over ``http.client``) stands in, and the table says so: it is
  slower than the server, so its figures understate both routes.

Each route runs ``--rounds`` times, taking turns (ours, bare, then bare, ours);
a run whose connections are still lopsided 0.5 s in (``ss``: a worker holding
under half its share) is restarted, at most 8 times;
the table shows the median requests/s, wrk's latency percentiles of the
median round, and Redis commands per request (the server's
``total_commands_processed`` over the run, divided by the requests: session
load and save included). Every answer must be 200: any other status, or a
socket error, fails the run, so an error page can never pass for speed.

It starts its own redis-server on a free loopback port (never 6379) unless
given ``--redis-url``, and stops gunicorn (SIGTERM, then SIGKILL) and the
server in any case. Needs ``pip install -e '.[bench,session]' gunicorn``.

Run from the repository root::

    python bench/throughput.py              # 2 rounds x 10 s per route (about 50 s)
    python bench/throughput.py --quick      # 1 round x 3 s per route (about 12 s)
    python bench/throughput.py --client python   # without wrk
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import redis
from _common import (
    ROOT,
    SECRET,
    add_common_options,
    environment,
    fill_defaults,
    markdown_table,
    median,
    panel,
    percentile,
    redis_server,
    write_json,
)
from gunicorn_server import GunicornServer

HERE = os.path.dirname(os.path.abspath(__file__))
#: Target: ours / bare requests per second.
TARGET_RATIO = 0.85
QUICK = {"duration": 3.0, "rounds": 1}
DEFAULTS = {"duration": 10.0, "rounds": 2}
WARMUP = 1.0
ROUTES = ("ours", "bare")
LABELS = {
    "ours": "ours: `GET /asyncstate/progress/<token>`",
    "bare": "bare: `GET /bench/bare/<job_id>` (session + one Redis GET)",
}


@dataclass
class Run:
    """One load run of one route."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    commands: int = 0
    #: Connections held by each gunicorn worker, sampled 0.5 s into the run (None: unknown).
    split: list[int] | None = None
    #: Runs started before this one was kept (restarted for an uneven split).
    restarts: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def commands_per_request(self) -> float:
        return self.commands / self.requests if self.requests else float("nan")


# -- the server -----------------------------------------------------------------


class Gunicorn(GunicornServer):
    """gunicorn running bench/_throughput_app.py on a free loopback port.

    ``tests/gunicorn_server.py``'s server (stopped with SIGTERM, then SIGKILL of its
    own process group) with the bench's app module, ``--reuse-port`` and the
    bench's secret; ready once every worker listens on its own socket.
    """

    def __init__(self, redis_url: str, workers: int, threads: int, log_dir: str) -> None:
        super().__init__(
            log_dir,
            workers=workers,
            threads=threads,
            graceful_timeout=15.0,
            # --reuse-port: a listening socket per worker, the kernel spreads connections
            extra_args=("--log-level", "warning", "--reuse-port"),
            env={
                "REDIS_URL": redis_url,
                "SECRET_KEY": SECRET,
                "PYTHONPATH": os.pathsep.join([HERE, ROOT, os.environ.get("PYTHONPATH", "")]),
            },
        )

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [*super().command()[:-1], "_throughput_app:create_app()"]

    def start(self) -> Gunicorn:
        super().start()
        deadline = time.monotonic() + self.ready_timeout
        while (listening := listeners(self.port)) is not None and listening < self.workers:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{listening} of {self.workers} gunicorn workers listen")
            time.sleep(0.1)
        return self


def request(
    host: str, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, Any]:
    """One HTTP request on a fresh connection: (status, body, headers)."""
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response.headers
    finally:
        conn.close()


def session_cookie(set_cookie: str | None) -> str:
    """``session=<id>`` from a ``Set-Cookie`` header (Flask-Session's cookie)."""
    match = re.search(r"(?:^|[,\s])(session=[^;,\s]+)", set_cookie or "")
    if not match:
        raise RuntimeError(f"no session cookie in {set_cookie!r}")
    return match.group(1)


# -- load generators --------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


class WrkLoad:
    """``wrk`` for ``seconds`` in a child process; ``result()`` fails on any non-2xx or socket error."""

    def __init__(self, host: str, path: str, cookie: str, seconds: float, connections: int) -> None:
        self.path, self.seconds = path, seconds
        command = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "--timeout",
            "5s",
            "-H",
            f"Cookie: {cookie}",
            f"http://{host}{path}",
        ]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def abort(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=10)

    def result(self) -> Run:
        try:
            out, err = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.abort()
            raise RuntimeError("wrk did not finish in time") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({self.proc.returncode}): {err or out}")
        if "Non-2xx or 3xx responses" in out or "Socket errors" in out:
            raise RuntimeError(f"wrk saw errors on {self.path}:\n{out}")
        total = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out)
        latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
        if total is None or set(latency) != {"50", "99"}:
            raise RuntimeError(f"cannot read wrk's output:\n{out}")
        took = float(total.group(2)) * (1e-3 if total.group(3) == "ms" else 1.0)
        return Run(int(total.group(1)), took, _ms(latency["50"]), _ms(latency["99"]))


class PythonLoad:
    """The fallback: ``connections`` threads, each a keep-alive ``http.client`` loop."""

    def __init__(self, host: str, path: str, cookie: str, seconds: float, connections: int) -> None:
        self.path, self.seconds = path, seconds
        self.deadline = time.monotonic() + seconds
        self.stop = threading.Event()
        self.latencies: list[list[float]] = [[] for _ in range(connections)]
        self.statuses: dict[int, int] = {}
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.threads = [
            threading.Thread(target=self._client, args=(host, path, cookie, mine), daemon=True)
            for mine in self.latencies
        ]
        for thread in self.threads:
            thread.start()

    def _client(self, host: str, path: str, cookie: str, mine: list[float]) -> None:
        conn = http.client.HTTPConnection(host, timeout=10)
        seen: dict[int, int] = {}
        try:
            for _ in range(10_000_000):  # bounded; the deadline ends it long before
                if self.stop.is_set() or time.monotonic() >= self.deadline:
                    break
                start = time.perf_counter()
                conn.request("GET", path, headers={"Cookie": cookie})
                response = conn.getresponse()
                response.read()
                mine.append((time.perf_counter() - start) * 1000)
                seen[response.status] = seen.get(response.status, 0) + 1
        except Exception as exc:  # noqa: BLE001 - reported by result()
            self.errors.append(exc)
        finally:
            conn.close()
            with self.lock:
                for status, n in seen.items():
                    self.statuses[status] = self.statuses.get(status, 0) + n

    def abort(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def result(self) -> Run:
        for thread in self.threads:
            thread.join(self.seconds + 30)
        took = time.monotonic() - self.started
        if self.errors:
            raise RuntimeError(f"python client failed on {self.path}: {self.errors[0]!r}")
        if set(self.statuses) != {200}:
            raise RuntimeError(f"non-200 answers on {self.path}: {self.statuses}")
        flat = [v for mine in self.latencies for v in mine]
        return Run(len(flat), took, median(flat), percentile(flat, 99))


def listeners(port: int) -> int | None:
    """How many sockets listen on ``port`` (one per worker with ``--reuse-port``), or None."""
    if shutil.which("ss") is None:
        return None
    done = subprocess.run(
        ["ss", "-tlnH", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return len(done.stdout.splitlines()) if done.returncode == 0 else None


def connection_split(port: int, workers: list[int]) -> list[int] | None:
    """Established connections to ``port`` held by each gunicorn worker (``ss -tnp``), or None."""
    if shutil.which("ss") is None:
        return None
    done = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        return None
    pids = [int(pid) for pid in re.findall(r"pid=(\d+)", done.stdout)]
    return [pids.count(worker) for worker in workers]


# -- the benchmark ----------------------------------------------------------------


def commands_processed(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


#: Runs restarted at most this many times for an uneven split of connections.
MAX_RESTARTS = 8
#: Seconds into a run when the split of connections across workers is sampled.
SPLIT_CHECK = 0.5


def balanced(split: list[int] | None, connections: int) -> bool:
    """Every worker holds at least half its fair share of the connections (or we cannot tell)."""
    return split is None or min(split) * 2 * len(split) >= connections


def one_run(
    app: Gunicorn,
    path: str,
    cookie: str,
    client: redis.Redis,
    seconds: float,
    args: argparse.Namespace,
) -> Run:
    """One load run, restarted (at most MAX_RESTARTS times) while its connections are lopsided.

    gunicorn leaves each new connection to whichever worker accepts it first, and a
    keep-alive connection stays with that worker: 16 connections can land 16/0, which
    halves the throughput of a GIL-bound server whatever the route.
    """
    load_class = WrkLoad if args.client == "wrk" else PythonLoad
    workers = app.current_workers()
    for restart in range(MAX_RESTARTS + 1):
        before = commands_processed(client)
        load = load_class(app.host, path, cookie, seconds, args.connections)
        time.sleep(min(SPLIT_CHECK, seconds / 2))
        split = connection_split(app.port, workers)
        if not balanced(split, args.connections) and restart < MAX_RESTARTS:
            load.abort()
            time.sleep(0.2)  # let the workers drop the old connections
            continue
        run = load.result()
        run.commands = commands_processed(client) - before - 1  # minus our INFO
        run.split, run.restarts = split, restart
        return run
    raise AssertionError("unreachable")


def measure(
    app: Gunicorn, paths: dict[str, str], cookie: str, client: redis.Redis, args: argparse.Namespace
) -> dict[str, list[Run]]:
    """``args.rounds`` runs per route, taking turns; one warm-up run per route first."""
    for name in ROUTES:
        one_run(app, paths[name], cookie, client, WARMUP, args)
    runs: dict[str, list[Run]] = {name: [] for name in ROUTES}
    for i in range(args.rounds):
        for name in ROUTES if i % 2 == 0 else ROUTES[::-1]:
            runs[name].append(one_run(app, paths[name], cookie, client, args.duration, args))
    return runs


def median_run(runs: list[Run]) -> Run:
    """The run with the median requests/s (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r.rps)
    return ordered[(len(ordered) - 1) // 2]


def table(runs: dict[str, list[Run]]) -> str:
    bare = median([r.rps for r in runs["bare"]])
    rows = []
    for name in ROUTES:
        rps = median([r.rps for r in runs[name]])
        mid = median_run(runs[name])
        splits = ", ".join("/".join(map(str, r.split)) if r.split else "?" for r in runs[name])
        rows.append(
            [
                LABELS[name],
                f"{rps:,.0f}",
                f"{mid.p50_ms:.2f}",
                f"{mid.p99_ms:.1f}",
                f"{median([r.commands_per_request for r in runs[name]]):.1f}",
                splits,
                f"{rps / bare:.2f}x",
            ]
        )
    header = [
        "route",
        "requests/s (median)",
        "p50 ms",
        "p99 ms",
        "Redis commands / request",
        "connections per worker",
        "ours / bare",
    ]
    return markdown_table(header, rows)


def caption(runs: dict[str, list[Run]], args: argparse.Namespace, client_note: str) -> str:
    ratio = median([r.rps for r in runs["ours"]]) / median([r.rps for r in runs["bare"]])
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    restarts = sum(r.restarts for rs in runs.values() for r in rs)
    return (
        f"Progress-route throughput under gunicorn {version('gunicorn')} (-w {args.workers} "
        f"-k gthread --threads {args.threads} --reuse-port), Flask-Session {version('flask-session')} in Redis, "
        f"one running job; load: {client_note}, {args.connections} keep-alive connections, "
        f"{args.rounds} round(s) x {args.duration:g} s per route, taking turns, after a "
        f"{WARMUP:g} s warm-up each; all answers 200. Target: ours / bare >= {TARGET_RATIO}x; "
        f"this run: {ratio:.2f}x ({verdict}). A keep-alive connection stays with the worker that "
        f"accepted it; `--reuse-port` gives each worker its own listening socket so the kernel "
        f"spreads them (with one shared socket, 16/0 splits were common and halved the figures), "
        f"and a run whose split was still lopsided (a worker under half its share, read with "
        f"`ss` {SPLIT_CHECK:g} s in) was restarted: {restarts} restart(s) this time. Server, load "
        f"generator and Redis share the machine's {os.cpu_count()} CPUs."
    )


def choose_client(wanted: str) -> tuple[str, str]:
    """(client, note): wrk when installed (or asked for), else the Python client."""
    has_wrk = shutil.which("wrk") is not None
    if wanted == "wrk" and not has_wrk:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (or --client python)")
    if wanted == "python" or (wanted == "auto" and not has_wrk):
        why = "" if has_wrk else "wrk is not installed (apt-get install -y wrk), so "
        return "python", (
            f"{why}a Python threaded client (http.client), itself the bottleneck: "
            "figures understate both routes"
        )
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).split("[")[0].strip() or "wrk"
    return "wrk", f"`{first}` -t1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, help="seconds per run (default 10, quick 3)")
    parser.add_argument("--rounds", type=int, help="runs per route (default 2, quick 1)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (16)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--threads", type=int, default=8, help="gthread threads per worker (8)")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk if installed)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round x 3 s")
    add_common_options(parser)
    args = fill_defaults(parser.parse_args(argv), DEFAULTS, QUICK)
    if not (1 <= args.duration <= 120) or not (1 <= args.rounds <= 10):
        parser.error("--duration must be 1..120 s and --rounds 1..10")
    if not (1 <= args.connections <= 256) or args.workers < 1 or args.threads < 1:
        parser.error("--connections must be 1..256, --workers and --threads positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.client, client_note = choose_client(args.client)
    log_dir = tempfile.mkdtemp(prefix="asyncstate-bench-gunicorn-")
    job_seconds = 2 * WARMUP + 2 * args.rounds * (args.duration + 2) + 30
    try:
        with redis_server(args.redis_url) as server:
            client = redis.Redis.from_url(server.url)
            app = Gunicorn(server.url, args.workers, args.threads, log_dir)
            try:
                app.start()
                status, body, headers = request(
                    app.host, "POST", f"/bench/start?seconds={job_seconds:.0f}"
                )
                if status != 200:
                    raise RuntimeError(f"/bench/start answered {status}: {body!r}")
                started = json.loads(body)
                cookie = session_cookie(headers.get("Set-Cookie"))
                paths = {
                    "ours": f"/asyncstate/progress/{started['token']}",
                    "bare": f"/bench/bare/{started['job_id']}",
                }
                for name, path in paths.items():  # both answer 200 with this session's cookie
                    status, body, _ = request(app.host, "GET", path, {"Cookie": cookie})
                    if status != 200:
                        raise RuntimeError(f"{name} route answered {status}: {body!r}")
                runs = measure(app, paths, cookie, client, args)
                status, body, _ = request(app.host, "GET", paths["ours"], {"Cookie": cookie})
                still = json.loads(body).get("status")
                if still != "running":
                    raise RuntimeError(f"the watched job was {still!r} at the end, not running")
                status, body, _ = request(  # end the job now rather than at its deadline
                    app.host,
                    "POST",
                    f"/asyncstate/cancel/{started['token']}",
                    {
                        "Cookie": cookie,
                        "X-Requested-With": "XMLHttpRequest",
                        "X-CSRFToken": started["csrf_token"],
                    },
                )
                if status != 202:
                    raise RuntimeError(f"cancel answered {status}: {body!r}")
            except BaseException:
                sys.stderr.write(f"gunicorn log:\n{app.log_text(4000)}\n")
                raise
            finally:
                app.stop()
            env = environment(client)
            client.close()
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    print(env)
    print()
    print(caption(runs, args, client_note))
    print()
    print(table(runs))
    rps = {name: median([r.rps for r in runs[name]]) for name in ROUTES}
    write_json(
        args.json,
        {
            "requests_per_second": rps,
            "client": args.client,
            "panels": [
                panel(
                    f"throughput.py: /progress requests/s, ours / bare ({rps['ours']:,.0f} vs "
                    f"{rps['bare']:,.0f} req/s)",
                    "x",
                    [("ours / bare", rps["ours"] / rps["bare"], TARGET_RATIO)],
                    reference=1.0,
                )
            ],
        },
    )


if __name__ == "__main__":
    main()
