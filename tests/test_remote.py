"""Executors without worker processes (the quick suite): JSON arguments, timeouts, config
checks, the take-or-cancel race of a queued job, RQ's queue entries and Celery's eager mode."""

from __future__ import annotations

import json
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from support.apps import SECRET, Gate, define_jobs
from support.waiting import wait_until

from flask_asyncstate import AsyncState, JobContext, QueueFull
from flask_asyncstate.errors import UnserializableState
from flask_asyncstate.records import JOB_KIND, new_document
from flask_asyncstate.status import JobStatus

# -- every executor ------------------------------------------------------------------


def test_start_refuses_arguments_that_are_not_json_naming_them(make_jobs, backend_url) -> None:
    app, ext, jobs = make_jobs(backend_url)
    with app.app_context():
        store = ext.app_state().store
        for args, kwargs, named in [
            ((threading.Event(),), {}, "argument 0"),
            ((3, (1, 2)), {}, "argument 1"),
            ((), {"rows": [1, {"when": object()}]}, "argument rows[1].when"),
            ((), {"seconds": float("nan")}, "argument seconds"),
        ]:
            with pytest.raises(TypeError, match="job arguments must be JSON") as caught:
                jobs["count"].start(*args, **kwargs)
            assert isinstance(caught.value, UnserializableState)
            assert caught.value.path == named and f"'{named}'" in str(caught.value)
        assert store.keys(JOB_KIND) == []  # refused before anything was written


def _timed_jobs(ext: AsyncState) -> dict[str, object]:
    gate = Gate()

    @ext.job(timeout=0.3)
    def polite(job: JobContext) -> str:
        job.cancelled.wait(10)
        return "stopped at the deadline"

    @ext.job(timeout=0.3)
    def checks(job: JobContext) -> None:
        while True:
            job.check_cancelled()
            time.sleep(0.01)

    @ext.job(timeout=0.3)
    def stubborn(job: JobContext) -> None:
        gate.event.wait(10)  # ignores its Event

    @ext.job(timeout=5)
    def quick(job: JobContext) -> int:
        return 7

    return {"polite": polite, "checks": checks, "stubborn": stubborn, "quick": quick, "gate": gate}


def test_a_job_past_its_timeout_ends_failed_with_job_timeout(make_app, backend_url) -> None:
    app, ext = make_app(backend_url, timeout_grace=0.3, ASYNCSTATE_FLUSH_INTERVAL=0.05)
    jobs = _timed_jobs(ext)
    with app.app_context():
        began = time.monotonic()
        handles = {n: jobs[n].start() for n in ("polite", "checks", "stubborn", "quick")}  # type: ignore[attr-defined]
        docs = {n: h.wait(10) for n, h in handles.items()}
        took = time.monotonic() - began
    jobs["gate"].set()  # type: ignore[attr-defined]
    for name in ("polite", "checks", "stubborn"):
        assert docs[name]["status"] == "failed", docs[name]
        assert docs[name]["error"] == {
            "type": "JobTimeout",
            "message": "the job ran longer than its timeout of 0.3 s",
        }
        assert docs[name]["cancel_requested"] is False  # the deadline is not a user's cancel
    assert (docs["quick"]["status"], docs["quick"]["result"]) == ("succeeded", 7)
    assert took < 3
    print(
        f"three jobs past a 0.3 s timeout ended failed/JobTimeout; the stubborn one {took:.2f} s after start"
    )


def test_timeout_must_be_positive(make_app) -> None:
    _app, ext = make_app()
    for bad in (0, -1, True, "5"):
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            ext.job(timeout=bad)(lambda job: None)  # type: ignore[arg-type]


# -- configuration ---------------------------------------------------------------------


def _app(**config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, **config)
    return app


