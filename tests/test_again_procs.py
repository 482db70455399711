"""Jobs that run again across real processes (issue 24): retries on RQ and Celery workers, a
resumable import whose instance is SIGKILLed, stopped by a gunicorn deploy or by a worker's
cold stop, and ten instances racing for one lost job. Thread-pool cases in one process:
tests/test_again.py. Timings: bench/again.py.

Every process serves ``tests/support/worker_app.py`` with ``WT_AGAIN=1`` on one
redis-server: its jobs list each run and each item processed in Redis, so the test sees
what ran where, and how often, whichever process ran it.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support.again_procs import AppGunicorn, racing_instance
from support.waiting import wait_until
from support.worker_procs import Engine, descendants, job_process

from flask_asyncstate.status import FINAL

pytestmark = [pytest.mark.reliability]

HEARTBEAT = 0.5  # worker_app's ASYNCSTATE_HEARTBEAT_INTERVAL
FLUSH = 0.05  # worker_app's ASYNCSTATE_FLUSH_INTERVAL
ITEMS = 1000
PAUSE = 0.005  # seconds an item takes at least (import_items' sleep)
STOP_AT = 400
#: Items one flush interval holds at most: what a death may leave done but not saved.
PER_FLUSH = round(FLUSH / PAUSE)
#: A generous bound of the items a killed run did whose cursor was not saved yet.
KILLED_BOUND = 2 * PER_FLUSH + 1


def again_engine(kind: str, redis_url: str, log_dir: Path) -> Engine:
    """The processes of one test, serving worker_app with the jobs that run again;
    ``kind`` ``"threads"``: web instances running jobs in their thread pools, no workers."""
    engine = Engine("rq" if kind == "threads" else kind, redis_url, log_dir)
    engine.env["WT_AGAIN"] = "1"
    if kind == "threads":
        engine.env["WT_EXECUTOR"] = "threads"
        engine.kind = "threads"
    return engine


# -- what the jobs left in Redis --------------------------------------------------------------


def stored(engine: Engine, job_id: str) -> dict[str, Any]:
    raw = engine.redis.hget(f"{engine.prefix}{{flask_asyncstate.job:{job_id}}}", "d")
    assert raw is not None, job_id
    return dict(json.loads(raw))


def items(engine: Engine, job_id: str) -> list[int]:
    return [int(i) for i in engine.redis.lrange(f"{engine.prefix}mark:items:{job_id}", 0, -1)]


def item_count(engine: Engine, job_id: str) -> int:
    return int(engine.redis.llen(f"{engine.prefix}mark:items:{job_id}"))


def runs(engine: Engine, job_id: str) -> list[dict[str, Any]]:
    raw = engine.redis.lrange(f"{engine.prefix}mark:run-log:{job_id}", 0, -1)
    return [json.loads(r) for r in raw]


# -- HTTP, as the browser does it ---------------------------------------------------------------


def start(s: requests.Session, url: str, name: str, *args: Any) -> dict[str, str]:
    answer = s.post(f"{url}/start/{name}", json=list(args), timeout=5)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def progress(s: requests.Session, url: str, token: str) -> dict[str, Any]:
    answer = s.get(f"{url}/asyncstate/progress/{token}", timeout=5)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def final(
    s: requests.Session, url: str, token: str, timeout: float = 30, seen: set[Any] | None = None
) -> dict[str, Any]:
    """Poll until the job is final; ``seen`` collects (status, attempt, retry_at set, resumed)."""
    last: list[dict[str, Any]] = []

    def ended() -> bool:
        last[:] = [progress(s, url, token)]
        doc = last[0]
        if seen is not None:
            seen.add((doc["status"], doc["attempt"], doc["retry_at"] is not None, doc["resumed"]))
        return doc["status"] in FINAL

    wait_until(ended, timeout, interval=0.02, message=lambda: f"a final status, got {last}")
    return last[0]


def check_import(
    engine: Engine, job: dict[str, str], doc: dict[str, Any], bound: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """The import ended right, each item processed at least once, at most ``bound`` twice;
    its two runs and the items done twice."""
    assert (doc["status"], doc["attempt"], doc["resumed"]) == ("succeeded", 2, True), doc
    counts = Counter(items(engine, job["id"]))
    assert sorted(counts) == list(range(ITEMS)), set(range(ITEMS)) - set(counts)
    twice = sorted(i for i, n in counts.items() if n > 1)
    assert max(counts.values()) <= 2, counts.most_common(3)
    first, second = runs(engine, job["id"])  # two runs, no more
    assert (first["attempt"], first["resumed"]) == (1, False)
    assert (second["attempt"], second["resumed"]) == (2, True)
    assert doc["result"] == ITEMS - second["cursor"]  # the resumed run skipped what was done
    assert len(twice) <= bound, twice
    assert twice == list(range(second["cursor"], second["cursor"] + len(twice)))
    return [first, second], twice


# -- 1. retries on workers ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["rq", "celery"])
def workers(
    request: pytest.FixtureRequest, redis_server: Any, tmp_path_factory: Any
) -> Iterator[Engine]:
    """A web instance and two workers of one engine."""
    found = again_engine(request.param, redis_server.url, tmp_path_factory.mktemp(request.param))
    try:
        found.start_web()
        found.start_workers(2)
        yield found
    finally:
        found.close()


def worker_pids(engine: Engine) -> set[int]:
    return {p for w in engine.workers for p in [w.pid, *descendants(w.pid)]}


def on_a_worker(engine: Engine, run: dict[str, Any]) -> bool:
    """The run was in a worker process, or in a process of one (a work horse gone since)."""
    mains = {w.pid for w in engine.workers}
    return run["pid"] in mains or run["ppid"] in mains or run["pid"] in worker_pids(engine)


@pytest.mark.workers
def test_a_job_whose_first_two_runs_raise_succeeds_on_the_third_on_workers(
    workers: Engine,
) -> None:
    s, web = requests.Session(), workers.webs[0][1]
    job = start(s, web, "flaky", 2)
    seen: set[Any] = set()
    began = time.monotonic()
    doc = final(s, web, job["token"], seen=seen)
    took = time.monotonic() - began
    assert (doc["status"], doc["attempt"], doc["max_attempts"]) == ("succeeded", 3, 3), doc
    assert (doc["id"], doc["error"], doc["retry_at"]) == (job["id"], None, None)
    assert doc["result"]["attempt"] == 3 and doc["result"]["run"] == 3
    logged = runs(workers, job["id"])
    assert [r["attempt"] for r in logged] == [1, 2, 3]  # one run per attempt, no more
    assert all(on_a_worker(workers, r) for r in logged), logged
    assert ("queued", 2, True, False) in seen or ("queued", 3, True, False) in seen, seen
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(logged)]
    print(
        f"{workers.kind}: runs on worker processes {[r['pid'] for r in logged]}, attempts"
        f" {[r['attempt'] for r in logged]}; run to run {', '.join(f'{g:.2f}' for g in gaps)} s"
        f" (backoff 0.2 s, 0.4 s, jittered; taken at the next look, every second);"
        f" succeeded {took:.2f} s after the start; states seen {sorted(seen)}"
    )


# -- 2. a resumable import whose process stops ----------------------------------------------------


def wait_items(engine: Engine, job_id: str, count: int) -> int:
    return wait_until(
        lambda: (n := item_count(engine, job_id)) >= count and n,
        60,
        interval=0.002,
        message=f"{count} items processed",
    )


def test_an_import_whose_instance_is_sigkilled_is_finished_by_another_instance(
    redis_url: str, tmp_path: Path
) -> None:
    """Instance A (``flask run``, the thread pool) is SIGKILLed at item ~400; instance B, a
    process that only answered polls, finishes the import from the saved cursor."""
    engine = again_engine("threads", redis_url, tmp_path)
    try:
        a = engine.start_web()
        b = engine.start_web()
        s = requests.Session()
        job = start(s, a, "import_items", ITEMS, PAUSE)
        assert progress(s, b, job["token"])["status"] in ("queued", "running")
        wait_items(engine, job["id"], STOP_AT)
        os.killpg(engine.webs[0][0].pid, signal.SIGKILL)
        killed_at = time.time()
        engine.webs[0][0].wait(5)
        done_at_kill = item_count(engine, job["id"])
        doc = final(s, b, job["token"], timeout=60)
        (first, second), twice = check_import(engine, job, doc, KILLED_BOUND)
        assert first["pid"] == engine.webs[0][0].pid and second["pid"] == engine.webs[1][0].pid
    finally:
        engine.close()
    after = second["at"] - killed_at
    print(
        f"SIGKILL of A at item {done_at_kill}: B resumed from cursor {second['cursor']}"
        f" {after:.2f} s ({after / HEARTBEAT:.1f} heartbeats) later; {len(twice)} item(s)"
        f" processed twice (bound {KILLED_BOUND}: {PER_FLUSH} items per {FLUSH} s flush)"
    )


def test_a_gunicorn_deploy_stops_the_import_between_items_and_the_new_one_finishes_it(
    redis_url: str, tmp_path: Path
) -> None:
    """SIGTERM to the old gunicorn (a deploy) at item ~400, the new one already up: the job
    stops between two items, goes back to the queue with its cursor, and the new gunicorn,
    which only answered polls, finishes it. At most the item in hand is done twice."""
    engine = again_engine("threads", redis_url, tmp_path)  # its env, its Redis reads
    env = engine.env
    old = AppGunicorn(tmp_path, env, workers=1, threads=4, graceful_timeout=10).start()
    try:
        with AppGunicorn(tmp_path, env, workers=1, threads=4) as new:
            s = requests.Session()
            job = start(s, old.url, "import_items", ITEMS, PAUSE)
            wait_items(engine, job["id"], STOP_AT)
            began, sent_at = time.monotonic(), time.time()
            old.stop()  # SIGTERM, waits for the graceful shutdown
            stopped = time.monotonic() - began
            doc = final(s, new.url, job["token"], timeout=60)
            (_first, second), twice = check_import(engine, job, doc, 1)
            assert second["pid"] == new.worker_pid()
    finally:
        old.stop()
        engine.close()
    after = second["at"] - sent_at
    print(
        f"gunicorn SIGTERM with item {STOP_AT} done (old master gone {stopped:.2f} s later):"
        f" the job stopped at cursor {second['cursor']}, the new gunicorn resumed it"
        f" {after:.2f} s after the SIGTERM; {len(twice)} item(s) processed twice"
    )


@pytest.mark.workers
@pytest.mark.parametrize("how", ["kill-runner", "cold-shutdown"])
def test_an_import_whose_worker_stops_cold_resumes_on_another_worker(
    workers: Engine, how: str
) -> None:
    """``kill-runner``: SIGKILL the process running the job (RQ's work horse, a Celery pool
    process); ``cold-shutdown``: RQ's second SIGTERM (it then kills the work horse), Celery's
    SIGQUIT. The import goes on in another process from its saved cursor. (RQ's and Celery's
    warm shutdown, a first SIGTERM, lets the job finish: nothing to resume.)"""
    s, web = requests.Session(), workers.webs[0][1]
    job = start(s, web, "import_items", ITEMS, PAUSE)
    wait_items(workers, job["id"], STOP_AT)
    runner = job_process(stored(workers, job["id"])["instance"])
    victim = next(w for w in workers.workers if w.pid == runner or runner in descendants(w.pid))
    if how == "kill-runner":
        os.kill(runner, signal.SIGKILL)
    elif workers.kind == "rq":
        os.kill(victim.pid, signal.SIGTERM)  # warm: RQ waits for the job...
        time.sleep(1.5)  # ...and takes a second signal within a second for the same one
        os.kill(victim.pid, signal.SIGTERM)  # ...cold: RQ kills the work horse
    else:
        os.kill(victim.pid, signal.SIGQUIT)  # Celery's cold shutdown
    stopped_at = time.time()
    done_at_stop = item_count(workers, job["id"])
    try:
        doc = final(s, web, job["token"], timeout=60)
        (first, second), twice = check_import(workers, job, doc, KILLED_BOUND)
        assert first["pid"] == runner and second["pid"] != runner
        assert on_a_worker(workers, second), second
    finally:
        if how == "cold-shutdown":
            victim.wait(20)
            workers.workers.remove(victim)
            workers.start_workers(1)
    after = second["at"] - stopped_at
    print(
        f"{workers.kind}, {how} at item {done_at_stop}: resumed by process {second['pid']}"
        f" from cursor {second['cursor']} {after:.2f} s ({after / HEARTBEAT:.1f} heartbeats)"
        f" later; {len(twice)} item(s) processed twice (bound {KILLED_BOUND})"
    )


@pytest.mark.workers
def test_a_warm_shutdown_lets_the_import_finish_where_it_runs(workers: Engine) -> None:
    """One SIGTERM (RQ's and Celery's warm shutdown): the worker finishes the job in hand
    before it exits, so nothing resumes: one run, every item once."""
    s, web = requests.Session(), workers.webs[0][1]
    count = 300
    job = start(s, web, "import_items", count, PAUSE)
    wait_items(workers, job["id"], 50)
    runner = job_process(stored(workers, job["id"])["instance"])
    victim = next(w for w in workers.workers if w.pid == runner or runner in descendants(w.pid))
    os.kill(victim.pid, signal.SIGTERM)
    try:
        doc = final(s, web, job["token"], timeout=30)
        victim.wait(30)  # it exits once the job is done
    finally:
        workers.workers.remove(victim)
        workers.start_workers(1)
    assert (doc["status"], doc["attempt"], doc["resumed"], doc["result"]) == (
        "succeeded",
        1,
        False,
        count,
    )
    assert len(runs(workers, job["id"])) == 1
    assert sorted(items(workers, job["id"])) == list(range(count))
    print(f"{workers.kind}: warm shutdown mid-job: it finished there ({count} items, one run)")


def test_a_late_report_of_a_death_moves_no_job_that_runs_in_a_live_process(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery may report a pool process's death (``WorkerLostError``) seconds late, after a
    sweep has already put the job back in the queue and another process runs it. That
    report, delivered here as Celery's main process delivers it, must neither move the
    running job to the queue again (a second run beside the first) nor end it: it names a
    process that is alive."""
    engine = again_engine("threads", redis_url, tmp_path)
    for key in ("WT_REDIS_URL", "WT_PREFIX", "WT_EXECUTOR", "WT_QUEUE", "WT_AGAIN"):
        monkeypatch.setenv(key, engine.env[key])
    from support import worker_app

    here = worker_app.create_app()  # the process the report reaches
    try:
        a = engine.start_web()
        s = requests.Session()
        job = start(s, a, "import_items", 300, 0.01)
        wait_items(engine, job["id"], 20)
        with here.app_context():
            lifecycle = here.extensions["asyncstate"].lifecycle
            lifecycle.end_abandoned(job["id"], "Worker exited prematurely: signal 9 (SIGKILL)")
        after = stored(engine, job["id"])
        assert (after["status"], after["attempt"]) == ("running", 1), after
        doc = final(s, a, job["token"], timeout=30)
    finally:
        here.extensions["asyncstate"].extension.shutdown(2)
        engine.close()
    assert (doc["status"], doc["attempt"], doc["result"]) == ("succeeded", 1, 300), doc
    assert len(runs(engine, job["id"])) == 1
    assert sorted(items(engine, job["id"])) == list(range(300))
    print("a late engine report naming a live process: the job ran on, once, to its end")


