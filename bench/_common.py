"""Helpers shared by the benchmark scripts: paths, a throwaway redis-server, the app factory, timing, tables.

Importing this module puts the checkout and ``tests/`` on ``sys.path``, so the
scripts run from a checkout without installing the package and can use
``tests/redis_server.py``'s :class:`RedisServer` (a free loopback port, never 6379)
and ``tests/gunicorn_server.py``.

One copy of each: the throwaway server (:func:`redis_server`), the app every
benchmark that builds one builds (:func:`make_app`), the line saying where the
figures come from (:func:`environment`), the options every script takes
(:func:`add_common_options`, :func:`fill_defaults`), timing with the GC paused,
nearest-rank percentiles, and markdown tables.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (os.path.join(ROOT, "tests"), ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import redis
from redis_server import RedisServer

if TYPE_CHECKING:
    from flask import Flask

    from flask_asyncstate import AsyncState

#: Secret shared by the apps of one benchmark (a token signed by one is valid in the other).
SECRET = "bench-secret-not-for-production"
#: ``ASYNCSTATE_KEY_PREFIX`` of the benchmarks' own apps.
KEY_PREFIX = "bench:"


# -- redis-server ---------------------------------------------------------------


class ExistingServer:
    """A redis-server someone else started (``run.py``): used as is, never stopped here."""

    def __init__(self, url: str) -> None:
        self.url = url


def check_bench_url(url: str) -> str:
    """Refuse anything but a loopback Redis on a port other than 6379 (a real one may live there)."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--redis-url must be redis:// on loopback, got {url!r}")
    if parts.port in (None, 6379):
        raise SystemExit(f"--redis-url must name a port other than 6379, got {url!r}")
    return url


@contextmanager
def redis_server(url: str | None = None) -> Iterator[RedisServer | ExistingServer]:
    """A throwaway redis-server on a free port, stopped and its directory removed after.

    With ``url`` (``--redis-url``, which ``run.py`` passes so that every benchmark of
    one run uses the one server it started), that server is used and left running.
    """
    if url is not None:
        yield ExistingServer(check_bench_url(url))
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
    """Counts network round trips in ``sent``: one per command sent, one per pipeline.

    The same counting as tests/test_jobs_cross_process.py; use
    :func:`counting_connection_class` to get a subclass with a counter of its own.
    """

    sent = 0

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        type(self).sent += 1
        return super().send_packed_command(command, check_health)


def counting_connection_class() -> type[CountingConnection]:
    """A fresh :class:`CountingConnection` subclass, so each library gets its own counter."""
    return type("CountingConnection", (CountingConnection,), {"sent": 0})


def counting_client(url: str, connection_class: type[redis.Connection]) -> redis.Redis:
    pool = redis.ConnectionPool(
        connection_class=connection_class, host="127.0.0.1", port=port_of(url)
    )
    return redis.Redis(connection_pool=pool)


# -- the app --------------------------------------------------------------------


def make_app(
    name: str,
    *,
    redis_url: str | None = None,
    redis_client: redis.Redis | None = None,
    key_prefix: str | None = KEY_PREFIX,
    sessions: bool = False,
    secret_key: str = SECRET,
    tuning: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[Flask, AsyncState]:
    """The benchmarks' app: ``Flask(name)`` with flask-asyncstate, and its extension.

    - jobs in Redis at ``redis_url`` (``ASYNCSTATE_REDIS_URL``), or through
      ``redis_client`` (``AsyncState(app, redis=...)``), or, with neither, in
      the memory store;
    - ``key_prefix``: ``ASYNCSTATE_KEY_PREFIX`` (``None``: the library's default,
      to share the example app's keys);
    - ``sessions``: Flask-Session keeps the sessions in the same Redis
      (``redis_url``), under ``<key_prefix>session:``, not permanent, as several
      instances need (see the deployment docs);
    - ``secret_key``: ``SECRET_KEY`` (tokens signed by one app are valid in
      another with the same key);
    - ``tuning``: the extension's tuning keywords (``{"sse_max_age": 300.0}``);
    - ``config``: further config keys (``ASYNCSTATE_MAX_WORKERS=4``, ...);
      everything else, flush and heartbeat intervals included, at its default.

    The library is imported here, not at the top, so that ``run.py`` does not
    need it.
    """
    from flask import Flask

    from flask_asyncstate import AsyncState

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
    return app, AsyncState(app, redis=redis_client, **(tuning or {}))


# -- timing ---------------------------------------------------------------------


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


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[int(rank) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile_ms(seconds: Sequence[float], pct: float) -> str:
    """:func:`percentile` of durations in seconds, as ms with one decimal; ``-`` if none."""
    return f"{percentile(seconds, pct) * 1000:,.1f}" if seconds else "-"


# -- output ---------------------------------------------------------------------


def environment(server: str | redis.Redis, *extras: str) -> str:
    """One line saying where the figures come from, printed above every script's tables.

    Python, redis-py and redis-server versions, the OS and machine, the CPU count and
    the 1-minute load average now; then ``extras`` (versions of the alternatives, the
    clock used, ...), all separated by ``; ``. ``server`` is a client, or the URL of
    the server to ask (a client is opened and closed for it).
    """
    client = redis.Redis.from_url(server) if isinstance(server, str) else server
    try:
        server_version = client.info("server")["redis_version"]
    finally:
        if client is not server:
            client.close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    line = (
        f"Python {platform.python_version()}, redis-py {redis.__version__}, "
        f"redis-server {server_version} on loopback, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f}"
    )
    return "; ".join([line, *extras])


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--redis-url`` and ``--json``, understood by every benchmark script."""
    parser.add_argument(
        "--redis-url",
        help="use this loopback redis-server (never port 6379) instead of starting one; "
        "run.py passes the one it started",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="also write the figures (and the bars of run.py's chart) to this JSON file",
    )


def fill_defaults(
    args: argparse.Namespace, full: dict[str, Any], quick: dict[str, Any]
) -> argparse.Namespace:
    """Options left unset (``None``) take their ``quick`` value with ``--quick``, else ``full``."""
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` (if given) for run.py's report and chart."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1)


def panel(
    title: str,
    unit: str,
    bars: Sequence[tuple[Any, ...]],
    *,
    target: float | None = None,
    target_label: str = "",
    reference: float | None = None,
) -> dict[str, Any]:
    """One panel of run.py's chart: horizontal bars on a log scale.

    ``bars`` holds ``(label, value)`` or ``(label, value, target)`` (a target marker on
    that bar); ``target`` draws one dashed line across the panel, ``reference`` a
    thin grey one (1x, say).
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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> str:
    """A markdown table; columns from index ``right`` on are right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