def test_executor_configuration_is_checked_in_init_app(redis_url) -> None:
    with pytest.raises(ValueError, match="ASYNCSTATE_EXECUTOR must be one of"):
        AsyncState(_app(ASYNCSTATE_EXECUTOR="process"))
    with pytest.raises(ValueError, match="need a shared store: set ASYNCSTATE_REDIS_URL"):
        AsyncState(_app(ASYNCSTATE_EXECUTOR="rq"))  # the memory store is one process's
    with pytest.raises(ValueError, match=r"AsyncState\(app, celery=celery_app\)"):
        AsyncState(_app(ASYNCSTATE_EXECUTOR="celery", ASYNCSTATE_REDIS_URL=redis_url))
    with pytest.raises(ValueError, match="ASYNCSTATE_RQ_QUEUE must be a non-empty string"):
        AsyncState(_app(ASYNCSTATE_RQ_QUEUE=""))
    from celery import Celery

    app = _app(ASYNCSTATE_REDIS_URL=redis_url, ASYNCSTATE_KEY_PREFIX="cfg:")
    ext = AsyncState(app, celery=Celery("cfg", broker=redis_url, set_as_current=False))
    assert app.config["ASYNCSTATE_EXECUTOR"] == "celery"  # celery= makes it the default
    assert ext.app_state(app).executor.engine == "celery"
    ext.shutdown(0)
    app = _app(ASYNCSTATE_REDIS_URL=redis_url, ASYNCSTATE_EXECUTOR="inline")
    ext = AsyncState(app)
    assert ext.app_state(app).executor.engine == "threads"  # inline: in the caller's thread
    ext.shutdown(0)


def test_worker_command_refuses_an_app_that_does_not_queue_on_rq(make_app) -> None:
    app, _ext = make_app()
    result = app.test_cli_runner().invoke(args=["asyncstate", "worker", "--burst"])
    assert result.exit_code == 2
    assert "ASYNCSTATE_EXECUTOR is 'threads'" in result.output


# -- a queued job: taken by one worker, or cancelled, never both -------------------------


def test_take_and_cancel_of_a_queued_job_never_both_win(store) -> None:
    from flask_asyncstate import lifecycle as remote
    from flask_asyncstate.records import JobRecords

    records = JobRecords(store, "web-1")
    for round_ in range(20):
        job_id = f"race{round_}"
        records.create(new_document(job_id, "import", None), None, False)
        takers = [f"worker-{i}" for i in range(4)]

        def take(worker: str, job_id: str = job_id) -> str | None:
            doc = records.transition(job_id, remote._waiting, {"instance": worker})
            return None if doc is None else worker

        def cancel(job_id: str = job_id) -> str | None:
            doc = records.transition(job_id, remote._waiting, {"status": "cancelled"})
            return None if doc is None else "cancel"

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(take, w) for w in takers] + [
                pool.submit(cancel) for _ in range(2)
            ]
            winners = [f.result() for f in futures if f.result() is not None]
        assert len(winners) == 1, winners
        stored = store.read(records.job_key(job_id))
        assert stored is not None
        if winners == ["cancel"]:
            assert (stored.data["status"], stored.data["instance"]) == ("cancelled", None)
        else:
            assert (stored.data["status"], stored.data["instance"]) == ("queued", winners[0])


def test_an_abandoned_job_ends_once_and_never_over_a_final_document(make_app, redis_url) -> None:

    app, ext = make_app(redis_url)
    found = ext.app_state(app)
    seen: list[str] = []
    from flask_asyncstate import signals

    def finished(sender: object, job_id: str, document: dict, **kw: object) -> None:
        seen.append(document["status"])

    import socket
    import subprocess

    ended = subprocess.Popen(["true"])  # a work horse of this host that has ended
    ended.wait()
    horse = f"{socket.gethostname()}-{ended.pid}-abc123"
    with signals.job_finished.connected_to(finished, sender=app):
        for job_id, status in [("gone1", JobStatus.RUNNING), ("gone2", JobStatus.SUCCEEDED)]:
            doc = dict(new_document(job_id, "import", horse), status=status.value)
            found.records.create(doc, None, False)
            found.lifecycle.end_abandoned(job_id, "Work-horse terminated unexpectedly")
            found.lifecycle.end_abandoned(job_id, "again")
    assert found.records.status("gone1")["status"] == "lost"
    assert found.records.status("gone1")["error"] == {
        "type": "WorkerLost",
        "message": "Work-horse terminated unexpectedly",
    }
    assert found.records.status("gone2")["status"] == "succeeded"  # final stays final
    assert seen == ["lost"]


