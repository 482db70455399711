"""Helpers shared by the benchmark scripts: paths, a throwaway redis-server, timing, tables.

Importing this module puts the checkout and ``tests/`` on ``sys.path``, so the
scripts run from a checkout without installing the package and can use
``tests/redis_server.py``'s :class:`RedisServer` (a free loopback port, never 6379).
"""

from __future__ import annotations

import gc
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (os.path.join(ROOT, "tests"), ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import redis  # noqa: E402
from redis_server import RedisServer  # noqa: E402

#: Secret shared by the apps of one benchmark (a token signed by one is valid in the other).
SECRET = "bench-secret-not-for-production"


# -- redis-server ---------------------------------------------------------------


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server on a free port, stopped and its directory removed after."""
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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> str:
    """A markdown table; columns from index ``right`` on are right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
