"""Jobs on RQ (forking and simple) and Celery workers: real worker processes, two web instances
(``flask run``) and one redis-server. Instance A starts, the worker runs, instance B polls and
cancels, with the same tokens, routes and documents as the thread pool."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from support.waiting import wait_until
from support.worker_procs import XHR, Engine

from flask_asyncstate.status import FINAL

pytestmark = [pytest.mark.reliability, pytest.mark.workers]

HEARTBEAT = 0.5  # worker_app's ASYNCSTATE_HEARTBEAT_INTERVAL


@pytest.fixture(scope="module", params=["rq", "rq-simple", "celery"])
def engine(
    request: pytest.FixtureRequest, redis_server: Any, tmp_path_factory: Any
) -> Iterator[Engine]:
    found = Engine(request.param, redis_server.url, tmp_path_factory.mktemp(request.param))
    try:
        found.start_web()
        found.start_web()
        found.start_workers(2)
        yield found
    finally:
        found.close()


@pytest.fixture
def web(engine: Engine) -> tuple[requests.Session, str, str]:
    return requests.Session(), engine.webs[0][1], engine.webs[1][1]


def start(s: requests.Session, url: str, name: str, *args: Any) -> dict[str, str]:
    answer = s.post(f"{url}/start/{name}", json=list(args), timeout=5)
    assert answer.status_code == 202, answer.text
    return answer.json()


def progress(s: requests.Session, url: str, token: str) -> dict[str, Any]:
    answer = s.get(f"{url}/asyncstate/progress/{token}", timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def final(s: requests.Session, url: str, token: str, timeout: float = 20) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def ended() -> bool:
        seen[:] = [progress(s, url, token)]
        return seen[0]["status"] in FINAL

    wait_until(ended, timeout, interval=0.05, message=lambda: f"a final status, got {seen}")
    return seen[0]


def stored(engine: Engine, job_id: str) -> dict[str, Any]:
    raw = engine.redis.hget(f"{engine.prefix}{{flask_asyncstate.job:{job_id}}}", "d")
    assert raw is not None
    return dict(json.loads(raw))


def running(s: requests.Session, url: str, token: str, at_least: int = 3) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def going() -> bool:
        seen[:] = [progress(s, url, token)]
        return seen[0]["status"] == "running" and (seen[0]["current"] or 0) >= at_least

    wait_until(going, 30, interval=0.05, message=lambda: f"running with progress, got {seen}")
    return seen[0]


def test_a_starts_a_worker_runs_b_polls_and_cancels(engine: Engine, web: Any) -> None:
    s, a, b = web
    job = start(s, a, "until_cancelled")
    seen = running(s, b, job["token"])
    runner = stored(engine, job["id"])["instance"]
    assert f"{engine.prefix}{{flask_asyncstate.instance:{runner}}}" in engine.worker_instances()
    asked = time.time()
    assert (
        s.post(f"{b}/asyncstate/cancel/{job['token']}", headers=XHR, timeout=5).status_code == 202
    )
    doc = final(s, b, job["token"])
    assert doc["status"] == "cancelled" and doc["cancel_requested"] is True
    seen_at = engine.mark("seen-cancel", job["id"])
    assert seen_at is not None  # the job's own Event was set in the worker process
    print(
        f"{engine.kind}: B saw progress {seen['current']} of a job run by worker {runner};"
        f" B's cancel set the Event in the worker {1000 * (float(seen_at) - asked):.1f} ms later"
    )


def test_results_and_failures_come_back_from_the_worker(engine: Engine, web: Any) -> None:
    s, a, b = web
    ok, bad = start(s, a, "double", 21), start(s, a, "fails")
    doc = final(s, b, ok["token"])
    assert (doc["status"], doc["result"], doc["percent"]) == ("succeeded", 42, 100.0)
    doc = final(s, b, bad["token"])
    assert doc["status"] == "failed"
    assert doc["error"] == {"type": "ValueError", "message": "bad row 7"}


def test_a_job_past_its_timeout_ends_failed_whether_or_not_it_stops(
    engine: Engine, web: Any
) -> None:
    s, a, b = web
    polite, stubborn = start(s, a, "polite"), start(s, a, "stubborn")
    for job in (polite, stubborn):
        doc = final(s, b, job["token"], timeout=15)
        assert doc["status"] == "failed", doc
        assert doc["error"]["type"] == "JobTimeout", doc
    time.sleep(3)  # the engine's own hard limit kills the stubborn one: the document stays
    doc = progress(s, b, stubborn["token"])
    assert (doc["status"], doc["error"]["type"]) == ("failed", "JobTimeout")


def test_cancel_grace_ends_the_process_of_a_job_that_ignores_its_cancel(
    engine: Engine, web: Any
) -> None:
    if engine.kind == "rq-simple":
        pytest.skip("a simple worker runs jobs in itself: cancel_grace needs a process per job")
    s, a, b = web
    job = start(s, a, "deaf")
    running(s, b, job["token"])
    pid = int(engine.mark("pid", job["id"]) or 0)
    asked = time.monotonic()
    answer = s.post(f"{b}/asyncstate/cancel/{job['token']}", headers=XHR, timeout=5)
    assert answer.status_code == 202
    doc = final(s, b, job["token"], timeout=10)
    took = time.monotonic() - asked
    assert (doc["status"], doc["reason"]) == ("cancelled", "forced"), doc
    wait_until(lambda: not _alive(pid), 10, message=f"the job's process {pid} ended")
    time.sleep(1)  # the engine's failure hooks ran: the document stays as it is
    doc = progress(s, b, job["token"])
    assert (doc["status"], doc["reason"]) == ("cancelled", "forced"), doc
    assert engine.mark("ran-out", job["id"]) is None
    print(f"{engine.kind}: cancel_grace=1 ended the job's process {took:.1f} s after the cancel")


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie the worker has not reaped yet counts as ended
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def test_a_queued_job_cancelled_before_any_worker_never_runs(engine: Engine, web: Any) -> None:
    s, a, b = web
    engine.stop_workers()
    try:
        job = start(s, a, "until_cancelled")
        assert progress(s, b, job["token"])["status"] == "queued"
        answer = s.post(f"{b}/asyncstate/cancel/{job['token']}", headers=XHR, timeout=5)
        assert answer.status_code == 202 and answer.json()["status"] == "cancelled"
        doc = progress(s, b, job["token"])  # at once: no worker needed to end it
        assert doc["status"] == "cancelled" and doc["cancel_requested"] is True
        if engine.kind.startswith("rq"):  # RQ's entry is gone from the queue too
            assert engine.redis.llen(f"rq:queue:{engine.queue}") == 0
    finally:
        engine.start_workers(2)
    # Celery's revoke reached no worker: the message is delivered, and the worker skips it.
    wait_until(lambda: engine.redis.llen(engine.queue) == 0, 20, message="broker queue drained")
    time.sleep(1)
    assert engine.mark("called", job["id"]) is None
    assert progress(s, b, job["token"])["status"] == "cancelled"


def test_two_hundred_jobs_over_two_workers_end_with_exact_results(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("WT_REDIS_URL", "WT_PREFIX", "WT_EXECUTOR", "WT_QUEUE"):
        monkeypatch.setenv(key, engine.env[key])
    from support import worker_app

    app = worker_app.create_app()  # a third instance, in this process: jobs without owner
    ext = app.extensions["asyncstate"].extension
    began = time.monotonic()
    with app.app_context():
        handles = [ext.registered_job("double").start(i) for i in range(200)]
        docs = [h.wait(120) for h in handles]
    took = time.monotonic() - began
    assert [d["status"] for d in docs] == ["succeeded"] * 200
    assert [d["result"] for d in docs] == [2 * i for i in range(200)]
    runners = {stored(engine, h.id)["instance"] for h in handles}
    assert len(runners) >= 2
    ext.shutdown()
    print(
        f"{engine.kind}: 200 jobs over 2 workers in {took:.1f} s, run by {len(runners)} processes"
    )


def test_a_work_horse_runs_under_its_workers_instance(engine: Engine, web: Any) -> None:
    """RQ's forking worker keeps the heartbeat and the cancel subscription: a work horse adds
    no instance and no subscriber, and a cancel still reaches its job at once."""
    if engine.kind != "rq":
        pytest.skip("the forking worker's work horses")
    s, a, b = web
    channel = f"{engine.prefix}cancel"

    def subscribers() -> int:
        return int(dict(engine.redis.pubsub_numsub(channel))[channel.encode()])

    runners: set[str] = set()
    for _ in range(20):  # each worker has held a job once (and so listens)
        jobs = [start(s, a, "double", n) for n in range(4)]
        for one in jobs:
            assert final(s, b, one["token"])["status"] == "succeeded"
            runners.add(stored(engine, one["id"])["instance"])
        if len(runners) == 2:
            break
    assert len(runners) == 2, runners
    before, listening = engine.worker_instances(), subscribers()
    job = start(s, a, "until_cancelled")
    running(s, b, job["token"])
    runner = stored(engine, job["id"])["instance"]
    assert f"{engine.prefix}{{flask_asyncstate.instance:{runner}}}" in before  # the worker's
    assert engine.worker_instances() == before and subscribers() <= listening
    # The horse's beats (which keep its job's entries alive) say what the worker's say.
    worker_pid = int(runner.rsplit("-", 2)[1])
    beats: list[dict[str, Any]] = []

    def beat_seen() -> bool:
        raw = engine.redis.hget(f"{engine.prefix}{{flask_asyncstate.instance:{runner}}}", "d")
        beats.append(json.loads(raw or "{}"))
        return len(beats) >= 20

    wait_until(beat_seen, 10, interval=HEARTBEAT / 8)  # both processes beat within 2.5 s
    began = stored(engine, job["id"])["started_at"]
    since = {(b["pid"], b["jobs"]) for b in beats if b["beat_at"] > began}  # (not one before)
    assert since == {(worker_pid, 1)}, beats
    asked = time.time()
    assert (
        s.post(f"{b}/asyncstate/cancel/{job['token']}", headers=XHR, timeout=5).status_code == 202
    )
    assert final(s, b, job["token"])["status"] == "cancelled"
    seen_at = engine.mark("seen-cancel", job["id"])
    assert seen_at is not None  # the job's own Event, set in the horse by the worker's signal
    print(f"rq: a horse's job saw the cancel {1000 * (float(seen_at) - asked):.1f} ms after it")


def _runner_pid(engine: Engine, job_id: str) -> int:
    from support.worker_procs import job_process

    return job_process(stored(engine, job_id)["instance"])


def test_the_process_running_a_job_killed_ends_it_lost_at_once(engine: Engine, web: Any) -> None:
    if engine.kind == "rq-simple":
        pytest.skip("the simple worker runs the job itself: see the next test")
    s, a, b = web
    job = start(s, a, "until_cancelled")
    running(s, b, job["token"])
    import os
    import signal

    os.kill(_runner_pid(engine, job["id"]), signal.SIGKILL)  # the work horse or pool process
    began = time.monotonic()
    # Readers may see "lost" from the heartbeat first; the worker then stores why.
    wait_until(
        lambda: (progress(s, b, job["token"]).get("error") or {}).get("type") == "WorkerLost",
        10,
        interval=0.05,
        message=lambda: f"a stored WorkerLost, got {progress(s, b, job['token'])}",
    )
    doc = progress(s, b, job["token"])
    assert doc["status"] == "lost", doc
    print(
        f"{engine.kind}: job process SIGKILLed -> the worker recorded lost in {time.monotonic() - began:.2f} s"
    )


def test_a_work_horse_that_cannot_store_its_final_document_has_it_ended_by_its_worker(
    engine: Engine, web: Any
) -> None:
    """The horse runs under its worker's live id, so no sweep finds its job lost: a horse
    whose final write outlasts the shutdown timeout exits unclean, and the worker ends it."""
    if engine.kind != "rq":
        pytest.skip("the forking worker's work horses")
    s, a, b = web
    job = start(s, a, "unstored")
    doc = final(s, b, job["token"], timeout=40)  # the horse retries for shutdown_timeout
    assert doc["status"] == "lost", doc
    assert "exited with status 1 without storing" in doc["error"]["message"], doc
    assert engine.mark("called", job["id"]) is not None
    assert final(s, b, start(s, a, "double", 4)["token"])["result"] == 8  # the worker goes on


def test_sigkill_of_a_worker_mid_job_reads_lost_within_three_heartbeats(
    engine: Engine, web: Any
) -> None:
    s, a, b = web
    job = start(s, a, "until_cancelled")
    running(s, b, job["token"])
    pid = _runner_pid(engine, job["id"])
    from support.worker_procs import descendants

    victim = next(p for p in engine.workers if p.pid == pid or pid in descendants(p.pid))
    engine.kill_worker(victim)
    began = time.monotonic()
    doc = final(s, a, job["token"], timeout=3 * HEARTBEAT + 3)
    took = time.monotonic() - began
    assert doc["status"] == "lost"
    engine.start_workers(1)
    print(
        f"{engine.kind}: worker SIGKILLed mid-job -> A read lost after {took:.2f} s (heartbeat {HEARTBEAT} s)"
    )


@pytest.mark.parametrize("executor", ["rq", "celery"])
def test_the_example_app_runs_its_imports_on_a_worker(
    executor: str, redis_url: str, tmp_path: Any
) -> None:
    """docs/deployment.rst's web and worker commands for the example app, as given there."""
    import os
    import signal
    import subprocess
    import sys

    from support.gunicorn_server import ROOT, app_environment, post_cancel, post_import, prepare
    from support.servers import AppProcess

    env = {"REDIS_URL": redis_url, "ASYNCSTATE_EXECUTOR": executor, "EXAMPLE_PAUSE": "0.05"}
    worker_argv = {
        "rq": [sys.executable, "-m", "flask", "--app", "example_app", "asyncstate", "worker"],
        "celery": [
            sys.executable, "-m", "celery", "-A", "example_app.celery_worker", "worker",
            "--pool", "prefork", "--concurrency", "1", "--without-gossip", "--without-mingle",
        ],
    }[executor]  # fmt: skip
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        worker_argv,
        cwd=ROOT,
        env=app_environment({**env, "EXAMPLE_PRODUCTS": "2000", "EXAMPLE_BATCH": "20"}),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with AppProcess(tmp_path, **env) as web:
            s = requests.Session()
            csrf = prepare(s, web.url)
            answer = post_import(s, web.url, csrf)
            assert answer.status_code == 202, answer.text
            token = answer.json()["token"]
            doc = running(s, web.url, token, at_least=40)
            cancelled = post_cancel(s, web.url, token, csrf)
            assert cancelled.status_code == 202, cancelled.text
            doc = final(s, web.url, token)
            assert doc["status"] == "cancelled", doc
            listed = subprocess.run(  # noqa: PLW1510 - the assert below shows its output
                [sys.executable, "-m", "flask", "--app", "example_app", "asyncstate", "instances"],
                cwd=ROOT,
                env=app_environment(env),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert f"{executor} worker" in listed.stdout, listed.stdout + listed.stderr
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()
    print(f"example app on {executor}: import ran on a worker, cancelled at {doc['current']}")


def test_engine_side_stops_end_the_document(
    engine: Engine, web: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ's cold shutdown (a second SIGTERM) and Celery's revoke(terminate=True)."""
    import os
    import signal

    if engine.kind == "rq-simple":
        pytest.skip("covered by the forking worker")
    s, a, b = web
    job = start(s, a, "until_cancelled")
    running(s, b, job["token"])
    pid = _runner_pid(engine, job["id"])
    if engine.kind == "rq":
        from support.worker_procs import descendants

        victim = next(p for p in engine.workers if pid in descendants(p.pid))
        os.kill(victim.pid, signal.SIGTERM)  # warm: RQ waits for the job...
        time.sleep(1.5)
        assert progress(s, b, job["token"])["status"] == "running"
        os.kill(victim.pid, signal.SIGTERM)  # ...cold: RQ kills the work horse
        doc = final(s, b, job["token"], timeout=10)
        assert (doc["status"], doc["error"]["type"]) == ("lost", "WorkerLost"), doc
        assert "shut down cold" in doc["error"]["message"]
        victim.wait(10)
        engine.workers.remove(victim)
        engine.start_workers(1)
    else:
        for key in ("WT_REDIS_URL", "WT_PREFIX", "WT_EXECUTOR", "WT_QUEUE"):
            monkeypatch.setenv(key, engine.env[key])
        from support import worker_app

        app = worker_app.create_app()
        app.extensions["asyncstate"].executor.celery.control.revoke(job["id"], terminate=True)
        doc = final(s, b, job["token"], timeout=10)
        # Whichever comes first: the pool process's own end (its SIGTERM raises SystemExit in
        # the job) or the revoke the main process announces.
        assert doc["status"] in ("lost", "cancelled"), doc
        if doc["status"] == "lost":
            assert doc["error"]["type"] == "WorkerStopped"
        app.extensions["asyncstate"].shutdown(0)
    print(f"{engine.kind}: stopped by the engine -> {doc['status']}")


def _rq_only(engine: Engine) -> None:
    if not engine.kind.startswith("rq"):
        pytest.skip("RQ's queue entries, registries and log")


def _worker_log(engine: Engine) -> str:
    for log in engine._logs:
        log.flush()
    return "".join(
        p.read_text(errors="replace") for p in sorted(engine.log_dir.glob("worker-*.log"))
    )


def test_a_worker_refuses_an_entry_naming_another_function(
    engine: Engine, web: Any, tmp_path: Any
) -> None:
    """An entry someone wrote straight into Redis, naming ``os.mkdir``: the worker process
    does not run it, says so in its log, and goes on taking jobs."""
    from rq import Queue
    from rq.registry import FailedJobRegistry
    from rq.serializers import JSONSerializer

    _rq_only(engine)
    s, a, b = web
    target = tmp_path / "planted"
    queue = Queue(engine.queue, connection=engine.redis, serializer=JSONSerializer)
    planted = queue.enqueue_call("os.mkdir", args=[str(target)])
    failed = FailedJobRegistry(engine.queue, connection=engine.redis, serializer=JSONSerializer)
    wait_until(lambda: planted.id in failed.get_job_ids(), 10, message="the entry refused")
    assert not target.exists(), "the planted entry ran"
    assert f"RQ job {planted.id}" in _worker_log(engine) and "refused" in _worker_log(engine)
    assert all(p.poll() is None for p in engine.workers)  # no worker crashed
    for _ in range(4):  # both workers still take jobs
        doc = final(s, b, start(s, a, "double", 4)["token"])
        assert (doc["status"], doc["result"]) == ("succeeded", 8)


def test_cancels_racing_a_workers_take_end_cancelled_and_leave_rq_no_failure(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that arrives while a worker takes the job: the job ends ``cancelled``, the
    entry never lands in RQ's failed registry and the worker logs no traceback for it."""
    import random

    from rq.registry import FailedJobRegistry
    from rq.serializers import JSONSerializer

    _rq_only(engine)
    for key in ("WT_REDIS_URL", "WT_PREFIX", "WT_EXECUTOR", "WT_QUEUE"):
        monkeypatch.setenv(key, engine.env[key])
    from support import worker_app

    app = worker_app.create_app()  # a third instance, in this process
    ext = app.extensions["asyncstate"].extension
    job = ext.registered_job("until_cancelled")
    rng = random.Random(20)
    rounds = 30
    try:
        with app.app_context():
            handles = []
            for _ in range(rounds):
                handle = job.start()
                time.sleep(rng.uniform(0, 0.008))  # the worker's take is under way
                handle.cancel()
                handles.append(handle)
            docs = [h.wait(20) for h in handles]
    finally:
        ext.shutdown(1)
    assert [d["status"] for d in docs] == ["cancelled"] * rounds, docs
    failed = FailedJobRegistry(engine.queue, connection=engine.redis, serializer=JSONSerializer)

    def settled() -> bool:  # RQ finished with each entry: finished (or gone), or a failure
        ids = set(failed.get_job_ids())
        done = (None, b"finished")
        return all(
            h.id in ids or engine.redis.hget(f"rq:job:{h.id}", "status") in done for h in handles
        )

    wait_until(settled, 20, interval=0.1, message="RQ done with every entry")
    in_failed = [h.id for h in handles if h.id in set(failed.get_job_ids())]
    log = _worker_log(engine)
    # The races: entries a worker took (RQ logs each it takes) whose job never started.
    raced = [h.id for h in handles if h.id in log and engine.mark("called", h.id) is None]
    print(
        f"{engine.kind}: {len(raced)} of {rounds} cancels raced a worker's take;"
        f" {len(in_failed)} of {rounds} entries in RQ's failed registry"
    )
    assert in_failed == []
    assert "InvalidJobOperation" not in log
