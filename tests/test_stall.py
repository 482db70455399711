"""A Redis that stops answering (SIGSTOP, or ``CLIENT PAUSE``) for 8 s under real gunicorn.

The example app runs under gunicorn (1 worker x 8 gthread threads) with its jobs
in a redis-server of this test's own (``FLASK_ASYNCSTATE_REDIS_URL``; the
session's shared server is never stopped) and its sessions in files
(``SESSION_DIR``), so ``GET /`` never touches Redis. One import of about 13 s
runs; 12 pollers sharing its session read ``/progress`` once a second, and a
prober reads ``GET /`` every 200 ms, while Redis stalls for 8 s.

What must hold (``ASYNCSTATE_REDIS_TIMEOUT`` 1 s and ``ASYNCSTATE_CIRCUIT_RESET``
2 s, their defaults):

- ``GET /`` answers in under 1 s throughout: stuck Redis calls do not eat the
  server's threads;
- during the stall ``/progress`` answers 503 JSON with ``Retry-After`` within
  1.5 s, and within 50 ms (p90, later half of the stall) once the circuit
  breaker is open;
- after the stall ``/progress`` answers 200 again within the ``Retry-After`` of
  the first answer after resume (+1 s);
- the job still ends ``succeeded`` with its final document, and a second job
  started after the stall can be cancelled.

Marked ``reliability``; each case prints the latency percentiles it saw.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from support.gunicorn_server import (
    Prober,
    Sample,
    clone,
    is_json,
    job_token,
    percentile,
    post_cancel,
    post_import,
    prepare,
    spread,
    stall_redis,
)
from support.redis_server import RedisServer
from support.waiting import WaitTimeout, wait_until

pytestmark = pytest.mark.reliability

STALL = 8.0
POLLERS = 12
#: The example import: 13 batches of 10 products, 1 s each.
PRODUCTS, BATCH, PAUSE = 130, 10, 1.0
PAGE_LIMIT = 1.0  # GET / must always answer within this
STALLED_LIMIT = 1.5  # /progress during the stall: 503 within this (REDIS_TIMEOUT + slack)
OPEN_LIMIT = 0.05  # /progress once the circuit is open: p90 within this
RESUME_SLACK = 1.0


@pytest.fixture
def dedicated_redis() -> Iterator[RedisServer]:
    """A redis-server for this test alone: stalling it cannot disturb the session's one."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)  # a stopped server cannot act on SIGTERM
        server.stop()


def _latencies(samples: Sequence[Sample]) -> list[float]:
    return [s.took for s in samples]


def _progress_doc(client: requests.Session, url: str, token: str) -> dict[str, Any] | None:
    try:
        answer = client.get(f"{url}/asyncstate/progress/{token}", timeout=10)
    except requests.RequestException:
        return None
    return answer.json() if answer.status_code == 200 and is_json(answer) else None


def _wait_status(
    client: requests.Session, url: str, token: str, wanted: Callable[[str], bool], timeout: float
) -> dict[str, Any] | None:
    """Poll ``token``'s document until ``wanted(status)``; the document, or None at timeout
    (the caller reports it with everything else it saw)."""

    def reached() -> dict[str, Any] | None:
        doc = _progress_doc(client, url, token)
        return doc if doc is not None and wanted(doc["status"]) else None

    try:
        return wait_until(reached, timeout, interval=0.25)
    except WaitTimeout:
        return None


