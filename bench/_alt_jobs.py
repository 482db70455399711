"""Job functions run by RQ workers in the benchmarks.

RQ refuses functions defined in ``__main__``, and its workers import a job's
function by dotted name, so they live in this importable module (the bench
scripts put ``bench/`` on ``sys.path``; spawned processes inherit it).
"""

from __future__ import annotations

import time

import redis
from rq import get_current_job


def noop() -> None:
    """The function of the RQ job whose meta the per-call benchmark saves (never run)."""


def progress_job(n: int, pace: float) -> int:
    """Report ``n`` progress steps through ``job.meta``; sleep ``pace`` s every 100 steps."""
    job = get_current_job()
    assert job is not None
    for i in range(1, n + 1):
        job.meta["progress"] = {"current": i, "total": n, "message": f"{i:,} of {n:,} rows"}
        job.save_meta()
        if pace and i % 100 == 0:
            time.sleep(pace)
    return n


def wait_job(url: str, running_key: str, seconds: float) -> str:
    """Say "running" through ``running_key``, then sleep until stopped (or ``seconds`` pass)."""
    client = redis.Redis.from_url(url)
    client.set(running_key, "1", ex=60)
    client.close()
    time.sleep(seconds)
    return "not stopped"
