"""Helpers shared by the benchmark scripts: paths, a throwaway redis-server, timing, tables.

Importing this module puts the checkout and ``tests/`` on ``sys.path``, so the
scripts run from a checkout without installing the package and can use
``tests/redis_server.py``'s :class:`RedisServer` (a free loopback port, never 6379).
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
from typing import Any
from urllib.parse import urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (os.path.join(ROOT, "tests"), ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import redis
from redis_server import RedisServer

#: Secret shared by the apps of one benchmark (a token signed by one is valid in the other).
SECRET = "bench-secret-not-for-production"


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


# -- output ---------------------------------------------------------------------


def environment(client: redis.Redis) -> str:
    """One line saying where the figures come from."""
    server_version = client.info("server")["redis_version"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"Python {platform.python_version()}, redis-py {redis.__version__}, "
        f"redis-server {server_version} on loopback, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f}"
    )


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--redis-url`` and ``--json``, understood by every benchmark script."""
    parser.add_argument(
        "--redis-url",
        help="use this loopback redis-server (never port 6379) instead of starting one; "
        "run.py passes the one it started",
    )
    parser.add_argument(
        "--json", metavar="FILE",
        help="also write the figures (and the bars of run.py's chart) to this JSON file",
    )


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` (if given) for run.py's report and chart."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1)


def panel(
    title: str, unit: str, bars: Sequence[tuple[Any, ...]], *,
    target: float | None = None, target_label: str = "", reference: float | None = None,
) -> dict[str, Any]:
    """One panel of run.py's chart: horizontal bars on a log scale.

    ``bars`` holds ``(label, value)`` or ``(label, value, target)`` (a target marker on
    that bar); ``target`` draws one dashed line across the panel, ``reference`` a
    thin grey one (1x, say).
    """
    rows = [[bar[0], float(bar[1]), bar[2] if len(bar) > 2 else None] for bar in bars]
    return {
        "title": title, "unit": unit, "bars": rows,
        "target": target, "target_label": target_label, "reference": reference,
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> str:
    """A markdown table; columns from index ``right`` on are right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
