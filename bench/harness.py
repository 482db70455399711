"""The one harness every benchmark script uses: servers, apps, processes, timing, report.

A script declares its targets (:class:`Target`), parses its options with
:func:`parse` (``--quick``, ``--redis-url``, ``--strict``, ``--out`` come from
here), measures, and hands what it found to a :class:`Report`: captions and
tables are printed as they come, each target is checked (``met`` / ``NOT MET``),
one or more rows are kept for the summary table of ``bench/README.md``, and
:meth:`Report.finish` prints the targets table and writes everything (the
printed markdown included) to ``bench/out/<script>.json``. With ``--strict`` a
missed target makes the script exit with :data:`MISSED` (3), so CI can run it;
without, a missed target is reported and the exit code stays 0.

Importing this module puts the checkout and ``tests/`` on ``sys.path``, so the
scripts run from a checkout without installing the package. The block "what
the bench borrows" below is the one place that names ``tests/support/`` helpers and the
library's internal modules and attributes: when a restructure moves one, that
block changes and no script does.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import http.client
import json
import math
import multiprocessing
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
ROOT = str(BENCH.parent)
OUT = BENCH / "out"
for _path in (os.path.join(ROOT, "tests"), ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import redis

# -- what the bench borrows ---------------------------------------------------------------
# tests/ helpers: the throwaway servers, gunicorn and its client steps, a /proc walker, waits.
from support.gunicorn_server import SECRET_KEY as EXAMPLE_SECRET  # noqa: F401
from support.gunicorn_server import (  # noqa: F401
    GunicornServer,
    Prober,
    beat_age,
    clone,
    instances_in_redis,
    is_json,
    job_token,
    percentile,
    post_cancel,
    post_import,
    prepare,
    rss_kib,
    stall_redis,
    timed_request,
)
from support.redis_server import RedisServer
from support.redis_topologies import RedisClusterServers  # noqa: F401
from support.waiting import wait_until  # noqa: F401
from support.worker_procs import descendants

# The library: its public names, and the internals the benchmarks measure or count through.
from flask_asyncstate import AsyncState, JobContext, serialization  # noqa: F401
from flask_asyncstate import logs as _logs
from flask_asyncstate import metrics as _metrics
from flask_asyncstate import records as _records
from flask_asyncstate import tracing as _tracing
from flask_asyncstate.config import (
    DEFAULTS as CONFIG_DEFAULTS,
)
from flask_asyncstate.owners import OWNER_KEY, request_owner  # noqa: F401
from flask_asyncstate.records import CHILD_COUNTS, FINAL  # noqa: F401
from flask_asyncstate.state import StateAPI  # noqa: F401
from flask_asyncstate.stores import MemoryStore  # noqa: F401
from flask_asyncstate.stores.redis import RedisStore, client_from_url  # noqa: F401

#: The writer's flush interval and the heartbeat interval, the library's defaults (s).
FLUSH = float(CONFIG_DEFAULTS["ASYNCSTATE_FLUSH_INTERVAL"])
HEARTBEAT = float(CONFIG_DEFAULTS["ASYNCSTATE_HEARTBEAT_INTERVAL"])


def observing(metrics: bool, tracer: Any = None) -> None:
    """Metrics on or off, and spans through ``tracer`` (None: off), in this process, as
    ``flask_asyncstate.metrics`` and ``.tracing`` behave with or without their packages
    (metrics need one app set up first: that registers them). ``tracer="api"``: the
    OpenTelemetry API's own tracer, as an app without the SDK has."""
    global _kept_metrics
    if _metrics._metrics is not None:
        _kept_metrics = _metrics._metrics
    receivers = (
        (_metrics.signals.job_started, _metrics._on_started),
        (_metrics.signals.job_finished, _metrics._on_finished),
        (_metrics.signals.store_circuit_changed, _metrics._on_circuit),
    )
    for sent, receiver in receivers:
        sent.disconnect(receiver)
        if metrics:
            sent.connect(receiver, weak=False)
    _metrics._metrics = _kept_metrics if metrics else None
    _tracing.ENABLED = tracer is not None
    _tracing._live = tracer not in (None, "api")  # "api": as long as no provider was set
    if tracer is not None:
        _tracing._tracer = _api_tracer if tracer == "api" else tracer


_kept_metrics: Any = None
_api_tracer: Any = getattr(_tracing, "_tracer", None)


def run_hooks_off(job_id: str, name: str) -> Callable[[], None]:
    """What a run adds when metrics and tracing are off: the log fields, two null contexts."""
    fields, span, gauge = _logs.JobFields, _tracing.run_span, _metrics.running

    def hooks() -> None:
        with fields(job_id, name), span(None), gauge(name):  # off: span() reads nothing
            pass

    return hooks


