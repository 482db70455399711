"""Job lifecycle on both backends: results, failures, cancellation, quotas, the inline executor, signals."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest
from flask import Flask
from support.apps import Gate, define_jobs
from support.waiting import wait_until

from flask_asyncstate import QuotaExceeded, job_finished, job_progress, job_started, owners
from flask_asyncstate.errors import InvalidToken
from flask_asyncstate.records import PUBLIC_FIELDS


def _running(handle) -> bool:
    doc = handle.status()
    return doc is not None and doc["status"] == "running"


def test_success_stores_result_and_exact_document(make_jobs, backend_url) -> None:
    app, _ext, jobs = make_jobs(backend_url)
    with app.app_context():
        handle = jobs["count"].start(40)
        doc = handle.wait(10)
    assert list(doc) == list(PUBLIC_FIELDS)
    assert doc["status"] == "succeeded"
    assert (doc["current"], doc["total"], doc["percent"]) == (40, 40, 100.0)
    assert doc["message"] == "40 of 40 rows"
    assert doc["result"] == {"rows": 40}
    assert doc["error"] is None and doc["cancel_requested"] is False
    assert doc["name"] == "count" and doc["id"] == handle.id
    assert doc["created_at"] <= doc["updated_at"]


def test_failure_stores_error_and_logs_traceback(make_jobs, backend_url, caplog) -> None:
    app, _ext, jobs = make_jobs(backend_url)
    with caplog.at_level(logging.ERROR, logger="flask_asyncstate"), app.app_context():
        doc = jobs["fails"].start().wait(10)
    assert doc["status"] == "failed"
    assert doc["error"] == {"type": "ValueError", "message": "bad row 7"}
    assert "Traceback" not in str(doc)
    assert any(r.exc_info and "bad row 7" in str(r.exc_info[1]) for r in caplog.records)


def test_unserialisable_result_fails_cleanly_and_pool_lives_on(make_jobs, backend_url) -> None:
    app, _ext, jobs = make_jobs(backend_url, ASYNCSTATE_MAX_WORKERS=1)
    with app.app_context():
        doc = jobs["returns_set"].start().wait(10)
        assert doc["status"] == "failed"
        assert doc["error"]["type"] == "UnserializableState"
        assert "field 'result' of job 'returns_set'" in doc["error"]["message"]
        assert jobs["count"].start(3).wait(10)["status"] == "succeeded"


def test_cancel_while_running_is_cooperative(make_jobs, backend_url) -> None:
    app, _ext, jobs = make_jobs(backend_url)
    with app.app_context():
        handle = jobs["until_cancelled"].start()
        wait_until(lambda: _running(handle), 5, message="the job runs")
        assert handle.cancel() is True
        doc = handle.wait(10)
    assert doc["status"] == "cancelled"
    assert doc["cancel_requested"] is True
    assert doc["result"] is None  # returned normally after the request: still cancelled


def test_job_cancelled_exception_ends_cancelled(make_jobs, backend_url) -> None:
    app, ext, jobs = make_jobs(backend_url)
    with app.app_context():
        handle = jobs["count"].start(100000, sleep=0.001)
        wait_until(lambda: handle.status()["current"] > 0, 5, message="progress is written")
        ext.cancel(handle.token)
        doc = handle.wait(10)
    assert doc["status"] == "cancelled"
    assert doc["error"] is None
    assert 0 < doc["current"] < 100000


def test_cancelled_while_queued_never_starts(make_jobs, backend_url) -> None:
    app, ext, jobs = make_jobs(backend_url, ASYNCSTATE_MAX_WORKERS=1)
    started = []
    gate = Gate()

    @ext.job
    def record(job) -> None:
        started.append(job.id)

    with app.app_context():
        first = jobs["blocked"].start(gate.name)
        second = record.start()
        assert second.status()["status"] == "queued"
        assert second.cancel() is True
        gate.set()
        assert first.wait(10)["status"] == "succeeded"
        assert second.wait(10)["status"] == "cancelled"
    assert started == []


def test_unknown_job_answers(make_app, backend_url) -> None:
    app, ext = make_app(backend_url)
    with app.app_context():
        handle = ext.app_state().job_handle("0" * 32)
        assert handle.status() is None
        assert handle.cancel() is False
        assert handle.wait(1) is None


def test_final_document_is_not_overwritten_by_buffered_progress(make_app, backend_url) -> None:
    app, ext = make_app(backend_url, ASYNCSTATE_FLUSH_INTERVAL=0.01)

    @ext.job
    def burst(job) -> str:
        for i in range(20000):
            job.progress(i, total=20000)
        return "done"

    with app.app_context():
        handles = [burst.start() for _ in range(8)]
        for h in handles:
            h.wait(20)
        # the behaviour under test: nothing may land after the final document, however long
        # one waits; several flush intervals give a stale buffered write every chance to
        time.sleep(0.1)
        for h in handles:
            doc = h.status()
            assert doc["status"] == "succeeded" and doc["result"] == "done"
            assert doc["current"] == 19999


def test_quota_per_owner(make_jobs, backend_url) -> None:
    app, ext, jobs = make_jobs(backend_url, ASYNCSTATE_MAX_JOBS_PER_OWNER=2)
    gate = Gate()
    with app.test_request_context("/"):
        a = jobs["blocked"].start(gate.name)
        b = jobs["blocked"].start(gate.name)
        with pytest.raises(QuotaExceeded, match="ASYNCSTATE_MAX_JOBS_PER_OWNER") as refused:
            jobs["blocked"].start(gate.name)
        assert refused.value.user_message.startswith("You already have 2 jobs in progress.")
        assert "ASYNCSTATE" not in refused.value.user_message  # words for users, not config
        gate.set()
        a.wait(10)
        b.wait(10)
        state = ext.app_state(app)
        slots = state.records.owner_key(owners.request_owner(create=False))
        # wait() may return on the stored final document, a moment before the slot is freed
        wait_until(
            lambda: a.id not in state.store.claims(slots).active,
            5,
            message="the finished job's slot is freed",
        )
        jobs["count"].start(1).wait(10)  # room again once one finished
        b.wait(10)
        listed = ext.jobs()  # all three finished: the newest MAX_JOBS_PER_OWNER of them
        assert [j["status"] for j in listed] == ["succeeded", "succeeded"]
        assert [j["name"] for j in listed] == ["count", "blocked"]
    with app.app_context():  # outside a request there is no session and no quota
        for _ in range(3):
            jobs["count"].start(1).wait(10)


def test_inline_executor_runs_jobs_in_the_caller_with_same_documents(
    make_jobs, backend_url
) -> None:
    app, _ext, jobs = make_jobs(backend_url, ASYNCSTATE_EXECUTOR="inline")
    with app.app_context():
        handle = jobs["count"].start(5)
        doc = handle.status()  # no wait needed: start() returned after the job ended
        assert doc["status"] == "succeeded" and doc["result"] == {"rows": 5}
        assert jobs["fails"].start().status()["error"]["type"] == "ValueError"


def test_signals_fire_with_app_as_sender(make_jobs, backend_url) -> None:
    app, _ext, jobs = make_jobs(backend_url)
    seen: list[tuple[str, str]] = []

    def receiver(name: str):
        def receive(sender, job_id, document):
            assert sender is app
            seen.append((name, document["status"]))

        return receive

    started, progressed, finished = receiver("started"), receiver("progress"), receiver("finished")
    with (
        job_started.connected_to(started, app),
        job_progress.connected_to(progressed, app),
        job_finished.connected_to(finished, app),
        app.app_context(),
    ):
        jobs["count"].start(30, sleep=0.01).wait(10)
    assert seen[0] == ("started", "running")
    assert seen[-1] == ("finished", "succeeded")
    assert 1 <= sum(1 for s in seen if s[0] == "progress") < 30  # coalesced


def test_two_apps_in_one_process_are_independent(make_app) -> None:
    app1, ext1 = make_app()
    app2, ext2 = make_app()
    jobs1 = define_jobs(ext1)
    with app1.app_context():
        handle = jobs1["count"].start(3)
        handle.wait(10)
        token = handle.token
    assert ext1.app_state(app1) is not ext2.app_state(app2)
    assert ext1.app_state(app1).store is not ext2.app_state(app2).store
    with app2.app_context():
        assert ext2.status(token) is None  # app2's store has never seen the job
        with pytest.raises(RuntimeError, match="init_app"):
            ext1.app_state()  # app2 is not registered with ext1
    with pytest.raises(RuntimeError, match="init_app"):
        ext1.app_state(Flask("other"))
    with pytest.raises(RuntimeError, match="already been registered"):
        ext2.init_app(app1)


def test_declared_state_is_bound_to_the_job(make_app, backend_url) -> None:
    @dataclass
    class ImportState:
        imported: int = 0

    app, ext = make_app(backend_url)

    @ext.job(state=ImportState, name="typed")
    def typed(job) -> int:
        for _ in range(5):
            job.state.update(lambda s: setattr(s, "imported", s.imported + 1))
        return job.state.get().imported

    with app.app_context():
        handle = typed.start()
        assert handle.wait(10)["result"] == 5
        assert ext.state.get(ImportState, name=handle.id) == ImportState(5)
        handle_cancel = typed.start()
        handle_cancel.wait(10)
        assert ext.state.cancel(ImportState, name=handle_cancel.id) is True


def test_shutdown_cancels_waits_and_marks_the_rest_lost(make_jobs, backend_url) -> None:
    app, ext, jobs = make_jobs(backend_url, ASYNCSTATE_MAX_WORKERS=2)
    with app.app_context():
        polite = jobs["until_cancelled"].start()
        stubborn = jobs["stubborn"].start(20)  # outlives any slow start of the other: ends lost
        queued = jobs["count"].start(1)
        wait_until(lambda: _running(polite) and _running(stubborn), 5, message="both workers busy")
        ext.shutdown(timeout=0.5)
        assert polite.status()["status"] == "cancelled"
        lost = stubborn.status()
        assert lost["status"] == "lost" and lost["error"]["type"] == "Shutdown"
        assert queued.status()["status"] == "cancelled"
        with pytest.raises(RuntimeError, match="shut down"):
            jobs["count"].start(1)


def test_progress_validates_its_arguments(make_app) -> None:
    app, ext = make_app()
    raised: list[tuple[type[BaseException], str] | None] = []

    @ext.job
    def bad(job) -> None:
        for call in (
            lambda: job.progress("1"),
            lambda: job.progress(1, total="9"),
            lambda: job.progress(1, message=3),
            lambda: job.message(None),
            lambda: job.progress(float("nan")),
            lambda: job.message("x" * 5000),
        ):
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - which one, and why, is asserted below
                raised.append((type(exc), str(exc)))
            else:
                raised.append(None)

    with app.app_context():
        assert bad.start().wait(10)["status"] == "succeeded"
    assert raised == [
        (TypeError, "progress current must be a number, got str"),
        (TypeError, "progress total must be a number, got str"),
        (TypeError, "progress message must be str, got int"),
        (TypeError, "progress message must be str, got NoneType"),
        (ValueError, "progress current must be finite and at most 2**53 in size, got nan"),
        (ValueError, "progress message is 5000 characters, more than 2000"),
    ]


def test_start_without_secret_key_explains(make_jobs) -> None:
    app, _ext, jobs = make_jobs(SECRET_KEY=None)
    with app.app_context():
        handle = jobs["count"].start(1)
        with pytest.raises(RuntimeError, match="SECRET_KEY"):
            handle.token  # noqa: B018
        assert handle.wait(10)["status"] == "succeeded"


def test_secret_key_is_read_at_use_and_fallbacks_verify(make_jobs) -> None:
    app, ext, jobs = make_jobs(SECRET_KEY=None)
    app.config["SECRET_KEY"] = "old-key"  # set after init_app, as some factories do
    with app.app_context():
        token = jobs["count"].start(1).token
        app.config.update(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
        assert ext.status(token)["name"] == "count"  # rotated key: old tokens still verify
        app.config["SECRET_KEY_FALLBACKS"] = []
        with pytest.raises(InvalidToken):
            ext.status(token)


def test_a_failing_signal_receiver_breaks_nothing(app, jobs, caplog) -> None:

    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    with (
        job_started.connected_to(broken, app),
        job_progress.connected_to(broken, app),
        job_finished.connected_to(broken, app),
        app.app_context(),
    ):
        first = jobs["count"].start(20, sleep=0.01).wait(10)
        second = jobs["count"].start(2).wait(10)
    assert first["status"] == second["status"] == "succeeded"
    assert any("receiver" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("busy", [False, True])
def test_forked_child_gets_its_own_instance_id(app, ext, jobs, busy: bool) -> None:
    """What a gunicorn --preload worker does: fork after the parent ran jobs, and (busy) while
    the parent's job threads, writer and store are in the middle of their work."""
    state = ext.app_state(app)
    with app.app_context():
        jobs["count"].start(1).wait(10)
        running = [jobs["count"].start(20000) for _ in range(3)] if busy else []
    parent_id = state.instance_id
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its threads did not survive the fork; a start brings them back
        code = 1
        try:
            os.close(read_end)
            signal.alarm(20)  # a lock inherited in its held state would hang us: fail instead
            with app.app_context():
                doc = jobs["count"].start(2).wait(10)
            os.write(write_end, json.dumps([state.instance_id, doc["status"]]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _pid, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child_id, child_status = json.loads(pipe.read() or "[null, null]")
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_status == "succeeded"
    assert child_id != parent_id and state.instance_id == parent_id
    with app.app_context():  # the parent's own jobs were not touched by the child
        assert all(h.wait(30)["status"] == "succeeded" for h in running)


# -- robustness: nothing stays running, whatever the job or the timing does ------------------


def test_odd_results_and_exceptions_still_end_the_job(make_app, backend_url) -> None:
    app, ext = make_app(backend_url)  # max_entry_size: the default 64 KiB

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    # Results that cannot be stored on any Python version (not a deeply nested list: how
    # deep an interpreter encodes changes between versions, and 3.13 stores 5,000 levels).
    @ext.job
    def not_json(job) -> dict:
        return {"rows": [{"id": 1, "when": object()}]}  # JSON has no type for it

    @ext.job
    def too_big(job) -> list:
        return ["x" * 1000] * 100  # JSON, but 100 KB: its document would pass the limit

    @ext.job
    def unprintable(job) -> None:
        raise Unprintable()

    @ext.job
    def huge_total(job) -> str:
        job.progress(1, total=10**400)
        time.sleep(0.2)  # a job that takes its time (not reached: progress() refuses the total)
        return "ok"

    jobs = (not_json, too_big, unprintable, huge_total)
    with app.app_context():
        handles = [j.start() for j in jobs]
        docs = [h.wait(10) for h in handles]
        stored = [h.status() for h in handles]
        pool_lives_on = define_jobs(ext)["count"].start(3).wait(10)
    assert stored == docs  # each ended in a final document that was stored, not only returned
    assert [d["status"] for d in docs] == ["failed"] * len(jobs)
    assert all(d["result"] is None for d in docs)
    # each error says what was wrong, naming the field or the limit
    assert docs[0]["error"]["type"] == "UnserializableState"
    assert "result.rows[0].when" in docs[0]["error"]["message"]
    assert docs[1]["error"]["type"] == "StateTooLarge"
    assert "max_entry_size" in docs[1]["error"]["message"]
    assert docs[2]["error"]["type"] == "Unprintable"
    # refused where it entered, in the job, naming the value: not a document that cannot be stored
    assert docs[3]["error"]["type"] == "ValueError"
    assert "total" in docs[3]["error"]["message"]
    assert pool_lives_on["status"] == "succeeded"


def test_simultaneous_first_starts_share_one_writer(make_jobs, redis_url) -> None:
    app, ext, jobs = make_jobs(redis_url)
    barrier = threading.Barrier(8)
    handles, errors = [], []

    def start() -> None:
        with app.app_context():
            barrier.wait()
            try:
                handles.append(jobs["count"].start(3))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    name = f"asyncstate-writer-{ext.app_state(app).instance_id}"
    writers = [t for t in threading.enumerate() if t.name == name]
    assert len(writers) == 1 and writers[0].is_alive()
    with app.app_context():
        assert all(h.wait(10)["status"] == "succeeded" for h in handles)


def test_finished_jobs_release_their_cancel_events(make_jobs, backend_url) -> None:
    app, ext, jobs = make_jobs(backend_url)
    with app.app_context():
        for _ in range(20):
            jobs["count"].start(1).wait(10)
    assert ext.app_state(app).store.held_keys() == []


def test_a_quiet_jobs_state_entry_does_not_expire_while_it_runs(make_app, backend_url) -> None:
    @dataclass
    class Quiet:
        n: int = 0

    app, ext = make_app(backend_url, ASYNCSTATE_EXPIRES=1, ASYNCSTATE_HEARTBEAT_INTERVAL=0.3)

    @ext.job(state=Quiet)
    def quiet(job) -> int:
        time.sleep(2.0)  # longer than the expiry, with no writes at all
        assert job.state.update(lambda s: setattr(s, "n", 7))
        return job.state.get().n

    with app.app_context():
        doc = quiet.start().wait(10)
    assert doc["status"] == "succeeded" and doc["result"] == 7


FORK_SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
from support.apps import make_app, define_jobs
app, ext = make_app({url!r})
jobs = define_jobs(ext)
runner = ext.app_state(app)
ids = []
for _ in range(2):
    read, write = os.pipe()
    if os.fork() == 0:
        with app.app_context():
            jobs["count"].start(1).wait(10)
        os.write(write, runner.instance_id.encode())
        os._exit(0)
    os.close(write)
    ids.append(os.read(read, 200).decode())
    os.wait()
print(runner.instance_id, *ids)
"""


def test_forked_workers_each_get_their_own_instance_id(redis_url) -> None:
    tests = os.path.dirname(__file__)
    out = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT.format(tests=tests, url=redis_url)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    parent, *children = out.stdout.split()
    assert len({parent, *children}) == 3, out.stdout


def test_reading_a_finished_job_keeps_it_alive_and_silence_lets_it_expire(
    make_jobs, backend_url
) -> None:
    app, _ext, jobs = make_jobs(backend_url, ASYNCSTATE_EXPIRES=1)
    with app.app_context():
        watched, ignored = jobs["count"].start(1), jobs["count"].start(1)
        watched.wait(10)
        ignored.wait(10)
        for _ in range(5):  # 2.5 s, one read every 0.5 s: the silence under test
            time.sleep(0.5)
            assert watched.status()["status"] == "succeeded"
        assert ignored.status() is None


def test_wait_and_status_agree_on_cancel_requested(make_app, backend_url) -> None:
    @dataclass
    class Steps:
        n: int = 0

    app, ext = make_app(backend_url)

    @ext.job(state=Steps)
    def stepping(job) -> None:
        while not job.cancelled.wait(0.01):
            pass

    with app.app_context():
        handle = stepping.start()
        wait_until(lambda: _running(handle), 5, message="the job runs")
        assert ext.state.cancel(Steps, name=handle.id)  # the state entry shares the job's Event
        waited = handle.wait(10)
        assert waited == handle.status()
        assert waited["status"] == "cancelled"


def test_running_job_outlives_an_expiry_shorter_than_the_heartbeat(make_jobs, backend_url) -> None:
    app, _ext, jobs = make_jobs(
        backend_url, ASYNCSTATE_EXPIRES=1.5, ASYNCSTATE_HEARTBEAT_INTERVAL=5
    )
    with app.app_context():
        handle = jobs["stubborn"].start(3.5)  # silent: no progress writes at all
        for _ in range(6):  # 3 s, twice the expiry: the time that passes is what is tested
            time.sleep(0.5)
            assert handle.status()["status"] == "running"
        assert handle.cancel() is True
        assert handle.wait(10)["status"] == "cancelled"


def test_a_deep_value_costs_memory_in_its_depth_not_its_square() -> None:
    """A value's path is spelled out only when it is refused: 800 levels under 1,000-character
    keys once built 800 ever longer paths (320 MB); now a few MB, and a refusal at the bottom
    still names the whole path."""
    import tracemalloc

    import pytest

    from flask_asyncstate import UnserializableState, serialization

    key = "k" * 1000
    value: object = 1
    for _ in range(800):
        value = {key: value}
    tracemalloc.start()
    serialization.check_value(value, "result", "job 'deep'")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20, peak
    bad: object = {"when": object()}
    for name in ("c", "b", "a"):
        bad = {name: [bad]}
    with pytest.raises(UnserializableState) as refused:
        serialization.check_value(bad, "result", "job 'deep'")
    assert refused.value.path == "result.a[0].b[0].c[0].when"
