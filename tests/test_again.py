"""Jobs that run again: retries after a failure, resumes after their process stopped, and
"Try again" (issue 24), on both stores with the thread pool. Workers and real process
deaths: tests/test_again_procs.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from support.waiting import wait_until

from flask_asyncstate import JobCancelled, JobNotRetryable, testing


def _define(ext: Any, calls: list[Any], fail_times: int = 2) -> dict[str, Any]:
    @ext.job(retries=2, backoff=0.1)
    def flaky(job: Any, n: int) -> dict[str, Any]:
        calls.append((job.attempt, n))
        if len(calls) <= fail_times:
            raise ConnectionError(f"flaky dependency ({len(calls)})")
        return {"n": n, "attempt": job.attempt}

    @ext.job(retries=3, retry_on=(ConnectionError,), backoff=0.05)
    def picky(job: Any) -> None:
        calls.append(job.attempt)
        raise ValueError("not a retryable error")

    @ext.job(retries=2, backoff=30)
    def slow_retry(job: Any) -> None:
        calls.append(job.attempt)
        raise ConnectionError("down")

    @ext.job(resumable=True)
    def items(job: Any, count: int, gate: str = "") -> int:
        done = 0
        calls.append(("run", job.attempt, job.resumed, job.cursor))
        for i in job.iter(range(count)):
            calls.append(i)
            time.sleep(0.01)
            done += 1
        return done

    @ext.job
    def fails_once(job: Any, text: str) -> str:
        calls.append(text)
        if len(calls) == 1:
            raise RuntimeError("first run fails")
        return text.upper()

    return {
        "flaky": flaky,
        "picky": picky,
        "slow_retry": slow_retry,
        "items": items,
        "fails_once": fails_once,
    }


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_job_whose_first_two_runs_raise_succeeds_on_the_third_with_the_same_token(
    make_app: Any, backend: str, request: pytest.FixtureRequest
) -> None:
    url = None if backend == "memory" else request.getfixturevalue("redis_url")
    app, ext = make_app(url)
    calls: list[Any] = []
    jobs = _define(ext, calls)
    with app.test_request_context():
        handle = jobs["flaky"].start(7)
        token = handle.token
        seen: set[tuple[str, Any, Any]] = set()

        def watch() -> bool:
            doc = handle.status() or {}
            seen.add((doc.get("status"), doc.get("attempt"), doc.get("retry_at") is not None))
            return doc.get("status") == "succeeded"

        wait_until(watch, 15, interval=0.01)
        doc = handle.status()
    assert doc is not None
    assert (doc["status"], doc["result"], doc["attempt"], doc["max_attempts"]) == (
        "succeeded",
        {"n": 7, "attempt": 3},
        3,
        3,
    )
    assert [c[0] for c in calls] == [1, 2, 3]
    assert ("queued", 2, True) in seen  # waiting for its retry: queued, retry_at set
    assert doc["retry_at"] is None and doc["error"] is None
    assert ext.status(token)["id"] == handle.id  # the same token throughout
    print(f"{backend}: attempts {[c[0] for c in calls]}; states seen {sorted(map(str, seen))}")


def test_only_retry_on_exceptions_retry_and_the_last_attempt_fails(make_app: Any) -> None:
    app, ext = make_app()
    calls: list[Any] = []
    jobs = _define(ext, calls, fail_times=99)
    with app.app_context():
        doc = jobs["picky"].start().wait(10)
        assert doc["status"] == "failed" and calls == [1]
        calls.clear()
        doc = jobs["flaky"].start(1).wait(15)
    assert (doc["status"], doc["attempt"], doc["error"]["type"]) == ("failed", 3, "ConnectionError")
    assert [c[0] for c in calls] == [1, 2, 3]


def test_a_cancel_during_the_retry_wait_ends_it_at_once_and_it_never_runs_again(
    make_app: Any, backend_url: str | None
) -> None:
    app, ext = make_app(backend_url)
    calls: list[Any] = []
    jobs = _define(ext, calls)
    with app.app_context():
        handle = jobs["slow_retry"].start()
        wait_until(lambda: (handle.status() or {}).get("retry_at") is not None, 10)
        doc = handle.status()
        assert doc["status"] == "queued" and doc["attempt"] == 2
        assert doc["retry_at"] > time.time() + 20  # backoff 30 s, jittered up
        asked = time.monotonic()
        assert handle.cancel() is True
        assert handle.wait(5)["status"] == "cancelled"
        took = time.monotonic() - asked
        time.sleep(1.5)  # two looks of the dispatcher
    assert calls == [1]
    print(f"cancel during the retry wait: cancelled {1000 * took:.0f} ms after the request")


def test_a_retry_wait_is_in_the_store_and_another_instance_runs_it(redis_url: str) -> None:
    from support.apps import make_app as build

    calls_a: list[Any] = []
    calls_b: list[Any] = []
    app_a, ext_a = build(redis_url)
    jobs_a = _define(ext_a, calls_a, fail_times=1)
    with app_a.app_context():
        handle = jobs_a["flaky"].start(3)
        wait_until(lambda: (handle.status() or {}).get("retry_at") is not None, 10)
    ext_a.shutdown(2)  # a deploy while it waits: the retry is due in the store
    app_b, ext_b = build(redis_url)
    _define(ext_b, calls_b, fail_times=0)
    try:
        with app_b.app_context():
            ext_b.app_state().ensure_running()  # B serves requests: its writer looks
            doc = ext_b.app_state().job_handle(handle.id).wait(10)
        assert (doc["status"], doc["attempt"], doc["result"]["n"]) == ("succeeded", 2, 3)
        assert [c[0] for c in calls_a] == [1] and [c[0] for c in calls_b] == [2]
    finally:
        ext_b.shutdown(2)


def test_a_resumable_job_stopped_by_a_shutdown_goes_on_from_its_cursor_elsewhere(
    redis_url: str,
) -> None:
    from support.apps import make_app as build

    calls_a: list[Any] = []
    calls_b: list[Any] = []
    app_a, ext_a = build(redis_url)
    jobs_a = _define(ext_a, calls_a)
    with app_a.app_context():
        handle = jobs_a["items"].start(100)
        wait_until(lambda: (handle.status() or {}).get("current", 0) >= 30, 10)
    ext_a.shutdown(2)  # SIGTERM under gunicorn: the job's Event is set, it stops
    app_b, ext_b = build(redis_url)
    _define(ext_b, calls_b)
    try:
        with app_b.app_context():
            state = ext_b.app_state()
            doc = state.records.status(handle.id)
            assert doc["status"] == "queued" and doc["resumed"] is True, doc
            state.ensure_running()
            doc = state.job_handle(handle.id).wait(15)
        first = [c for c in calls_a if isinstance(c, int)]
        second = [c for c in calls_b if isinstance(c, int)]
        run_b = next(c for c in calls_b if isinstance(c, tuple))
        assert doc["status"] == "succeeded" and doc["result"] == 100 - run_b[3]
        assert run_b[:3] == ("run", 2, True)
        assert sorted(set(first) | set(second)) == list(range(100))  # every item, once at least
        twice = set(first) & set(second)
        assert len(twice) <= 1, twice  # a shutdown stops between items: at most the one in hand
        print(
            f"shutdown at item {max(first)}: resumed on B from cursor {run_b[3]},"
            f" {len(twice)} item(s) done twice"
        )
    finally:
        ext_b.shutdown(2)


def test_resumes_are_bounded(make_app: Any) -> None:
    app, ext = make_app()

    @ext.job(resumable=1)
    def once(job: Any) -> None:
        job.cancelled.wait(10)

    with app.app_context():
        handle = once.start()
        wait_until(lambda: handle.status()["status"] == "running", 5)
        state = ext.app_state()
        local = state.local_jobs.get(handle.id)
        assert state.lifecycle.resume_later(local.ctx, local.job) is True
        doc = handle.status()
        assert (doc["status"], doc["attempt"], doc["resumed"]) == ("queued", 2, True)
        wait_until(lambda: handle.status()["status"] == "running", 5)
        local = state.local_jobs.get(handle.id)
        assert state.lifecycle.resume_later(local.ctx, local.job) is False  # none left
        handle.cancel()
        assert handle.wait(5)["status"] == "cancelled"


def test_try_again_runs_a_failed_job_with_the_same_arguments_and_token(
    make_app: Any, backend_url: str | None
) -> None:
    app, ext = make_app(backend_url)
    calls: list[Any] = []
    jobs = _define(ext, calls)
    http = testing.client(app)

    @app.post("/start")
    def start() -> dict[str, str]:
        return {"token": jobs["fails_once"].start("abc").token}

    token = http.post("/start").get_json()["token"]
    wait_until(
        lambda: http.get(f"/asyncstate/progress/{token}").get_json()["status"] == "failed", 10
    )
    answer = http.post(f"/asyncstate/retry/{token}")
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json()["attempt"] == 2
    wait_until(
        lambda: http.get(f"/asyncstate/progress/{token}").get_json()["status"] == "succeeded", 10
    )
    doc = http.get(f"/asyncstate/progress/{token}").get_json()
    assert (doc["result"], doc["attempt"], doc["max_attempts"], doc["error"]) == ("ABC", 2, 2, None)
    assert calls == ["abc", "abc"]
    # a finished job that succeeded, and an unfinished one, cannot be run again: 409
    assert http.post(f"/asyncstate/retry/{token}").status_code == 409
    # another session: 404, as for any other route
    other = testing.client(app)
    assert other.post(f"/asyncstate/retry/{token}").status_code == 404
    # GET: 405; no same-origin proof: 403
    assert http.get(f"/asyncstate/retry/{token}").status_code == 405
    assert app.test_client().post(f"/asyncstate/retry/{token}").status_code == 403


def test_try_again_respects_the_quota_and_unique(make_app: Any) -> None:
    app, ext = make_app(ASYNCSTATE_MAX_JOBS_PER_OWNER=1)
    release = threading.Event()

    @ext.job(unique=True)
    def single(job: Any, fail: bool) -> None:
        if fail:
            raise RuntimeError("x")
        release.wait(10)

    http = testing.client(app)

    @app.post("/start/<int:fail>")
    def start(fail: int) -> dict[str, str]:
        return {"token": single.start(bool(fail)).token}

    failed = http.post("/start/1").get_json()["token"]
    wait_until(
        lambda: http.get(f"/asyncstate/progress/{failed}").get_json()["status"] == "failed", 5
    )
    running = http.post("/start/0").get_json()["token"]
    assert running != failed
    answer = http.post(f"/asyncstate/retry/{failed}")
    assert answer.status_code in (409, 429), answer.get_json()  # unique first, then quota
    release.set()
    wait_until(
        lambda: http.get(f"/asyncstate/progress/{running}").get_json()["status"] == "succeeded", 5
    )
    with app.app_context(), pytest.raises(JobNotRetryable):
        ext.app_state().job_handle(ext.app_state().signer.unsign(running)).retry()


def test_retry_options_are_checked_where_the_job_is_declared(make_app: Any) -> None:
    _app, ext = make_app()
    for bad in (
        {"retries": -1},
        {"retries": True},
        {"backoff": -1},
        {"backoff": float("nan")},
        {"resumable": -2},
        {"cancel_grace": 0},
        {"queue": "a b"},
    ):
        with pytest.raises(ValueError):
            ext.job(name=f"bad{len(str(bad))}", **bad)(lambda job: None)
    with pytest.raises(TypeError):
        ext.job(name="bad_types", retry_on=("x",))(lambda job: None)


def test_a_cancelled_job_never_retries(make_app: Any) -> None:
    app, ext = make_app()
    calls: list[int] = []

    @ext.job(retries=3, backoff=0.01)
    def stop(job: Any) -> None:
        calls.append(job.attempt)
        job.cancelled.wait(5)
        raise JobCancelled("stopped")

    with app.app_context():
        handle = stop.start()
        wait_until(lambda: handle.status()["status"] == "running", 5)
        handle.cancel()
        assert handle.wait(5)["status"] == "cancelled"
    assert calls == [1]


def test_simultaneous_try_agains_run_the_job_once_and_a_cancelled_job_runs_uncancelled(
    make_app: Any, backend_url: str | None
) -> None:
    app, ext = make_app(backend_url)
    runs: list[bool] = []
    hold = threading.Event()

    @ext.job
    def waits(job: Any) -> str:
        runs.append(job.cancelled.is_set())
        if len(runs) == 1:
            job.cancelled.wait(10)
            job.check_cancelled()
        hold.wait(10)
        return "done"

    with app.app_context():
        handle = waits.start()
        wait_until(lambda: handle.status()["status"] == "running", 5)
        handle.cancel()
        assert handle.wait(5)["status"] == "cancelled"
        outcomes: list[str] = []

        def again() -> None:
            try:
                ext.app_state().lifecycle.rerun(handle.id)
                outcomes.append("ran")
            except JobNotRetryable:
                outcomes.append("refused")

        threads = [threading.Thread(target=again) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes).count("ran") == 1, outcomes
        hold.set()
        doc = handle.wait(10)
        assert (doc["status"], doc["result"], doc["cancel_requested"]) == (
            "succeeded",
            "done",
            False,
        )
        time.sleep(0.5)
    assert runs == [False, False]  # once more, and not born cancelled


def test_a_retry_waits_at_most_half_the_expiry_so_its_entries_outlive_the_wait(
    make_app: Any,
) -> None:
    app, ext = make_app(ASYNCSTATE_EXPIRES=4)
    calls: list[Any] = []

    @ext.job(retries=1, backoff=3600)
    def hourly(job: Any) -> str:
        calls.append(job.attempt)
        if job.attempt == 1:
            raise ConnectionError("down")
        return "ok"

    with app.app_context():
        handle = hourly.start()
        wait_until(lambda: (handle.status() or {}).get("retry_at") is not None, 5)
        wait = handle.status()["retry_at"] - time.time()
        assert 0 < wait <= 2.0, wait  # half of ASYNCSTATE_EXPIRES, not an hour
        assert handle.wait(10)["status"] == "succeeded"
    assert calls == [1, 2]
    for retry in range(1, 80):  # never past the cap, jitter included; no overflow
        assert hourly.retry_delay(retry) <= 3600


def test_a_retry_after_a_resumed_run_starts_over(make_app: Any) -> None:
    app, ext = make_app()
    runs: list[tuple[int, bool, int]] = []

    @ext.job(resumable=True, retries=1, backoff=0.05)
    def work(job: Any) -> int:
        runs.append((job.attempt, job.resumed, job.cursor))
        for i in job.iter(range(10)):
            if job.attempt == 1 and i == 5:
                job.cancelled.wait(10)  # held here: the test resumes it
                job.check_cancelled()
            if job.attempt == 2 and i == 7:
                raise ConnectionError("flaky")
        return job.attempt

    with app.app_context():
        handle = work.start()
        wait_until(lambda: (handle.status() or {}).get("current") == 5, 5)
        state = ext.app_state()
        local = state.local_jobs.get(handle.id)
        local.ctx.stop_reason = "shutdown"
        local.ctx.cancelled.set()  # what a deploy does: it resumes from its cursor
        doc = handle.wait(10)
    assert doc["status"] == "succeeded" and doc["result"] == 3
    assert runs == [(1, False, 0), (2, True, 5), (3, False, 0)], runs


def test_a_job_whose_process_died_is_read_lost_and_can_be_tried_again(redis_url: str) -> None:
    """A process that dies leaves its job stored ``running``: readers see ``lost``, "Try
    again" takes it (its owner slot still held), a resumable one reads ``queued``."""
    import json

    import redis
    from support.apps import make_app as build

    app, ext = build(redis_url, ASYNCSTATE_MAX_JOBS_PER_OWNER=1)
    calls: list[Any] = []
    jobs = _define(ext, calls)
    http = testing.client(app)

    @app.post("/start")
    def start() -> dict[str, str]:
        return {"token": jobs["fails_once"].start("x").token}

    try:
        calls.append("first run fails")  # the next run succeeds
        token = http.post("/start").get_json()["token"]
        job_id = ext.app_state().signer.unsign(token)
        wait_until(
            lambda: http.get(f"/asyncstate/progress/{token}").get_json()["status"] == "succeeded",
            5,
        )
        # Make it look like a run on a process that died: stored running, on a dead instance.
        client = redis.Redis.from_url(redis_url)
        key = ext.app_state().records.job_key(job_id)
        doc = json.loads(client.hget(key, "d"))
        doc.update(status="running", instance="dead-instance", result=None)
        client.hset(key, "d", json.dumps(doc))
        owner_key = ext.app_state().records.owner_key(doc["owner"])
        client.sadd(f"{owner_key}:a", job_id)  # it holds its slot, as a running job does
        assert http.get(f"/asyncstate/progress/{token}").get_json()["status"] == "lost"
        answer = http.post(f"/asyncstate/retry/{token}")
        assert answer.status_code == 202, answer.get_json()  # no quota refusal: its own slot
        wait_until(
            lambda: http.get(f"/asyncstate/progress/{token}").get_json()["status"] == "succeeded",
            5,
        )
        assert calls[-1] == "x"
        # resumable: read queued (it runs again when a process looks), never a final lost
        doc = json.loads(client.hget(key, "d"))
        doc.update(status="running", instance="dead-instance", resumes_left=1)
        client.hset(key, "d", json.dumps(doc))
        shown = http.get(f"/asyncstate/progress/{token}").get_json()
        assert (shown["status"], shown["resumed"]) == ("queued", True)
    finally:
        ext.shutdown(2)