def test_an_abandoned_job_met_by_an_outage_is_ended_when_the_store_is_back(
    make_app, redis_url, monkeypatch
) -> None:
    """An engine's report of a death that meets an outage is kept (bounded, oldest first)
    and stored by a thread of its own once Redis answers: a work horse's job runs under its
    worker's live id, so no sweep would ever end it. A kept report applies only to the run
    it was made of: a job that ran again meanwhile is left alone."""
    from flask_asyncstate import lifecycle as lifecycle_module
    from flask_asyncstate.errors import StoreUnavailable

    app, ext = make_app(redis_url)
    found = ext.app_state(app)
    lifecycle = found.lifecycle
    worker = found.instance_id  # the reporter: the job runs (ran) under its id
    names = ("out1", "out2", "out3", "again")
    for job_id in names:
        found.records.create(
            dict(new_document(job_id, "import", worker), status="running"), None, False
        )

    def outage(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("Redis is unreachable")

    monkeypatch.setattr(lifecycle_module, "ABANDONED_KEPT", 3)
    monkeypatch.setattr(lifecycle_module.Lifecycle, "_retry_loop", lambda self: None)  # by hand
    transition = found.records.transition
    monkeypatch.setattr(found.records, "transition", outage)
    monkeypatch.setattr(found.records, "documents", outage)
    for job_id in names:  # no exception reaches the engine's hook
        assert not lifecycle.end_abandoned(job_id, "the work horse was killed", reporter=worker)
    assert list(lifecycle._abandoned) == ["out2", "out3", "again"]  # out1: over the bound
    assert lifecycle.pending_ends()
    assert not lifecycle.retry_abandoned()  # still down: kept, in their order
    assert list(lifecycle._abandoned) == ["out2", "out3", "again"]
    monkeypatch.setattr(found.records, "transition", transition)
    monkeypatch.undo()
    # "again" ran again meanwhile (a resume, a "Try again" elsewhere): another run now.
    found.records.transition("again", lambda d: True, {"attempt": 2})
    assert lifecycle.retry_abandoned()  # back: stored, oldest first
    assert [found.records.status(j)["status"] for j in names] == [
        "running",
        "lost",
        "lost",
        "running",
    ]
    assert found.records.status("out3")["error"]["message"] == "the work horse was killed"
    assert lifecycle._abandoned == {} and not lifecycle.pending_ends()
    lifecycle._abandoned["x"] = ("why", "lost", None, 0.0)
    lifecycle.after_fork()  # a forked child keeps none of its parent's reports
    assert lifecycle._abandoned == {}

    # Without a hand on it: the first report kept starts the retry thread, which stores it.
    found.records.create(
        dict(new_document("late", "import", worker), status="running"), None, False
    )
    failures = iter([StoreUnavailable("Redis is unreachable")])

    def once(*args: object, **kwargs: object) -> object:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return transition(*args, **kwargs)

    monkeypatch.setattr(found.records, "transition", once)
    assert not lifecycle.end_abandoned("late", "the work horse was killed", reporter=worker)
    wait_until(lambda: found.records.status("late")["status"] == "lost", 10)
    wait_until(lambda: lifecycle._retrier is None, 5)  # and it ends with nothing left


@pytest.mark.skipif(not hasattr(__import__("os"), "pidfd_open"), reason="no pidfd here")
def test_a_forking_workers_cancel_signals_its_horse_only_while_it_is_attached() -> None:
    """Held from before the fork, a cancel that came first reaches the horse as it is
    attached; once reaped (detached), a cancel signals nothing, whoever has the pid now."""
    import subprocess

    from flask_asyncstate.workers import CANCEL_SIGNAL, _HorseCancel

    early = _HorseCancel()
    early.set()  # a cancel between the hold and the fork
    first = subprocess.Popen(["sleep", "30"])
    early.attach(first.pid)
    assert first.wait(5) == -CANCEL_SIGNAL  # SIGUSR1 ends a plain process
    early.detach()

    late = _HorseCancel()
    second = subprocess.Popen(["sleep", "30"])
    try:
        late.attach(second.pid)
        late.detach()
        late.set()
        time.sleep(0.2)
        assert second.poll() is None  # not signalled
    finally:
        second.kill()
        second.wait()


# -- RQ: what goes on the queue (a worker in this process runs it) -------------------------


def _rq_app(redis_url: str, **config: object):
    from support.apps import make_app as build

    return build(redis_url, ASYNCSTATE_EXECUTOR="rq", ASYNCSTATE_RQ_QUEUE="unit", **config)


def test_rq_entries_are_json_naming_the_job_and_cancel_takes_them_off_the_queue(redis_url) -> None:
    import redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    from flask_asyncstate import workers as on_rq

    app, ext = _rq_app(redis_url)
    jobs = define_jobs(ext)
    client = redis.Redis.from_url(redis_url)
    queue = Queue("unit", connection=client, serializer=JSONSerializer)
    try:
        with app.test_request_context():
            kept, dropped = jobs["count"].start(3), jobs["count"].start(4)
            assert kept.status()["status"] == "queued"
            entry = queue.fetch_job(kept.id)
            assert entry is not None and entry.func_name == on_rq.PERFORM
            (payload,) = entry.args
            queued = payload.pop("doc")  # the stored document, for a take with no read first
            runner = ext.app_state(app)
            stored = runner.store.read(runner.records.job_key(kept.id), refresh=False)
            assert stored is not None and queued == stored.data
            assert payload == {
                "v": 1,
                "id": kept.id,
                "name": "count",
                "args": [3],
                "kwargs": {},
                "origin": "http://localhost/",  # the request's URL root, for url_for
            }
            raw = client.hget(f"rq:job:{kept.id}", "data")  # RQ zlib-compresses it
            assert raw is not None
            assert json.loads(zlib.decompress(raw))[0] == on_rq.PERFORM  # JSON, never pickle
            assert dropped.cancel() is True
            assert dropped.status()["status"] == "cancelled"  # at once: it was still waiting
            assert queue.job_ids == [kept.id]
            listed = app.test_cli_runner().invoke(args=["asyncstate", "list"])
            assert "(waiting for a worker)" in listed.output, listed.output
            # An RQ worker inside this app runs what is left (no fork, until the queue is empty).
            on_rq.run_worker(ext.app_state(), ["unit"], burst=True, simple=True)
            doc = kept.status()
            assert (doc["status"], doc["result"]) == ("succeeded", {"rows": 3})
            assert dropped.status()["status"] == "cancelled"
    finally:
        on_rq._worker_app = None
        ext.shutdown(1)


def test_rq_queue_is_bounded_app_wide(redis_url) -> None:
    app, ext = _rq_app(redis_url, ASYNCSTATE_MAX_QUEUED=2)
    jobs = define_jobs(ext)
    try:
        with app.app_context():
            first, _second = jobs["count"].start(1), jobs["count"].start(2)
            with pytest.raises(QueueFull, match="2 jobs already wait for a worker"):
                jobs["count"].start(3)
            assert len(ext.app_state().store.keys(JOB_KIND)) == 2  # the refused one left nothing
            first.cancel()
            jobs["count"].start(3)  # a cancelled job's place is free again
    finally:
        ext.shutdown(1)


def test_jobs_a_worker_took_leave_the_queue_index(redis_url) -> None:
    """A worker's take gives the job's place in the queue's index back (forgotten, not kept
    among recent members): taken jobs never hold ``ASYNCSTATE_MAX_QUEUED`` places."""
    from flask_asyncstate import workers as on_rq

    app, ext = _rq_app(redis_url, ASYNCSTATE_MAX_QUEUED=3)
    jobs = define_jobs(ext)
    records = ext.app_state().records
    try:
        with app.app_context():
            handles = [jobs["count"].start(i) for i in range(3)]
            assert records.queued_ids() == {h.id for h in handles}  # the queue is full
            on_rq.run_worker(ext.app_state(), ["unit"], burst=True, simple=True)
            assert [h.status()["status"] for h in handles] == ["succeeded"] * 3
            assert records.queued_ids() == set()
            assert not records.store.claims(records.queue_key()).recent  # nothing to trim
            more = [jobs["count"].start(i) for i in range(3)]  # three places free again
            assert len({h.id for h in more}) == 3
    finally:
        on_rq._worker_app = None
        ext.shutdown(1)


def test_a_job_queued_again_under_its_id_keeps_no_expiry_of_its_last_run(redis_url) -> None:
    """RQ keeps a finished entry a minute (``result_ttl``), and saving a new entry under the
    same id would keep that expiry: a retry, resume or "Try again" waiting longer would
    vanish from RQ. Queued again, the last run's entry goes first."""
    import redis
    from rq import Queue
    from rq.job import Job

    from flask_asyncstate import workers as on_rq

    app, ext = _rq_app(redis_url)
    jobs = define_jobs(ext)
    client = redis.Redis.from_url(redis_url)
    try:
        with app.app_context():
            handle = jobs["count"].start(1)
            on_rq.run_worker(ext.app_state(), ["unit"], burst=True, simple=True)
            assert handle.status()["status"] == "succeeded"
            key = Job.key_for(handle.id)
            assert 0 < client.ttl(key) <= 60  # the finished entry, kept a minute
            payload = {"v": 1, "id": handle.id, "name": "count", "args": [1], "kwargs": {}}
            ext.app_state().executor.enqueue(handle.id, payload, None, again=True)
            assert client.ttl(key) == -1  # queued again: no expiry
            assert Queue("unit", connection=client).job_ids == [handle.id]
    finally:
        on_rq._worker_app = None
        ext.shutdown(1)


# -- Celery: the registered task, run eagerly in this process -------------------------


def test_celery_task_runs_the_job_with_the_same_lifecycle(redis_url) -> None:
    from celery import Celery
    from support.apps import make_app as build

    celery = Celery("unit", broker=redis_url, set_as_current=False)
    celery.conf.update(task_always_eager=True, task_serializer="json")
    app, ext = build(redis_url, celery=celery)
    jobs = define_jobs(ext)
    try:
        assert "flask_asyncstate.run" in celery.tasks
        with app.app_context():
            handle = jobs["count"].start(5)  # eager: the task ran inside apply_async
            doc = handle.status()
            assert (doc["status"], doc["result"]) == ("succeeded", {"rows": 5})
            failed = jobs["fails"].start().status()
            assert failed["error"] == {"type": "ValueError", "message": "bad row 7"}
    finally:
        ext.shutdown(1)


def test_two_jobs_may_not_share_a_name(make_app) -> None:
    """A worker runs a queue entry by the job's name: two functions under one name is a bug."""
    _app, ext = make_app()

    @ext.job(name="export")
    def export_csv(job: JobContext) -> None: ...

    with pytest.raises(ValueError, match="a job named 'export' is already defined"):

        @ext.job(name="export")
        def export_pdf(job: JobContext) -> None: ...

    assert ext.registered_job("export").fn is export_csv.fn  # type: ignore[union-attr]


def test_update_never_overwrites_a_replacement_made_meanwhile(store) -> None:
    """Compare-and-set without ABA: a remove + create between read and swap is noticed."""
    key = store.key("aba", "x")
    store.create(key, {"who": "first"})
    seen: list[str] = []

    def bump(doc: dict) -> dict:
        if not seen:  # the first attempt: someone replaces the entry meanwhile
            store.remove(key)
            store.create(key, {"who": "second"})
        seen.append(doc["who"])
        return dict(doc, n=doc.get("n", 0) + 1)

    assert store.update(key, bump) is True
    assert seen == ["first", "second"]  # retried on the replacement
    assert store.read(key).data == {"who": "second", "n": 1}


def test_a_transition_whose_reply_was_lost_still_wins(store, monkeypatch) -> None:
    """A client that resends a swap after a lost reply finds its own change: still the winner."""
    from flask_asyncstate import lifecycle as remote
    from flask_asyncstate.records import JobRecords

    records = JobRecords(store, "web-1")
    records.create(new_document("resent", "import", None), None, False)
    real = store._update

    def resent(key, apply):
        real(key, apply)  # done, but the reply "was lost": the client sends it again
        return real(key, apply)

    monkeypatch.setattr(store, "_update", resent)
    doc = records.transition("resent", remote._waiting, {"instance": "worker-1"})
    assert doc is not None and doc["instance"] == "worker-1"


def test_timeout_must_be_finite(make_app) -> None:
    _app, ext = make_app()
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        ext.job(timeout=float("inf"))(lambda job: None)


def test_a_flood_of_refused_starts_scans_the_full_queue_at_most_once_a_second(
    redis_url, monkeypatch
) -> None:
    app, ext = _rq_app(redis_url, ASYNCSTATE_MAX_QUEUED=2)
    jobs = define_jobs(ext)
    store = ext.app_state(app).store
    scans: list[str] = []
    real = store.claims
    monkeypatch.setattr(store, "claims", lambda key: (scans.append(key), real(key))[1])
    try:
        with app.app_context():
            jobs["count"].start(1)
            jobs["count"].start(2)  # the queue is full now
            scans.clear()  # (the writer's first beat read the queue as the first start began)
            began = time.monotonic()
            for _ in range(20):
                with pytest.raises(QueueFull):
                    jobs["count"].start(3)
            elapsed = time.monotonic() - began
        # Not one read of every waiting document per refusal: one, and one more per second.
        assert 1 <= len(scans) <= 1 + int(elapsed)
    finally:
        ext.shutdown(1)


def test_unique_job_on_rq_is_one_while_it_waits_and_after_the_worker_took_it(redis_url) -> None:
    from rq import Queue
    from rq.serializers import JSONSerializer

    from flask_asyncstate import workers as on_rq

    app, ext = _rq_app(redis_url)

    @ext.job(name="unique_rq", unique="app")
    def unique_rq(job: JobContext) -> str:
        again = unique_rq.start()  # while it runs in the worker: still this one
        return f"{again.id == job.id} {again.is_new}"

    try:
        with app.app_context():
            first, second = unique_rq.start(), unique_rq.start()
            assert first.is_new and not second.is_new and second.id == first.id
            queue = Queue(
                "unit", connection=ext.app_state().store.client, serializer=JSONSerializer
            )
            assert queue.job_ids == [first.id]  # queued once
            on_rq.run_worker(ext.app_state(), ["unit"], burst=True, simple=True)
            doc = first.status()
            assert (doc["status"], doc["result"]) == ("succeeded", "True False")
            third = unique_rq.start()  # it ended: a new one
            assert third.is_new and third.id != first.id
    finally:
        on_rq._worker_app = None
        ext.shutdown(1)


def test_a_job_on_an_rq_worker_builds_urls_of_the_request_that_started_it(redis_url) -> None:
    from flask import url_for

    from flask_asyncstate import workers as on_rq

    app, ext = _rq_app(redis_url)

    @app.get("/files/<name>")
    def files(name: str) -> str:
        return name

    @ext.job(name="link_on_worker")
    def link_on_worker(job: JobContext) -> str:
        return url_for("files", name="r.csv", _external=True)

    try:
        with app.test_request_context("/start", base_url="https://shop.example/sub"):
            handle = link_on_worker.start()
        with app.app_context():
            on_rq.run_worker(ext.app_state(), ["unit"], burst=True, simple=True)
            assert handle.status()["result"] == "https://shop.example/sub/files/r.csv"
    finally:
        on_rq._worker_app = None
        ext.shutdown(1)


def test_cancelling_a_waiting_unique_job_gives_its_place_back(redis_url) -> None:
    app, ext = _rq_app(redis_url)

    @ext.job(name="unique_waiting", unique="app")
    def unique_waiting(job: JobContext) -> None:
        return None

    try:
        with app.app_context():
            first = unique_waiting.start()
            assert first.cancel() is True and first.status()["status"] == "cancelled"
            records = ext.app_state().records
            key = records.unique_key("unique_waiting", "app", None)
            assert ext.app_state().store.claims(key).active == set()  # given back at once
            assert unique_waiting.start().is_new
    finally:
        ext.shutdown(1)


def test_a_long_wait_for_a_worker_keeps_the_owners_list_and_the_unique_place(redis_url) -> None:
    app, ext = _rq_app(redis_url, ASYNCSTATE_EXPIRES=2)

    @ext.job(name="patient", unique=True)
    def patient(job: JobContext) -> None:
        return None

    @app.post("/go")
    def go() -> dict[str, object]:
        handle = patient.start()
        return {"id": handle.id, "new": handle.is_new}

    try:
        browser = app.test_client()
        first = browser.post("/go").json
        time.sleep(3.5)  # longer than ASYNCSTATE_EXPIRES: only the web beat keeps them
        assert [j["id"] for j in browser.get("/asyncstate/jobs").json] == [first["id"]]
        again = browser.post("/go").json
        assert again == {"id": first["id"], "new": False}
    finally:
        ext.shutdown(1)


def test_a_waiting_job_whose_queue_entry_vanished_ends_lost_and_frees_its_places(
    redis_url, monkeypatch
) -> None:
    from rq import Queue
    from rq.serializers import JSONSerializer

    from flask_asyncstate import executors

    monkeypatch.setattr(executors, "SETTLED", 0.0)
    app, ext = _rq_app(redis_url, ASYNCSTATE_EXPIRES=2)

    @ext.job(name="nightly_rq", unique="app")
    def nightly_rq(job: JobContext) -> None:
        return None

    try:
        with app.app_context():
            first = nightly_rq.start()
            Queue(
                "unit", connection=ext.app_state().store.client, serializer=JSONSerializer
            ).empty()
            wait_until(lambda: first.status()["status"] == "lost", 5, interval=0.05)
            doc = first.status()
            assert doc["reason"] == "lost" and "vanished" in doc["error"]["message"]
            assert nightly_rq.start().is_new  # its unique place was given back
    finally:
        ext.shutdown(1)


def test_rq_workers_run_nothing_but_our_own_entry_point(redis_url, tmp_path, caplog) -> None:
    """Someone who can write to Redis could queue an entry naming any importable function
    (``os.system``): our workers refuse every entry but ``on_rq.perform``, log an error, keep
    it in RQ's failed registry for the operator, and go on with the next entry."""
    import logging

    import redis
    from rq import Queue
    from rq.registry import FailedJobRegistry
    from rq.serializers import JSONSerializer
    from support.apps import make_app as build

    from flask_asyncstate import workers as on_rq

    app, ext = build(redis_url, ASYNCSTATE_EXECUTOR="rq", ASYNCSTATE_RQ_QUEUE="refuse")
    jobs = define_jobs(ext)
    client = redis.Redis.from_url(redis_url)
    queue = Queue("refuse", connection=client, serializer=JSONSerializer)
    failed = FailedJobRegistry("refuse", connection=client, serializer=JSONSerializer)
    try:
        # The simple worker, then the forking one (given only the planted entry: no fork in
        # the test process), each with an entry that would create a directory if it ran.
        for simple in (True, False):
            target = tmp_path / ("planted-simple" if simple else "planted-fork")
            planted = queue.enqueue_call("os.mkdir", args=[str(target)])
            with app.app_context():
                good = jobs["count"].start(2) if simple else None
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="flask_asyncstate"):
                on_rq.run_worker(ext.app_state(), ["refuse"], burst=True, simple=simple)
            assert not target.exists(), "the planted entry ran"
            assert planted.id in failed.get_job_ids()
            refused = [r for r in caplog.records if planted.id in r.getMessage()]
            assert refused and refused[0].levelno == logging.ERROR
            assert "os.mkdir" in refused[0].getMessage()
            assert client.lrange(queue.intermediate_queue_key, 0, -1) == []
            if good is not None:  # the worker went on: the entry after it ran
                assert good.status()["status"] == "succeeded"
    finally:
        on_rq._worker_app = None
        ext.shutdown(1)