def start_hooks(name: str) -> Callable[[], None]:
    """What a ``start()`` adds, in the current settings (see :func:`observing`): its span,
    the trace context kept in the document, the count."""
    start_span, started, carry = _tracing.start_span, _tracing.started, _tracing.carry
    counted = _metrics.started

    def hooks() -> None:
        with start_span(name) as span:
            carry({})
            started(span, "0" * 32, True)
        counted(name)

    return hooks


def runtime(ext: AsyncState) -> Any:
    """The per-app runtime of the current app (push an app context first)."""
    return ext.app_state()


def job_records(ext: AsyncState) -> Any:
    """The job records of the current app (push an app context first): ``status(job_id)``
    reads a document as a poll does; ``adopt_child(parent, child)``, ``count_child(parent,
    changes, ended=None)`` and ``child_counts(parent)`` are what the lifecycle keeps a
    parent's ``children`` counts with."""
    return runtime(ext).records


@contextmanager
def children_limit(limit: int) -> Iterator[None]:
    """The most children one parent job may have (``records.MAX_CHILDREN``) set to ``limit``
    for a while, in this process."""
    kept = _records.MAX_CHILDREN
    _records.MAX_CHILDREN = limit
    try:
        yield
    finally:
        _records.MAX_CHILDREN = kept


def signer(ext: AsyncState) -> Any:
    """What signs job ids into tokens (``sign``, ``unsign``)."""
    return runtime(ext).signer


def sign(ext: AsyncState, job_id: str) -> str:
    """The token of ``job_id``, as ``handle.token`` would give it."""
    return str(signer(ext).sign(job_id))


def job_key(ext: AsyncState, job_id: str) -> str:
    """The store key of a job's entry."""
    return str(runtime(ext).records.job_key(job_id))


def documents(ext: AsyncState, ids: Sequence[str]) -> list[dict[str, Any] | None]:
    """The stored documents of ``ids`` (None: no entry), read in one go."""
    return list(runtime(ext).records.statuses(list(ids)))


def wait_listening(ext: AsyncState, timeout: float = 5.0) -> bool:
    """Wait until this process's cancel listener is subscribed (a cancel from now on is heard)."""
    return bool(runtime(ext).store.subscribed.wait(timeout))


def cancel_channel(ext: AsyncState) -> str:
    return str(runtime(ext).store.channel)


def held_events(ext: AsyncState) -> int:
    """Cancel Events the store still holds (0 once every job has finished)."""
    return len(runtime(ext).store.held_keys())


def sweep(ext: AsyncState) -> None:
    """One pass of the listener's once-a-second re-read of the held cancel flags."""
    runtime(ext).store._sweep()


def writer_thread(ext: AsyncState) -> threading.Thread:
    thread = runtime(ext).writer.thread
    assert thread is not None and thread.ident is not None
    return thread  # type: ignore[no-any-return]


def wrap_flush(ext: AsyncState, wrapper: Callable[[Callable[[], None]], None]) -> None:
    """Make each of the writer's flushes run as ``wrapper(original_flush)``."""
    lifecycle = runtime(ext).lifecycle
    original = lifecycle.flush
    lifecycle.flush = lambda: wrapper(original)