# -- 3. ten instances, one lost job ----------------------------------------------------------------


def test_ten_instances_see_the_same_lost_job_and_exactly_one_runs_it(
    redis_url: str, tmp_path: Path
) -> None:
    """Ten instances (OS processes, each its own app and store client, writers running) on
    one redis-server; the instance running a resumable job is SIGKILLed. Each writer sweeps
    once a heartbeat, and the moment the dead instance's heartbeat entry is gone all ten
    also sweep and dispatch at once: the job is moved back once, and runs once."""
    engine = again_engine("threads", redis_url, tmp_path)
    spawn = multiprocessing.get_context("spawn")
    ready, out = spawn.Queue(), spawn.Queue()
    go, stop = spawn.Event(), spawn.Event()
    ten = [
        spawn.Process(target=racing_instance, args=(engine.env, ready, go, stop, out))
        for _ in range(10)
    ]
    for proc in ten:
        proc.start()
    try:
        pids = sorted(ready.get(timeout=120) for _ in ten)
        a = engine.start_web()
        s = requests.Session()
        job = start(s, a, "import_items", 200, 0.01)
        wait_items(engine, job["id"], 50)
        dead = stored(engine, job["id"])["instance"]
        os.killpg(engine.webs[0][0].pid, signal.SIGKILL)
        killed_at = time.time()
        beat_key = f"{engine.prefix}{{flask_asyncstate.instance:{dead}}}"
        wait_until(lambda: not engine.redis.exists(beat_key), 10, interval=0.001)
        gone_at = time.time()
        go.set()  # all ten sweep and dispatch now, as their writers also do
        looked = [out.get(timeout=30) for _ in ten]
        doc = wait_until(
            lambda: (d := stored(engine, job["id"]))["status"] in FINAL and d,
            30,
            message="the resumed job ends",
        )
        time.sleep(3 * HEARTBEAT)  # more looks of every writer: none may take it again
        marks = f"{engine.prefix}mark:%s:{job['id']}"
        tries = [json.loads(t) for t in engine.redis.lrange(marks % "resume-tries", 0, -1)]
        takes = [json.loads(t) for t in engine.redis.lrange(marks % "take-tries", 0, -1)]
        taken = [json.loads(t) for t in engine.redis.lrange(marks % "taken-by", 0, -1)]
        logged = runs(engine, job["id"])
    finally:
        stop.set()
        for proc in ten:
            proc.join(20)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        engine.close()
    assert len(looked) == 10
    assert len(logged) == 2 and logged[1]["resumed"] is True  # the first run, and one more
    assert (doc["status"], doc["attempt"]) == ("succeeded", 2)
    assert doc["result"] == 200 - logged[1]["cursor"]
    moved = [t for t in tries if t[2]]
    assert len(moved) == 1, tries  # one process moved it back to the queue...
    assert len(taken) == 1, taken  # ...and one took it
    assert taken[0][0] in pids
    counts = Counter(items(engine, job["id"]))
    assert sorted(counts) == list(range(200))
    print(
        f"10 instances: heartbeat of the dead one gone {gone_at - killed_at:.2f} s after the"
        f" SIGKILL; resume_lost called {len(tries)} times by {len({t[0] for t in tries})}"
        f" processes, moved it once ({moved[0][1]} of pid {moved[0][0]}); take_due called"
        f" {len(takes)} times by {len({t[0] for t in takes})} processes, ran it once"
        f" ({taken[0][1]} of pid {taken[0][0]}); runs counted: {len(logged)} (the first, and"
        f" one resume)"
    )
