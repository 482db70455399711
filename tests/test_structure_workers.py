"""Child jobs on RQ workers (issue 26): 200 children over 2 forking workers, totals exact;
a cancel of the parent ends every child; a child killed with its worker is counted lost.
Real worker processes, one redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from support.waiting import wait_until
from support.worker_procs import XHR, Engine

from flask_asyncstate.status import FINAL

pytestmark = [pytest.mark.reliability, pytest.mark.workers]


@pytest.fixture
def engine(redis_server: Any, tmp_path: Any) -> Iterator[Engine]:
    found = Engine("rq", redis_server.url, tmp_path)
    try:
        found.start_web()
        found.start_workers(2)
        yield found
    finally:
        found.close()


def _start(url: str, s: requests.Session, name: str, *args: Any) -> dict[str, str]:
    answer = s.post(f"{url}/start/{name}", json=list(args), timeout=5)
    assert answer.status_code == 202, answer.text
    return answer.json()


def _doc(url: str, s: requests.Session, token: str) -> dict[str, Any]:
    return s.get(f"{url}/asyncstate/progress/{token}", timeout=5).json()


def _final(url: str, s: requests.Session, token: str, timeout: float) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def ended() -> bool:
        seen[:] = [_doc(url, s, token)]
        return seen[0]["status"] in FINAL

    wait_until(ended, timeout, interval=0.1, message=lambda: f"a final status, got {seen}")
    return seen[0]


def test_two_hundred_children_over_two_rq_workers_end_with_exact_totals(engine: Engine) -> None:
    s, url = requests.Session(), engine.webs[0][1]
    began = time.monotonic()
    parent = _start(url, s, "batch", 200)
    doc = _final(url, s, parent["token"], 120)
    took = time.monotonic() - began
    assert doc["status"] == "succeeded", doc
    expected = {"total": 200, "queued": 0, "running": 0, "succeeded": 180, "failed": 20}
    assert {k: doc["children"][k] for k in expected} == expected, doc["children"]
    assert doc["result"]["succeeded"] == 180
    assert [(st["name"], st["status"]) for st in doc["stages"]] == [
        ("spawn", "done"),
        ("wait", "done"),
    ]
    pids = {int(p) for p in engine.redis.lrange(f"{engine.prefix}leaf-pids", 0, -1)}
    print(
        f"200 children on 2 RQ workers in {took:.1f} s ({len(pids)} work horses): {doc['children']}"
    )


def test_cancelling_a_parent_on_rq_ends_every_child(engine: Engine) -> None:
    s, url = requests.Session(), engine.webs[0][1]
    parent = _start(url, s, "batch", 40, 5.0)  # each child runs up to 5 s

    def waiting_for_children() -> bool:
        doc = _doc(url, s, parent["token"])
        return doc["stage"] == "wait" and (doc["children"] or {}).get("running", 0) >= 1

    wait_until(waiting_for_children, 30, interval=0.05)
    asked = time.monotonic()
    answer = s.post(f"{url}/asyncstate/cancel/{parent['token']}", headers=XHR, timeout=5)
    assert answer.status_code == 202
    doc = _final(url, s, parent["token"], 30)

    def settled() -> bool:
        counts = _doc(url, s, parent["token"])["children"]
        return counts["queued"] + counts["running"] == 0

    wait_until(
        settled,
        30,
        interval=0.1,
        message=lambda: f"every child final: {_doc(url, s, parent['token'])}",
    )
    took = time.monotonic() - asked
    counts = _doc(url, s, parent["token"])["children"]
    assert counts["total"] == 40 and counts["cancelled"] >= 38, counts  # one or two ran out
    assert counts["cancelled"] + counts["succeeded"] + counts["failed"] == 40, counts
    print(f"parent {doc['status']}; every child final {took:.1f} s after the cancel: {counts}")


def test_a_child_killed_with_its_worker_is_counted_lost(engine: Engine) -> None:
    s, url = requests.Session(), engine.webs[0][1]
    parent = _start(url, s, "batch", 4, 30.0)  # children that run long
    wait_until(
        lambda: ((_doc(url, s, parent["token"]).get("children") or {}).get("running") or 0) >= 1,
        30,
        interval=0.05,
    )
    # The worker whose horse runs a child (not the one running the parent): the whole machine.
    pids = {int(p) for p in engine.redis.lrange(f"{engine.prefix}leaf-pids", 0, -1)}
    from support.worker_procs import descendants

    victim = next(w for w in engine.workers if pids & set(descendants(w.pid)))
    engine.kill_worker(victim)

    def counted() -> bool:
        return (_doc(url, s, parent["token"])["children"]["lost"] or 0) >= 1

    wait_until(counted, 30, interval=0.2, message="the killed child counted lost")
    counts = _doc(url, s, parent["token"])["children"]
    answer = s.post(f"{url}/asyncstate/cancel/{parent['token']}", headers=XHR, timeout=5)
    assert answer.status_code == 202
    print(f"a child's worker SIGKILLed: {counts}")