def count_notifications(ext: AsyncState) -> list[int] | None:
    """A counter of the messages the listener hands to the watchers (None: no watchers here)."""
    store = runtime(ext).store
    notify = getattr(getattr(store, "watchers", None), "notify", None)
    if notify is None:
        return None
    heard = [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        heard[0] += 1
        return notify(*args, **kwargs)

    store.watchers.notify = counting
    return heard


def watching(ext: AsyncState, name: str) -> Any:
    """A context holding a watcher on a key of ours, as an open ``/events`` stream does."""
    store = runtime(ext).store
    return store.watch(store.key("bench.watch", name))


def rewrite_document(ext: AsyncState, key: str) -> Callable[[], bool]:
    """A call that writes the entry at ``key`` again as it is, as a flush writes a job's."""
    store = runtime(ext).store
    entry = store.read(key, refresh=False)
    assert entry is not None, key
    return lambda: bool(store.write(key, entry.data))


def streams_open(ext: AsyncState) -> dict[str, int]:
    """``/events`` streams open in this process, and the keys with watchers."""
    found = runtime(ext)
    return {"open": found.streams.count(), "watched": found.store.watched_keys()}


def extension(app: Any) -> AsyncState:
    """The extension an app was set up with."""
    return app.extensions["asyncstate"].extension  # type: ignore[no-any-return]


def registered_job(app: Any, name: str) -> Any:
    return extension(app).registered_job(name)


def celery_of(app: Any) -> Any:
    """The Celery app an ``ASYNCSTATE_EXECUTOR = "celery"`` app queues on (None: another)."""
    return getattr(app.extensions["asyncstate"].executor, "celery", None)


def worker_instances(url: str, prefix: str) -> list[dict[str, Any]]:
    """The heartbeat documents of live worker instances under ``prefix``."""
    return [d for d in instances_in_redis(url, prefix) if d.get("role", "web") != "web"]


# -- options ------------------------------------------------------------------------------

#: Exit code of a script run with ``--strict`` that missed a target.
MISSED = 3


def parser(
    doc: str | None,
    full: Mapping[str, Any] | None = None,
    quick: Mapping[str, Any] | None = None,
    helps: Mapping[str, str] | None = None,
) -> argparse.ArgumentParser:
    """A parser with the options every script takes, and one ``--NAME`` per name in ``helps``.

    Such an option's help is ``helps[name]``; its value, when not given, is ``quick[name]``
    with ``--quick`` and ``full[name]`` without (its type is that of ``full[name]``). The
    description is the docstring's first line.
    """
    found = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    found.add_argument("--quick", action="store_true", help="smoke run: the smallest sizes")
    found.add_argument(
        "--redis-url",
        help="use this loopback redis-server (never port 6379) instead of starting one; "
        "run.py passes the one it started",
    )
    found.add_argument(
        "--strict", action="store_true", help=f"exit {MISSED} when a target is not met (CI)"
    )
    found.add_argument("--out", default=str(OUT), help="where <script>.json goes (bench/out)")
    found.set_defaults(_full=dict(full or {}), _quick=dict(quick or {}))
    for name, text in (helps or {}).items():
        big, small = (full or {})[name], (quick or {})[name]
        shown = f"{big:,g}" if isinstance(big, (int, float)) else big
        if small != big:
            shown += (
                f"; quick {small:,g}" if isinstance(small, (int, float)) else f"; quick {small}"
            )
        flag = "--" + name.replace("_", "-")
        found.add_argument(flag, type=type(big), help=f"{text} ({shown})")
    return found


def parse(
    found: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    ranges: Mapping[str, tuple[float, float]] = {},
    lists: Mapping[str, Sequence[str]] = {},
) -> argparse.Namespace:
    """Parse; sized options left unset take their quick or full value; ``args.mode`` says
    which (``quick``, ``full``, or ``custom`` when a size was given).

    ``ranges`` bounds numeric options (inclusive); ``lists`` turns comma-separated
    options into lists of their allowed values.
    """
    args = found.parse_args(argv)
    for name, value in (args._quick if args.quick else args._full).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    # only a run at every full size may stand in the README's summary
    full = all(getattr(args, name) == value for name, value in args._full.items())
    args.mode = "quick" if args.quick else "full" if full else "custom"
    for name, choices in lists.items():
        chosen = [item.strip() for item in getattr(args, name).split(",") if item.strip()]
        if not chosen or set(chosen) - set(choices):
            found.error(f"--{name.replace('_', '-')}: a comma-separated subset of {choices}")
        setattr(args, name, chosen)
    for name, (low, high) in ranges.items():
        if not low <= getattr(args, name) <= high:
            found.error(f"--{name.replace('_', '-')} must be {low:,g}..{high:,g}")
    return args


def sizes(text: str, low: int, high: int, what: str) -> list[int]:
    """``"1,10,100"`` as sorted distinct integers within ``low..high``."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise SystemExit(f"--{what} takes comma-separated integers, got {text!r}") from None
    if not values or values[0] < low or values[-1] > high:
        raise SystemExit(f"--{what} values must be {low}..{high}, got {text!r}")
    return values


# -- targets and the report -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A stated target: ``what`` ``op`` ``limit`` ``unit`` (``op`` is ``<=`` or ``>=``)."""

    what: str
    op: str
    limit: float
    unit: str = ""

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def __str__(self) -> str:
        return f"{self.what} {self.op} {self.limit:,g}{self.unit}"


def checkout() -> str:
    """The commit measured, and whether the work tree had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=BENCH, capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "..")
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def environment(server: str | redis.Redis, *extras: str) -> str:
    """One line saying where the figures come from: versions, machine, CPUs, load; ``extras``."""
    client = redis.Redis.from_url(server) if isinstance(server, str) else server
    try:
        server_version = client.info("server")["redis_version"]
    finally:
        if client is not server:
            client.close()
    line = (
        f"Python {platform.python_version()}, redis-py {redis.__version__}, "
        f"redis-server {server_version} on loopback, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load_average():.2f}"
    )
    return "; ".join([line, *extras])


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


class Report:
    """What one script run found: printed as it comes, written to ``<out>/<script>.json``."""

    def __init__(self, script: str, args: argparse.Namespace) -> None:
        self.name = Path(script).stem
        self.args = args
        self.started = time.monotonic()
        self.blocks: list[str] = []
        self.checks: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.figures: dict[str, Any] = {}
        self.panels: list[dict[str, Any]] = []
        self.notes: list[str] = []
        signal.signal(signal.SIGTERM, _exit_on_sigterm)  # finally blocks stop what was started

    def out(self, *blocks: str) -> None:
        """Print ``blocks`` (captions, tables), a blank line between two, and keep them."""
        for block in blocks:
            print(("\n" if self.blocks else "") + block, flush=True)
            self.blocks.append(block)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> None:
        self.out(markdown_table(header, rows, right))

    def check(self, target: Target, value: float, where: str = "", shown: str = "") -> bool:
        """Record ``value`` against ``target`` (``where``: which row it is); True if met."""
        met = target.met(value)
        self.checks.append(
            {
                "target": str(target),
                "where": where,
                "value": value,
                "shown": shown or f"{fmt(value)}{target.unit}",
                "met": met,
            }
        )
        return met

    def summary(
        self, what: str, ours: str, alternatives: str = "", target: str = "", met: Any = None
    ) -> None:
        """A row of the summary table in bench/README.md (``met``: True, False or None)."""
        self.rows.append(
            {
                "what": what,
                "ours": ours,
                "alternatives": alternatives,
                "target": target,
                "met": met,
            }
        )

    def panel(self, *panels: dict[str, Any]) -> None:
        self.panels += panels

    @property
    def missed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["met"]]

    def finish(self) -> None:
        """Print the targets table, write the JSON, and exit MISSED if ``--strict`` and one missed."""
        if self.checks:
            self.table(
                ["target", "where", "this run", "verdict"],
                [
                    [c["target"], c["where"] or "-", c["shown"], "met" if c["met"] else "NOT MET"]
                    for c in self.checks
                ],
                right=2,
            )
        payload = {
            "script": self.name,
            "mode": self.args.mode,
            "argv": sys.argv[1:],
            "commit": checkout(),
            "date": datetime.date.today().isoformat(),
            "seconds": round(time.monotonic() - self.started, 1),
            "targets": self.checks,
            "summary": self.rows,
            "figures": self.figures,
            "panels": self.panels,
            "notes": self.notes,
            "text": "\n\n".join(self.blocks),
        }
        os.makedirs(self.args.out, exist_ok=True)
        path = os.path.join(self.args.out, f"{self.name}.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=1, default=_jsonable)
        if self.missed and self.args.strict:
            raise SystemExit(MISSED)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(f"{Path(sys.argv[0]).name}: signal {signum}, stopping what it started")


# -- redis-server -------------------------------------------------------------------------


class ExistingServer:
    """A redis-server someone else started (``run.py``): used as is, never stopped here."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"--redis-url must be redis:// on loopback, got {url!r}")
        if parts.port in (None, 6379):
            raise SystemExit(f"--redis-url must name a port other than 6379, got {url!r}")
        self.url = url


@contextmanager
def redis_server(url: str | None = None) -> Iterator[RedisServer | ExistingServer]:
    """A throwaway redis-server on a free loopback port (never 6379), stopped and removed after.

    With ``url`` (``--redis-url``) that server is used and left running.
    """
    if url is not None:
        yield ExistingServer(url)
        return
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


def port_of(url: str) -> int:
    """The port of a ``redis://host:port/db`` URL."""
    return int(url.rsplit(":", 1)[1].split("/")[0])


class CountingConnection(redis.Connection):
    """Counts round trips on the client side, one per command sent and one per pipeline.

    ``sent`` is keyed by :meth:`kind`; make a class with a counter of its own with
    :func:`counting_connection`.
    """

    sent: ClassVar[Counter[str]] = Counter()
    lock = threading.Lock()

    def kind(self) -> str:
        return "all"

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        with self.lock:
            type(self).sent[self.kind()] += 1
        return super().send_packed_command(command, check_health)


def counting_connection(kind: Callable[[Any], str] | None = None) -> type[CountingConnection]:
    """A :class:`CountingConnection` class with a counter of its own.

    ``kind(connection)`` names the count a round trip goes to (default ``"all"``).
    """
    attrs: dict[str, Any] = {"sent": Counter()}
    if kind is not None:
        attrs["kind"] = kind
    return type("Counting", (CountingConnection,), attrs)


def counting_client(
    url: str, kind: Callable[[Any], str] | None = None
) -> tuple[redis.Redis, type[CountingConnection]]:
    """A client whose connections count their round trips, and that counter's class."""
    counter = counting_connection(kind)
    pool = redis.ConnectionPool(connection_class=counter, host="127.0.0.1", port=port_of(url))
    return redis.Redis(connection_pool=pool), counter


def commands_processed(client: Any) -> int:
    """The server's ``total_commands_processed`` (this INFO included)."""
    return int(client.info("stats")["total_commands_processed"])


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


# -- apps -----------------------------------------------------------------------------------

#: Secret shared by the apps of one benchmark (a token signed by one is valid in the other).
SECRET = "bench-secret-not-for-production"
#: ``ASYNCSTATE_KEY_PREFIX`` of the benchmarks' own apps.
KEY_PREFIX = "bench:"


def make_app(
    name: str,
    *,
    redis_url: str | None = None,
    redis_client: Any = None,
    key_prefix: str | None = KEY_PREFIX,
    sessions: bool = False,
    secret_key: str = SECRET,
    celery: Any = None,
    tuning: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[Any, AsyncState]:
    """The benchmarks' app: ``Flask(name)`` with flask-asyncstate, and its extension.

    - jobs in Redis at ``redis_url``, or through ``redis_client`` (a ``RedisCluster``
      too), or, with neither, in the memory store;
    - ``key_prefix``: ``ASYNCSTATE_KEY_PREFIX`` (None: the library's default, to share
      the example app's keys);
    - ``sessions``: Flask-Session keeps the sessions in the same Redis (``redis_url``),
      under ``<key_prefix>session:``, not permanent, as several instances need;
    - ``celery``: the Celery app of ``ASYNCSTATE_EXECUTOR = "celery"``;
    - ``tuning``: the extension's tuning keywords (``{"sse_max_age": 300.0}``);
    - ``config``: further keys; everything else, intervals included, at its default.
    """
    from flask import Flask

    app = Flask(name)
    app.config["SECRET_KEY"] = secret_key
    if key_prefix is not None:
        app.config["ASYNCSTATE_KEY_PREFIX"] = key_prefix
    if redis_url is not None:
        app.config["ASYNCSTATE_REDIS_URL"] = redis_url
    app.config.update(config)
    if sessions:
        if redis_url is None:
            raise ValueError("make_app(sessions=True) needs redis_url: the sessions live there")
        from flask_session import Session

        app.config.update(
            SESSION_TYPE="redis",
            SESSION_REDIS=redis.Redis.from_url(redis_url),
            SESSION_PERMANENT=False,
            SESSION_KEY_PREFIX=f"{key_prefix or ''}session:",
        )
        Session(app)
    return app, AsyncState(app, redis=redis_client, celery=celery, **(tuning or {}))


class Gunicorn(GunicornServer):
    """gunicorn serving a bench app (``app``: ``"_apps:throughput_app()"``, say).

    ``tests/support/gunicorn_server.py``'s server (a free loopback port, a readiness wait, a
    stop that SIGKILLs its own process group), with ``bench/`` on the workers' path
    and the bench's secret. ``reuse_port``: one listening socket per worker, so the
    kernel spreads keep-alive connections over the workers (with one shared socket 16
    connections often land 16/0, which halves a GIL-bound server's throughput);
    ready once every worker listens.
    """

    def __init__(
        self,
        log_dir: str,
        app: str,
        *,
        env: dict[str, str] | None = None,
        reuse_port: bool = False,
        **kwargs: Any,
    ) -> None:
        path = os.pathsep.join([str(BENCH), ROOT, os.environ.get("PYTHONPATH", "")])
        extra = ("--log-level", "warning", *(("--reuse-port",) if reuse_port else ()))
        env = {"SECRET_KEY": SECRET, "PYTHONPATH": path, **(env or {})}
        super().__init__(log_dir, env=env, extra_args=extra, **kwargs)
        self.app = app
        self.reuse_port = reuse_port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [*super().command()[:-1], self.app]

    def start(self) -> Gunicorn:
        super().start()
        deadline = time.monotonic() + self.ready_timeout
        while self.reuse_port and (found := listeners(self.port)) is not None:
            if found >= self.workers:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{found} of {self.workers} gunicorn workers listen")
            time.sleep(0.1)
        return self


@contextmanager
def serving(server: GunicornServer) -> Iterator[GunicornServer]:
    """Start ``server``; its log's tail on stderr if anything fails; stopped in any case."""
    try:
        server.start()
        yield server
    except BaseException:
        sys.stderr.write(f"gunicorn log:\n{server.log_text(4000)}\n")
        raise
    finally:
        server.stop()


# -- processes ------------------------------------------------------------------------------

SPAWN = multiprocessing.get_context("spawn")


class Child:
    """``target(inbox, outbox, *args)`` in a fresh interpreter (spawn), talked to over two queues.

    A failure in the child comes back as a RuntimeError with its traceback; a child that
    dies or goes silent is reported as such. :meth:`stop` joins it, then SIGTERMs and
    SIGKILLs it if it does not end by itself.
    """

    def __init__(self, what: str, target: Callable[..., None], *args: Any) -> None:
        self.what = what
        self.inbox, self.outbox = SPAWN.Queue(), SPAWN.Queue()
        self.proc = SPAWN.Process(
            target=_run_child, args=(target, self.inbox, self.outbox, *args), daemon=True
        )
        self.proc.start()

    def put(self, *message: Any) -> None:
        self.inbox.put(message)

    def get(self, timeout: float = 60.0, expect: str | None = None) -> tuple[Any, ...]:
        """The child's next message (checked to be of kind ``expect``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                message: tuple[Any, ...] = self.outbox.get(timeout=0.5)
            except queue.Empty:
                if not self.proc.is_alive():
                    raise RuntimeError(f"{self.what} exited (code {self.proc.exitcode})") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.what} sent nothing for {timeout:g} s") from None
                continue
            if message and message[0] == "error":
                raise RuntimeError(f"{self.what} failed: {message[1]}\n{message[2]}")
            if expect is not None and message[0] != expect:
                raise RuntimeError(f"{self.what} sent {message[0]!r}, not {expect!r}")
            return message

    def ask(self, *message: Any, timeout: float = 120.0) -> tuple[Any, ...]:
        self.put(*message)
        return self.get(timeout)

    def stop(self, grace: float = 10.0) -> None:
        self.proc.join(grace)
        for end in (self.proc.terminate, self.proc.kill):
            if self.proc.is_alive():
                end()
                self.proc.join(5)


def _run_child(target: Callable[..., None], inbox: Any, outbox: Any, *args: Any) -> None:
    try:
        target(inbox, outbox, *args)
    except BaseException as exc:
        outbox.put(("error", repr(exc), traceback.format_exc()))
        raise


def exited(pid: int) -> bool:
    """True once ``pid`` has exited: gone from /proc, or a zombie not yet reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class Processes:
    """Worker processes started by a script, each in a session of its own; logs in a
    directory, shown when a process dies or does not get ready."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = Path(log_dir)
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        path = self.log_dir / f"{name}-{len(self.procs)}.log"
        with open(path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=BENCH,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append((proc, path))
        return proc

    def check_alive(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for proc, path in self.procs:
            if proc in procs and proc.poll() is not None:
                raise RuntimeError(f"{proc.args[:6]} exited ({proc.returncode}):\n{_tail(path)}")

    def logs(self, procs: list[subprocess.Popen[bytes]]) -> str:
        return "\n".join(f"{path}:\n{_tail(path)}" for proc, path in self.procs if proc in procs)

    def stop(self, procs: list[subprocess.Popen[bytes]] | None = None) -> None:
        """SIGTERM (a warm shutdown) to each one's session, then SIGKILL whatever is left."""
        chosen = [(p, path) for p, path in self.procs if procs is None or p in procs]
        below = {p.pid: descendants(p.pid) for p, _ in chosen if p.poll() is None}
        for proc, _ in chosen:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc, _ in chosen:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc, _ in chosen:
            for pid in below.get(proc.pid, []):  # ours, seen below it before the SIGTERM
                if not exited(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            if proc.poll() is None:  # not reaped: its pid (and group id) is still ours
                _signal_group(proc.pid, signal.SIGKILL)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        self.procs = [(p, path) for p, path in self.procs if (p, path) not in chosen]


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def poll(check: Callable[[], bool], timeout: float, interval: float = 0.0005) -> float | None:
    """``time.monotonic()`` when ``check()`` first held, polled every ``interval``; None: never."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(interval)
    return None


# -- timing and statistics ----------------------------------------------------------------------

K = TypeVar("K")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the garbage collector while timing, as ``timeit`` does."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def timed(body: Callable[[], object]) -> float:
    """Seconds ``body()`` takes (``time.perf_counter``, GC paused)."""
    with gc_paused():
        start = time.perf_counter()
        body()
        return time.perf_counter() - start


def each_timed(
    call: Callable[[], Any], n: int, after: Callable[[Any], object] | None = None
) -> list[float]:
    """µs of each of ``n`` calls, each timed alone (GC paused); ``after(result)`` untimed."""
    clock, out = time.perf_counter, []
    with gc_paused():
        for _ in range(n):
            start = clock()
            result = call()
            out.append((clock() - start) * 1e6)
            if after is not None:
                after(result)
    return out


def in_turns(
    runs: Mapping[K, Callable[[int], float]], n: int, repeats: int, warm: int = 200
) -> dict[K, float]:
    """The median of ``repeats`` runs of ``run(n)`` each, the runs taking turns in every
    repeat (drift hits all alike), after one warm-up ``run(min(n, warm))`` each."""
    for run in runs.values():
        run(min(n, warm))
    samples: dict[K, list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            samples[key].append(run(n))
    return {key: median(values) for key, values in samples.items()}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Latencies:
    """Latencies in ms of one mechanism, and how many were never seen (misses)."""

    label: str
    ms: list[float] = field(default_factory=list)
    misses: int = 0

    def add(self, seconds: float | None) -> None:
        if seconds is None:
            self.misses += 1
        else:
            self.ms.append(seconds * 1000)

    def pct(self, pct: float) -> float:
        return percentile(self.ms, pct) if self.ms else float("nan")

    def cells(self) -> list[str]:
        """``LATENCY_HEADER``'s cells."""
        spread = [fmt(self.pct(p)) for p in (50, 95, 99, 100)]
        return [str(len(self.ms)), *spread, str(self.misses)]


LATENCY_HEADER = ["cancels", "p50 ms", "p95 ms", "p99 ms", "max ms", "misses"]


def fmt(value: float, digits: int = 2) -> str:
    """A figure with a sensible number of digits (``-`` for NaN)."""
    if math.isnan(value):
        return "-"
    if math.isinf(value) or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def ms(seconds: Sequence[float], pct: float) -> str:
    """:func:`percentile` of durations in seconds, as ms with one decimal; ``-`` if none."""
    return f"{percentile(seconds, pct) * 1000:,.1f}" if seconds else "-"


# -- HTTP and load ----------------------------------------------------------------------------


def http_request(
    host: str, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, Any]:
    """One request on a fresh connection to ``host`` (``127.0.0.1:port``): (status, body, headers)."""
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response.headers
    finally:
        conn.close()


def session_cookie(set_cookie: str | None) -> str:
    """``session=<value>`` from a ``Set-Cookie`` header."""
    match = re.search(r"(?:^|[,\s])(session=[^;,\s]+)", set_cookie or "")
    if not match:
        raise RuntimeError(f"no session cookie in {set_cookie!r}")
    return match.group(1)


@dataclass
class LoadRun:
    """One load run of one route."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    commands: int = 0
    #: Connections held by each gunicorn worker, sampled early in the run (None: unknown).
    split: list[int] | None = None
    #: Runs started before this one was kept (restarted for an uneven split).
    restarts: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def commands_per_request(self) -> float:
        return self.commands / self.requests if self.requests else float("nan")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


class WrkLoad:
    """``wrk`` for ``seconds`` in a child process; ``result()`` fails on any non-2xx or socket error."""

    def __init__(self, host: str, path: str, cookie: str, seconds: float, connections: int) -> None:
        self.path, self.seconds = path, seconds
        command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
        command += ["--timeout", "5s", "-H", f"Cookie: {cookie}", f"http://{host}{path}"]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def abort(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=10)

    def result(self) -> LoadRun:
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
        return LoadRun(int(total.group(1)), took, _ms(latency["50"]), _ms(latency["99"]))


class PythonLoad:
    """The fallback: ``connections`` threads, each a keep-alive ``http.client`` loop."""

    def __init__(self, host: str, path: str, cookie: str, seconds: float, connections: int) -> None:
        self.path, self.seconds = path, seconds
        self.deadline = time.monotonic() + seconds
        self.stop = threading.Event()
        self.latencies: list[list[float]] = [[] for _ in range(connections)]
        self.statuses: Counter[int] = Counter()
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.threads = [
            threading.Thread(target=self._client, args=(host, cookie, mine), daemon=True)
            for mine in self.latencies
        ]
        for thread in self.threads:
            thread.start()

    def _client(self, host: str, cookie: str, mine: list[float]) -> None:
        conn = http.client.HTTPConnection(host, timeout=10)
        seen: Counter[int] = Counter()
        try:
            for _ in range(10_000_000):  # bounded; the deadline ends it long before
                if self.stop.is_set() or time.monotonic() >= self.deadline:
                    break
                start = time.perf_counter()
                conn.request("GET", self.path, headers={"Cookie": cookie})
                response = conn.getresponse()
                response.read()
                mine.append((time.perf_counter() - start) * 1000)
                seen[response.status] += 1
        except Exception as exc:  # noqa: BLE001 - reported by result()
            self.errors.append(exc)
        finally:
            conn.close()
            with self.lock:
                self.statuses.update(seen)

    def abort(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def result(self) -> LoadRun:
        for thread in self.threads:
            thread.join(self.seconds + 30)
        took = time.monotonic() - self.started
        if self.errors:
            raise RuntimeError(f"python client failed on {self.path}: {self.errors[0]!r}")
        if set(self.statuses) != {200}:
            raise RuntimeError(f"non-200 answers on {self.path}: {dict(self.statuses)}")
        flat = [v for mine in self.latencies for v in mine]
        return LoadRun(len(flat), took, median(flat), percentile(flat, 99))


def choose_client(wanted: str) -> tuple[str, str]:
    """(load generator, note for the caption): wrk when installed (or asked for), else Python."""
    has_wrk = shutil.which("wrk") is not None
    if wanted == "wrk" and not has_wrk:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (or --client python)")
    if wanted == "python" or (wanted == "auto" and not has_wrk):
        why = "" if has_wrk else "wrk is not installed (apt-get install -y wrk), so "
        return "python", (
            f"{why}a Python threaded client (http.client), itself the bottleneck: "
            "figures understate every route"
        )
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).split("[")[0].strip() or "wrk"
    return "wrk", f"`{first}` -t1"


#: Help of the load runs' sized options (``throughput.py``, ``topologies.py``).
LOAD_SIZED = {"duration": "seconds per load run", "rounds": "load runs per route"}


def add_load_options(found: argparse.ArgumentParser) -> None:
    """The load runs' other options (``throughput.py``, ``topologies.py``)."""
    found.add_argument("--connections", type=int, default=16, help="concurrent connections (16)")
    found.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    found.add_argument("--threads", type=int, default=8, help="gthread threads per worker (8)")
    found.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk if installed)",
    )


LOAD_RANGES = {
    "duration": (1, 120),
    "rounds": (1, 10),
    "connections": (1, 256),
    "workers": (1, 16),
    "threads": (1, 256),
}
#: A warm-up run per route before the measured ones (s).
WARMUP = 1.0
#: Runs restarted at most this many times for an uneven split of connections.
MAX_RESTARTS = 8
#: Seconds into a run when the split of connections across workers is sampled.
SPLIT_CHECK = 0.5


def listeners(port: int) -> int | None:
    """How many sockets listen on ``port`` (one per worker with ``--reuse-port``), or None."""
    found = _ss("-tlnH", f"( sport = :{port} )")
    return None if found is None else len(found.splitlines())


def connection_split(port: int, workers: list[int]) -> list[int] | None:
    """Established connections to ``port`` held by each gunicorn worker, or None."""
    found = _ss("-tnpH", "state", "established", f"( sport = :{port} )")
    if found is None:
        return None
    pids = [int(pid) for pid in re.findall(r"pid=(\d+)", found)]
    return [pids.count(worker) for worker in workers]


def _ss(*args: str) -> str | None:
    if shutil.which("ss") is None:
        return None
    done = subprocess.run(["ss", *args], capture_output=True, text=True, timeout=10, check=False)
    return done.stdout if done.returncode == 0 else None


def load_run(
    server: Gunicorn, path: str, cookie: str, counter: Any, seconds: float, args: argparse.Namespace
) -> LoadRun:
    """One load run, restarted (at most MAX_RESTARTS times) while its connections are lopsided.

    A keep-alive connection stays with the worker that accepted it; a run whose split is
    still uneven :data:`SPLIT_CHECK` s in (a worker holding under half its share) starts
    over. ``counter.info("stats")`` counts the server's commands over the run.
    """
    load_class = WrkLoad if args.client == "wrk" else PythonLoad
    workers = server.current_workers()
    for restart in range(MAX_RESTARTS + 1):
        before = commands_processed(counter)
        load = load_class(server.host, path, cookie, seconds, args.connections)
        time.sleep(min(SPLIT_CHECK, seconds / 2))
        split = connection_split(server.port, workers)
        lopsided = split is not None and min(split) * 2 * len(split) < args.connections
        if lopsided and restart < MAX_RESTARTS:
            load.abort()
            time.sleep(0.2)  # let the workers drop the old connections
            continue
        run = load.result()
        run.commands = commands_processed(counter) - before - 1  # minus our INFO
        run.split, run.restarts = split, restart
        return run
    raise AssertionError("unreachable")


def median_run(runs: list[LoadRun]) -> LoadRun:
    """The run with the median requests/s (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r.rps)
    return ordered[(len(ordered) - 1) // 2]


def splits(runs: list[LoadRun]) -> str:
    """Each run's connections per worker, ``10/6, 7/9``."""
    return ", ".join("/".join(map(str, r.split)) if r.split else "?" for r in runs)


# -- tables and chart panels ----------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> str:
    """A markdown table; columns from index ``right`` on are right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def panel(
    title: str,
    unit: str,
    bars: Sequence[tuple[Any, ...]],
    *,
    target: float | None = None,
    target_label: str = "",
    reference: float | None = None,
) -> dict[str, Any]:
    """A panel of run.py's chart: horizontal bars on a log scale.

    ``bars`` holds ``(label, value)`` or ``(label, value, target)`` (a target marker on
    that bar); ``target`` draws one dashed line across the panel, ``reference`` a thin
    grey one (1x, say).
    """
    rows = [[bar[0], float(bar[1]), bar[2] if len(bar) > 2 else None] for bar in bars]
    return {
        "title": title,
        "unit": unit,
        "bars": rows,
        "target": target,
        "target_label": target_label,
        "reference": reference,
    }


def loglog_panel(
    title: str,
    x_label: str,
    unit: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    target: float | None = None,
    target_label: str = "",
) -> dict[str, Any]:
    """A panel of lines over sizes, both axes on a log scale."""
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