def test_a_job_declared_try_again_false_is_never_run_again_on_request(make_app: Any) -> None:
    app, ext = make_app()

    @ext.job(try_again=False)
    def charge(job: Any) -> None:
        raise RuntimeError("the card was declined")

    http = testing.client(app)

    @app.post("/charge")
    def start() -> dict[str, str]:
        return {"token": charge.start().token}

    token = http.post("/charge").get_json()["token"]
    wait_until(
        lambda: http.get(f"/asyncstate/progress/{token}").get_json()["status"] == "failed", 5
    )
    answer = http.post(f"/asyncstate/retry/{token}")
    assert answer.status_code == 409
    assert answer.get_json() == {"error": "This job cannot be run again"}  # the user's words


def test_the_sweep_moves_a_dead_instances_resumable_job_back_and_it_runs(
    make_app: Any, backend_url: str | None
) -> None:
    app, ext = make_app(backend_url)
    calls: list[Any] = []
    jobs = _define(ext, calls)
    state = ext.app_state()
    with app.app_context():
        handle = jobs["items"].start(20)
        handle.wait(10)
        key = state.records.job_key(handle.id)
        # as if its process had died at item 12: stored running on an instance with no beat
        state.store.update(
            key,
            lambda d: {
                **d,
                "status": "running",
                "instance": "gone-1-abc",
                "cursor": 12,
                "resumes_left": 1,
                "result": None,
            },
        )
        state.records.watch(handle.id, time.time())
        calls.clear()
        state.lifecycle.sweep()
        doc = state.records.status(handle.id)
        assert (doc["status"], doc["resumed"], doc["attempt"]) == ("queued", True, 2), doc
        state.lifecycle.dispatch()
        doc = handle.wait(10)
    assert (doc["status"], doc["result"]) == ("succeeded", 8)  # items 12..19
    assert calls[0] == ("run", 2, True, 12)