@pytest.mark.parametrize("how", ["sigstop", "pause"])
def test_redis_stall_fails_fast_and_loses_nothing(
    how: str, serve, dedicated_redis: RedisServer, tmp_path: Path
) -> None:
    server = serve(
        workers=1,
        threads=8,
        env={
            "FLASK_ASYNCSTATE_REDIS_URL": dedicated_redis.url,
            "SESSION_DIR": str(tmp_path / "sessions"),
            "EXAMPLE_PRODUCTS": str(PRODUCTS),
            "EXAMPLE_BATCH": str(BATCH),
            "EXAMPLE_PAUSE": str(PAUSE),
        },
    )
    url = server.url
    starter = requests.Session()
    csrf = prepare(starter, url)
    token = job_token(post_import(starter, url, csrf))
    assert token, f"the import did not start\n{server.log_text()}"
    assert _wait_status(starter, url, token, lambda s: s == "running", 10), "job not running"

    page = Prober(lambda: requests.get(url + "/", timeout=10), every=0.2)
    progress = f"{url}/asyncstate/progress/{token}"
    pollers = [  # each its own connection; the token is bound to the starter's session
        Prober(partial(clone(starter).get, progress, timeout=10), every=1.0, offset=n / POLLERS)
        for n in range(POLLERS)
    ]
    for p in (page, *pollers):
        p.start()
    final: dict[str, Any] | None = None
    try:
        # "before": every poller and the page prober answered a couple of times
        wait_until(
            lambda: all(len(p.samples) >= 2 for p in pollers) and len(page.samples) >= 10,
            10,
            interval=0.05,
            message="answers before the stall",
        )
        stall_start = time.monotonic()
        stall_end = stall_redis(dedicated_redis, how, STALL)
        final = _wait_status(starter, url, token, lambda s: s not in ("queued", "running"), 40)
        final_seen = time.monotonic()
        # one more round of polls after the job's end was seen
        wait_until(
            lambda: all(any(s.sent > final_seen for s in p.samples) for p in pollers),
            10,
            interval=0.05,
            message="a poll after the job ended",
        )
    finally:
        for p in (page, *pollers):
            p.stop()

    # a second job, started and cancelled after the stall
    second = job_token(post_import(starter, url, csrf))
    cancel_answer = None
    cancelled = None
    if second and _wait_status(starter, url, second, lambda s: s == "running", 10):
        cancel_answer = post_cancel(starter, url, second, csrf)
        cancelled = _wait_status(starter, url, second, lambda s: s not in ("queued", "running"), 10)

    polls = sorted((s for p in pollers for s in p.samples), key=lambda s: s.sent)
    before = [s for s in polls if s.answered < stall_start]
    # sent while Redis is stalled, early enough that the answer is due before it is back
    during = [s for s in polls if stall_start <= s.sent <= stall_end - STALLED_LIMIT]
    later_half = [s for s in during if s.sent >= stall_start + STALL / 2]
    resumed = [s for s in polls if s.sent >= stall_end]
    problems: list[str] = []

    # GET / never touches Redis: always quick
    slow_pages = [s for s in page.samples if s.status != 200 or s.took >= PAGE_LIMIT]
    if slow_pages:
        problems.append(
            f"GET / (no Redis) failed or took >= {PAGE_LIMIT} s {len(slow_pages)} times of "
            f"{len(page.samples)}: {[(s.status, round(s.took, 2)) for s in slow_pages[:5]]}"
        )

    odd = [s for s in polls if s.status not in (200, 503) or not s.json]
    if odd:
        problems.append(
            f"/progress answers other than JSON 200/503: "
            f"{Counter((s.status, s.error) for s in odd).most_common(3)}"
        )
    if any(s.status != 200 for s in before) or not before:
        problems.append(f"/progress before the stall: {Counter(s.status for s in before)}")

    not_503 = [s for s in during if s.status != 503 or not s.retry_after]
    slow_503 = [s for s in during if s.took > STALLED_LIMIT]
    if not during or not_503:
        problems.append(
            f"/progress during the stall: {Counter(s.status for s in during)}, "
            f"{sum(not s.retry_after for s in during)} without Retry-After; "
            "expected 503 JSON with Retry-After only"
        )
    if slow_503:
        problems.append(
            f"/progress during the stall took up to {max(_latencies(slow_503)):.2f} s "
            f"({len(slow_503)} over {STALLED_LIMIT} s)"
        )
    open_p90 = percentile(_latencies(later_half), 90) if later_half else float("inf")
    if open_p90 > OPEN_LIMIT:
        slow = [
            f"{s.sent - stall_start:.2f}+{s.took:.2f}" for s in later_half if s.took > OPEN_LIMIT
        ]
        problems.append(
            f"/progress in the later half of the stall (circuit open): "
            f"{spread(_latencies(later_half))}; p90 over {OPEN_LIMIT * 1000:.0f} ms: "
            f"{len(slow)} of {len(later_half)} slower, sent at stall+s (+took s) "
            f"{', '.join(slow)}"
        )

    recovery = "no answer after the stall"
    if resumed:
        first = min(resumed, key=lambda s: s.answered)
        ok = [s for s in resumed if s.status == 200]
        if first.status == 200:
            recovery = "first answer after the stall already 200"
        elif not ok:
            problems.append(
                f"/progress never answered 200 after the stall "
                f"({Counter(s.status for s in resumed)})"
            )
        else:
            back = min(s.answered for s in ok) - first.answered
            try:
                wait = float(first.retry_after or "")
            except ValueError:
                wait = float("nan")
                problems.append(
                    f"first answer after the stall: {first.status} with "
                    f"Retry-After {first.retry_after!r}"
                )
            recovery = (
                f"first answer after the stall {first.status} Retry-After "
                f"{first.retry_after}, 200 again {back:.2f} s later"
            )
            if not back <= wait + RESUME_SLACK:
                problems.append(f"{recovery}: later than Retry-After + {RESUME_SLACK:.0f} s")
    else:
        problems.append(recovery)

    if (
        final is None
        or final["status"] != "succeeded"
        or final.get("result") != {"imported": PRODUCTS}
        or final.get("current") != PRODUCTS
    ):
        problems.append(f"the job that ran through the stall ended with {final}")
    if cancelled is None or cancelled["status"] != "cancelled":
        problems.append(
            f"second job after the stall: start {bool(second)}, cancel answered "
            f"{getattr(cancel_answer, 'status_code', None)}, ended "
            f"{cancelled and cancelled['status']}"
        )

    pages = page.samples
    page_phases = "; ".join(
        f"{name} {spread(_latencies(part))}"
        for name, part in (
            ("before", [s for s in pages if s.answered < stall_start]),
            ("during", [s for s in pages if stall_start <= s.sent < stall_end]),
            ("after", [s for s in pages if s.sent >= stall_end]),
        )
    )
    stalled = "SIGSTOP" if how == "sigstop" else "CLIENT PAUSE ALL"
    observed = [
        (
            f"Redis stalled {STALL:.0f} s by {stalled}; {POLLERS} pollers at 1/s, "
            "gunicorn 1 worker x 8 threads"
        ),
        f"GET / (no Redis): {page_phases}",
        f"/progress before: {spread(_latencies(before))}",
        (
            f"/progress during: {dict(Counter(s.status for s in during))} "
            f"{spread(_latencies(during))}; later half {spread(_latencies(later_half))}"
        ),
        (
            f"/progress after: {dict(Counter(s.status for s in resumed))} "
            f"{spread(_latencies(resumed))}; {recovery}"
        ),
        (
            f"job through the stall: {final and final['status']} {final and final.get('result')} "
            f"(seen {final_seen - stall_end:.1f} s after resume); second job "
            f"{cancelled and cancelled['status']} after POST /cancel"
        ),
    ]
    if problems:
        pytest.fail(
            "\n".join(problems)
            + "\nobserved:\n  "
            + "\n  ".join(observed)
            + f"\n--- gunicorn log (tail) ---\n{server.log_text(4000)}",
            pytrace=False,
        )
    print("\n".join(observed))