def test_an_rq_worker_stops_without_waiting_for_its_pubsub_thread(redis_url) -> None:
    """RQ's teardown stops its command listener, which waits up to 60 s for a message: the
    worker must not wait that out (a deploy's warm shutdown, each ``--burst`` run)."""
    from support.apps import make_app as build

    from flask_asyncstate import workers as on_rq

    app, ext = build(redis_url, ASYNCSTATE_EXECUTOR="rq", ASYNCSTATE_RQ_QUEUE="teardown")
    try:
        with app.app_context():
            for simple in (True, False, True, False):
                began = time.monotonic()
                on_rq.run_worker(ext.app_state(), ["teardown"], burst=True, simple=simple)
                took = time.monotonic() - began
                assert took < 10, f"a burst worker with nothing to do took {took:.1f} s"
    finally:
        on_rq._worker_app = None
        ext.shutdown(1)


def test_a_job_with_a_queue_goes_to_that_rq_queue_and_its_retry_too(redis_url) -> None:
    import redis

    from flask_asyncstate import workers as on_rq

    app, ext = _rq_app(redis_url)
    runs: list[int] = []

    @ext.job(queue="reports", retries=1, backoff=0.05)
    def report(job: JobContext, n: int) -> int:
        runs.append(job.attempt)
        if job.attempt == 1:
            raise ConnectionError("the warehouse is away")
        return n

    client = redis.Redis.from_url(redis_url)
    try:
        with app.test_request_context():
            handle = report.start(4)
            assert client.lrange("rq:queue:reports", 0, -1) == [handle.id.encode()]
            assert client.llen("rq:queue:unit") == 0  # not the default queue
            on_rq.run_worker(ext.app_state(), ["reports"], burst=True, simple=True)
            doc = handle.status()
            assert (doc["status"], doc["attempt"]) == ("queued", 2)  # waits for its retry
            wait_until(lambda: client.llen("rq:queue:reports") == 1, 10)  # back on its queue
            on_rq.run_worker(ext.app_state(), ["reports"], burst=True, simple=True)
            doc = handle.status()
            assert (doc["status"], doc["result"], doc["attempt"]) == ("succeeded", 4, 2)
        assert runs == [1, 2]
    finally:
        on_rq._worker_app = None
        ext.shutdown(1)


def test_a_job_with_a_queue_goes_to_that_celery_queue(redis_url) -> None:
    import redis
    from celery import Celery
    from support.apps import make_app as build

    celery = Celery("unit-queues", broker=redis_url, set_as_current=False)
    celery.conf.update(task_serializer="json", broker_connection_retry_on_startup=False)
    app, ext = build(redis_url, celery=celery, ASYNCSTATE_EXECUTOR="celery")

    @ext.job(queue="reports")
    def report(job: JobContext) -> None:
        pass

    client = redis.Redis.from_url(redis_url)
    try:
        with app.app_context():
            handle = report.start()
            messages = client.lrange("reports", 0, -1)  # kombu's Redis transport: a list
            assert len(messages) == 1 and handle.id.encode() in messages[0]
            assert client.llen("celery") == 0
            handle.cancel()
    finally:
        ext.shutdown(1)
