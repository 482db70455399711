"""Admission and the hostile shapes of input: quotas under races, queue bounds, stream limits,
every method, session-store outages, users sharing a browser, and jobs that misbehave."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import redis
import requests
from cachelib import FileSystemCache
from flask import flash, session
from flask_login import LoginManager, UserMixin, login_user, logout_user
from flask_session import Session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.apps import Gate, define_jobs
from support.apps import make_app as build_app
from support.redis_server import RedisServer
from support.waiting import wait_until
from werkzeug.serving import make_server

from flask_asyncstate import QueueFull, QuotaExceeded, owners
from flask_asyncstate.errors import StoreUnavailable
from flask_asyncstate.records import FINAL, JOB_KIND, OWNER_KIND, JobRecords, new_document


def _job_keys(ext, app) -> list[str]:
    with app.app_context():
        return ext.store.keys(JOB_KIND)


# -- the owner index: one contract, both stores ------------------------------------------------


def test_claims_accept_exactly_the_limit_under_concurrent_claims(store) -> None:
    key = store.key(OWNER_KIND, "alice")
    barrier = threading.Barrier(16)

    def claim(i: int) -> bool:
        barrier.wait()
        return store.claim(key, f"job{i}", limit=5, keep=5, score=float(i))

    with ThreadPoolExecutor(16) as pool:
        accepted = [i for i, ok in enumerate(pool.map(claim, range(16))) if ok]
    assert len(accepted) == 5
    claims = store.claims(key)
    assert claims.active == {f"job{i}" for i in accepted}
    assert set(claims.recent) == claims.active


def test_claims_keep_active_members_and_the_newest_finished_ones(store) -> None:
    key = store.key(OWNER_KIND, "bob")
    assert store.claims(key).recent == []
    for i in range(4):
        assert store.claim(key, f"j{i}", limit=2, keep=2, score=float(i)) is (i < 2)
    store.unclaim(key, ["j0", "j1"])
    for i in range(2, 8):  # each finishes right after it started
        assert store.claim(key, f"j{i}", limit=2, keep=2, score=float(i))
        store.unclaim(key, [f"j{i}"])
    assert store.claim(key, "long", limit=2, keep=2, score=1.5)  # old score, but active
    claims = store.claims(key)
    assert claims.active == {"long"}
    assert claims.recent == ["j7", "j6", "long"]  # active kept, 2 newest finished, newest first
    store.forget(key, ["j6", "long", "absent"])  # a dismissed job: listed nowhere any more
    claims = store.claims(key)
    assert claims.active == set() and claims.recent == ["j7"]


def test_a_refused_start_leaves_no_document_place_or_listing(make_app, redis_url) -> None:
    """A start's steps go to the store together; a refusal undoes every one of them."""
    app, ext = make_app(redis_url, owner_loader=lambda: "alice", ASYNCSTATE_MAX_JOBS_PER_OWNER=1)
    gate = threading.Event()

    @ext.job
    def held(job) -> None:
        gate.wait(10)

    runner = ext.app_state(app)
    try:
        with app.test_request_context():
            first = held.start()
            for _ in range(5):
                with pytest.raises(QuotaExceeded):
                    held.start()
            assert _job_keys(ext, app) == [runner.records.job_key(first.id)]
            owner = runner.records.status(first.id, internal=True)["owner"]
            assert runner.store.claims(runner.records.owner_key(owner)).active == {first.id}
            assert runner.store.ranked(runner.records.jobs_list_key(), 10) == [first.id]
    finally:
        gate.set()
        ext.shutdown(5)


# -- quota: N simultaneous starts of one session --------------------------------------------


@pytest.fixture
def threaded_app(make_app, redis_url):
    """A Redis-backed app with Flask-Session in the same Redis, on a real threaded server."""
    sessions = redis.Redis.from_url(redis_url)
    app, ext = make_app(
        redis_url, SESSION_TYPE="redis", SESSION_REDIS=sessions, SESSION_KEY_PREFIX="sess:"
    )
    Session(app)
    jobs = define_jobs(ext)

    @app.post("/start")
    def start():
        return {"token": jobs["until_cancelled"].start(30).token}, 202

    @app.get("/hello")
    def hello() -> str:
        session["seen"] = True
        return "hello"

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, ext, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    sessions.close()


def test_simultaneous_starts_of_one_session_accept_exactly_the_quota(threaded_app) -> None:
    app, ext, url = threaded_app
    browser = requests.Session()
    browser.get(f"{url}/hello").raise_for_status()  # the session exists; its starts race below
    cookies = browser.cookies.get_dict()
    barrier = threading.Barrier(16)

    def start(_i: int) -> requests.Response:
        barrier.wait()
        return requests.post(f"{url}/start", cookies=cookies, timeout=20)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(start, range(16)))
    codes = sorted(a.status_code for a in answers)
    accepted = [a.json()["token"] for a in answers if a.status_code == 202]
    assert codes == [202] * 5 + [429] * 11
    assert all(a.headers["Content-Type"] == "application/json" for a in answers)
    listed = requests.get(f"{url}/asyncstate/jobs", cookies=cookies, timeout=5).json()
    with app.app_context():  # a token carries a timestamp and the listing signs anew: compare
        signer = ext.app_state(app).signer  # the jobs they name (none orphaned)
        assert sorted(j["id"] for j in listed) == sorted(map(signer.unsign, accepted))
        assert all(signer.unsign(j["token"]) == j["id"] for j in listed)
    for token in accepted:
        assert (
            requests.get(
                f"{url}/asyncstate/progress/{token}", cookies=cookies, timeout=5
            ).status_code
            == 200
        )
    assert len(_job_keys(ext, app)) == 5  # refused starts left nothing behind
    for token in accepted:
        requests.post(
            f"{url}/asyncstate/cancel/{token}",
            cookies=cookies,
            headers={"X-Requested-With": "test"},
            timeout=5,
        )
    print(
        f"16 simultaneous starts, one cookie: {codes.count(202)} accepted, "
        f"{codes.count(429)} refused, {len(listed)} listed"
    )


def test_a_job_whose_instance_died_frees_its_quota_slot(make_jobs, backend_url) -> None:
    app, ext, jobs = make_jobs(backend_url, ASYNCSTATE_MAX_JOBS_PER_OWNER=1)
    runner = ext.app_state(app)
    with app.test_request_context("/"):
        owner = owners.request_owner(create=True)
        # a job of a vanished instance: unfinished document, slot claimed, nobody to free it
        ghost = new_document("ghost", "x", "gone-1", owner)
        ghost["status"] = "running"
        runner.store.create(runner.records.job_key("ghost"), ghost)
        assert runner.records.admit(owner, "ghost", 1)
        handle = jobs["count"].start(1)  # the ghost reads lost: its slot is freed
        assert handle.wait(10)["status"] == "succeeded"


# -- the queue bound -------------------------------------------------------------------------


def test_start_beyond_max_queued_raises_queue_full_and_creates_nothing(
    make_jobs, backend_url
) -> None:
    app, ext, jobs = make_jobs(backend_url, ASYNCSTATE_MAX_WORKERS=1, ASYNCSTATE_MAX_QUEUED=2)
    gate = Gate()

    @app.post("/start")
    def start():
        return {"token": jobs["blocked"].start(gate.name).token}, 202

    with app.app_context():
        running = jobs["blocked"].start(gate.name)
        wait_until(lambda: running.status()["status"] == "running", 5, message="the job runs")
        queued = [jobs["blocked"].start(gate.name) for _ in range(2)]
        before = len(ext.store.keys(JOB_KIND))
        with pytest.raises(QueueFull):
            jobs["blocked"].start(gate.name)
        assert len(ext.store.keys(JOB_KIND)) == before
    answer = app.test_client().post("/start")
    assert answer.status_code == 503 and answer.is_json and "error" in answer.json
    assert int(answer.headers["Retry-After"]) > 0
    gate.set()
    for handle in [running, *queued]:
        assert handle.wait(10)["status"] == "succeeded"
    with app.app_context():
        assert jobs["count"].start(1).wait(10)["status"] == "succeeded"  # room again


@pytest.mark.reliability  # processes, servers or a flood: the whole suite runs it
def test_heartbeat_stays_small_with_thousands_of_queued_jobs(make_jobs, redis_url) -> None:
    app, ext, jobs = make_jobs(
        redis_url,
        ASYNCSTATE_MAX_WORKERS=1,
        ASYNCSTATE_MAX_QUEUED=5000,
        max_entry_size=4096,
    )
    gate = Gate()
    runner = ext.app_state(app)
    interval = app.config["ASYNCSTATE_HEARTBEAT_INTERVAL"]
    client = redis.Redis.from_url(redis_url)
    with app.app_context():
        handles = [jobs["blocked"].start(gate.name) for _ in range(3000)]
        queued_at = time.time()

        def late_beat() -> bytes | None:  # the writer still beats, a while after the queue filled
            raw = client.hget(runner.records.instance_key(runner.instance_id), "d")
            return raw if raw and json.loads(raw)["beat_at"] > queued_at + 2 * interval else None

        beat = wait_until(
            late_beat,
            10 * interval,
            interval=0.05,
            message="a heartbeat two intervals after 3,000 jobs were queued",
        )
        client.close()
        assert runner.writer.alive
        info = json.loads(beat)
        assert info["jobs"] == 3000 and len(beat) < 300
        assert time.time() - info["beat_at"] < 2 * interval
        sample = runner.records.statuses([h.id for h in handles[::100]])
        assert {d["status"] for d in sample} <= {"queued", "running"}  # none reads lost
        for handle in handles:
            handle.cancel()
        gate.set()
        assert handles[-1].wait(30)["status"] == "cancelled"
    print(f"3,000 queued jobs: heartbeat entry {len(beat)} bytes, writer alive")


# -- SECRET_KEY: nothing created that cannot be bound -----------------------------------------


def test_start_without_secret_key_creates_nothing(make_jobs) -> None:
    app, ext, jobs = make_jobs(SECRET_KEY=None)
    with app.test_request_context("/"), pytest.raises(RuntimeError, match="SECRET_KEY"):
        jobs["count"].start(1)
    assert _job_keys(ext, app) == []


# -- every method, the same headers whatever the token ---------------------------------------


@pytest.mark.parametrize("method", ["PROPFIND", "TRACE", "BREW", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize(
    "path",
    [
        "/asyncstate/progress/x",
        "/asyncstate/cancel/x",
        "/asyncstate/jobs",
        "/asyncstate/asyncstate.js",
    ],
)
def test_every_method_gets_json(make_app, method: str, path: str) -> None:
    app, _ext = make_app()
    answer = app.test_client().open(path, method=method)
    assert answer.status_code == 405, answer.data
    assert answer.is_json and answer.json["error"]
    assert answer.headers["Cache-Control"] == "no-store"
    expected = {"progress": {"GET", "HEAD", "POST"}, "cancel": {"POST"}}.get(
        path.split("/")[2], {"GET", "HEAD"}
    )
    assert set(answer.headers["Allow"].split(", ")) == expected


def test_head_and_options_work_where_get_does(app, jobs) -> None:

    @app.post("/start")
    def start():
        return {"token": jobs["count"].start(1).token}

    client = app.test_client()
    token = client.post("/start").json["token"]
    head = client.head(f"/asyncstate/progress/{token}")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Type"] == "application/json"
    options = client.options(f"/asyncstate/progress/{token}")
    assert options.status_code == 200 and options.is_json
    assert set(options.headers["Allow"].split(", ")) == {"GET", "POST", "HEAD"}


def test_headers_do_not_tell_a_forged_token_from_a_valid_one(app, jobs) -> None:

    @app.post("/start")
    def start():
        return {"token": jobs["count"].start(1).token}

    owner = app.test_client()
    token = owner.post("/start").json["token"]
    stranger = app.test_client()
    stranger.get("/asyncstate/jobs")
    answers = [
        stranger.get(f"/asyncstate/progress/{t}")
        for t in (token, token[:-2] + "xx", "garbage", "a" * 600)
    ]
    assert {a.status_code for a in answers} == {404}
    assert len({a.data for a in answers}) == 1
    shapes = {
        tuple(sorted((k, v) for k, v in a.headers.items() if k != "Content-Length"))
        for a in answers
    }
    assert len(shapes) == 1, shapes
    assert "Cookie" in answers[0].headers["Vary"]


# -- stream limits ---------------------------------------------------------------------------


def test_streams_beyond_the_session_limit_answer_429(make_jobs) -> None:
    app, ext, jobs = make_jobs(max_streams_per_owner=2, ASYNCSTATE_MAX_STREAMS=3)

    @app.post("/start")
    def start():
        return {"token": jobs["until_cancelled"].start(30).token}

    alice, bob = app.test_client(), app.test_client()
    a_token, b_token = (c.post("/start").json["token"] for c in (alice, bob))
    streams = [alice.get(f"/asyncstate/events/{a_token}", buffered=False) for _ in range(2)]
    assert all(s.status_code == 200 for s in streams)
    refused = alice.get(f"/asyncstate/events/{a_token}")
    assert refused.status_code == 429 and refused.is_json
    assert int(refused.headers["Retry-After"]) > 0
    third = bob.get(f"/asyncstate/events/{b_token}", buffered=False)
    assert third.status_code == 200  # bob has his own allowance, up to the process limit
    assert bob.get(f"/asyncstate/events/{b_token}").status_code == 429  # process is full
    assert ext.app_state(app).streams.count() == 3
    for s in [*streams, third]:
        s.close()
    assert ext.app_state(app).streams.count() == 0
    again = alice.get(f"/asyncstate/events/{a_token}", buffered=False)
    assert again.status_code == 200
    again.close()
    with app.app_context():
        for token in (a_token, b_token):
            ext.cancel(token)


# -- session store outage: our routes still answer JSON ---------------------------------------


def test_session_store_down_gives_503_json_on_our_routes(make_app) -> None:
    server = RedisServer().start()
    sessions = redis.Redis.from_url(server.url, socket_timeout=1)
    try:
        app, ext = make_app(
            server.url, SESSION_TYPE="redis", SESSION_REDIS=sessions, SESSION_KEY_PREFIX="sess:"
        )
        Session(app)  # after us: the guard still wraps it
        jobs = define_jobs(ext)

        @app.post("/start")
        def start():
            return {"token": jobs["count"].start(40, 0.05).token}

        client = app.test_client()
        token = client.post("/start").json["token"]
        assert client.get(f"/asyncstate/progress/{token}").status_code == 200
        server.stop()
        for path in (
            f"/asyncstate/progress/{token}",
            "/asyncstate/jobs",
            f"/asyncstate/events/{token}",
            "/asyncstate/nothing-here",
        ):
            answer = client.get(path)
            assert answer.status_code == 503, (path, answer.data[:200])
            assert answer.is_json and answer.headers["Retry-After"]
        cancel = client.post(f"/asyncstate/cancel/{token}", headers={"X-Requested-With": "t"})
        assert cancel.status_code == 503 and cancel.is_json
        server.start()  # empty: the job rides out the outage and writes its final document
        with app.app_context():  # (the session did not survive, so ask by token, not as the user)
            doc = wait_until(
                lambda: (d := ext.status(token)) is not None and d["status"] in FINAL and d,
                15,
                interval=0.1,
                message="a final document after the outage",
            )
        assert doc["status"] == "succeeded" and doc["result"] == {"rows": 40}
    finally:
        sessions.close()
        server.stop()


# -- users sharing a browser (Flask-Login) ----------------------------------------------------


def test_next_user_on_the_same_browser_never_sees_the_previous_users_jobs(app, ext, jobs) -> None:
    login = LoginManager(app)

    class User(UserMixin):
        def __init__(self, uid: str) -> None:
            self.id = uid

    login.user_loader(User)

    @app.post("/login/<uid>")
    def do_login(uid: str) -> str:
        login_user(User(uid))
        return "ok"

    @app.post("/logout")
    def do_logout() -> str:
        logout_user()
        return "ok"

    @app.post("/start")
    def start():
        return {"token": jobs["until_cancelled"].start(30).token}

    browser = app.test_client()
    browser.post("/login/alice")
    alice_token = browser.post("/start").json["token"]
    assert [j["token"] for j in browser.get("/asyncstate/jobs").json] == [alice_token]
    browser.post("/logout")
    browser.post("/login/bob")
    assert browser.get("/asyncstate/jobs").json == []
    assert browser.get(f"/asyncstate/progress/{alice_token}").status_code == 404
    cancel = browser.post(f"/asyncstate/cancel/{alice_token}", headers={"X-Requested-With": "t"})
    assert cancel.status_code == 404
    bob_token = browser.post("/start").json["token"]
    assert [j["token"] for j in browser.get("/asyncstate/jobs").json] == [bob_token]
    with app.app_context():
        assert ext.status(alice_token)["status"] in ("queued", "running")  # logout cancels nothing
        ext.cancel(alice_token)
        ext.cancel(bob_token)


# -- jobs that misbehave still end final, and readable ----------------------------------------


def test_store_errors_inside_a_job_do_not_reach_the_user(make_app) -> None:
    app, ext = make_app()
    secret_detail = "Error 111 connecting to 127.0.0.1:6399"

    @ext.job
    def touches_store(job) -> None:
        raise StoreUnavailable(secret_detail)

    with app.app_context():
        doc = touches_store.start().wait(10)
    assert doc["status"] == "failed" and doc["error"]["type"] == "StoreUnavailable"
    # The address, not the bare port digits: those can occur in a timestamp.
    assert "127.0.0.1" not in json.dumps(doc) and ":6399" not in json.dumps(doc)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_writer_and_listener_survive_failures_and_are_restarted(
    make_jobs, redis_url, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.ERROR, "flask_asyncstate")
    app, ext, jobs = make_jobs(redis_url)
    runner = ext.app_state(app)
    store = runner.store
    with app.app_context():
        jobs["count"].start(1).wait(10)
    failures = {"flush": 3, "sweep": 3}
    # Fault injection: the writer's flush is public, the listener's sweep is not, and there
    # is no public way to make either fail; patched on the instance, undone by monkeypatch.
    real_flush, real_sweep = runner.lifecycle.flush, store._sweep

    def bad_flush() -> None:
        if failures["flush"]:
            failures["flush"] -= 1
            raise MemoryError("not really")  # not a StoreError: used to kill the writer
        real_flush()

    def bad_sweep() -> None:
        if failures["sweep"]:
            failures["sweep"] -= 1
            raise KeyError("boom")
        real_sweep()

    monkeypatch.setattr(runner.lifecycle, "flush", bad_flush)
    monkeypatch.setattr(store, "_sweep", bad_sweep)
    with app.app_context():
        handle = jobs["until_cancelled"].start(30)
        wait_until(
            lambda: not (failures["flush"] or failures["sweep"]),
            10,
            interval=0.05,
            message=lambda: f"every injected failure hit ({failures} left)",
        )
        writer = runner.writer.thread
        assert writer is not None and writer.is_alive()
        # the listener got over its failed sweeps: subscribed again (cleared on each failure)
        assert store.subscribed.wait(5), "the cancel listener did not resubscribe"
        handle.cancel()  # reaches the job through the listener that survived
        assert handle.wait(10)["status"] == "cancelled"

        # A thread that ended anyway (SystemExit is not caught) is started again
        monkeypatch.setattr(runner.lifecycle, "flush", lambda: (_ for _ in ()).throw(SystemExit()))
        writer.join(5)
        assert not writer.is_alive()
        monkeypatch.setattr(runner.lifecycle, "flush", real_flush)
        assert jobs["count"].start(3).wait(10)["status"] == "succeeded"
        assert runner.writer.thread is not writer and runner.writer.alive
    assert any("flush failed" in r.getMessage() for r in caplog.records)


_numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.tuples(inner),
        st.sets(st.integers(), max_size=2),
    ),
    max_leaves=12,
)
_calls = st.lists(
    st.one_of(
        st.tuples(
            st.just("progress"), _numbers, _numbers, st.one_of(st.none(), st.text(), _numbers)
        ),
        st.tuples(
            st.just("message"), st.one_of(st.text(max_size=3000), _numbers), st.none(), st.none()
        ),
    ),
    max_size=6,
)


@pytest.fixture(scope="module")
def property_apps(redis_server):
    """One app per store for the property test (hypothesis calls the test many times)."""
    made = {
        name: build_app(url, max_entry_size=2048)
        for name, url in (("memory", None), ("redis", redis_server.url))
    }
    yield made
    for _app, ext in made.values():
        ext.shutdown(timeout=2)


@pytest.mark.parametrize("backend", ["memory", "redis"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(calls=_calls, result=_values, raises=st.booleans())
def test_any_job_behaviour_ends_final_and_readable(
    property_apps, backend, calls, result, raises
) -> None:
    app, ext = property_apps[backend]

    @ext.job(name="arbitrary")
    def arbitrary(job):
        for name, a, b, c in calls:
            try:
                if name == "progress":
                    job.progress(a, total=b, message=c)
                else:
                    job.message(a)
            except (TypeError, ValueError):
                pass  # refused where it entered; the job goes on
        if raises:
            raise RuntimeError(result)
        return result

    with app.app_context():
        doc = arbitrary.start().wait(20)
        assert doc is not None and doc["status"] in FINAL
        assert doc == arbitrary.extension.app_state(app).records.status(doc["id"])
        json.dumps(doc, allow_nan=False)  # what the browser gets is valid JSON


def test_quota_message_speaks_to_the_user(make_jobs) -> None:
    app, _ext, jobs = make_jobs(ASYNCSTATE_MAX_JOBS_PER_OWNER=1)
    gate = Gate()
    with app.test_request_context("/"):
        jobs["blocked"].start(gate.name)
        with pytest.raises(QuotaExceeded) as caught:
            jobs["blocked"].start(gate.name)
    assert "ASYNCSTATE" not in caught.value.user_message  # for the user: no config names
    assert "ASYNCSTATE_MAX_JOBS_PER_OWNER" in str(caught.value)  # for the developer: which
    gate.set()


def test_session_clear_at_logout_hides_the_jobs_from_the_next_user(make_jobs, tmp_path) -> None:
    """A logout by ``session.clear()`` (no Flask-Login): the browser's next user is someone new."""
    app, ext, jobs = make_jobs(
        SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(str(tmp_path))
    )
    Session(app)

    @app.post("/start")
    def start():
        return {"token": jobs["until_cancelled"].start(30).token}

    @app.post("/logout")
    def logout() -> str:
        session.clear()
        flash("bye")  # the session lives on, with the same id
        return "ok"

    browser = app.test_client()
    alice = browser.post("/start").json["token"]
    assert browser.get(f"/asyncstate/progress/{alice}").status_code == 200
    browser.post("/logout")
    assert browser.get(f"/asyncstate/progress/{alice}").status_code == 404
    assert browser.get("/asyncstate/jobs").json == []
    bob = browser.post("/start").json["token"]
    assert [j["token"] for j in browser.get("/asyncstate/jobs").json] == [bob]
    with app.app_context():
        ext.cancel(alice)
        ext.cancel(bob)


def test_a_start_refused_during_an_outage_ends_failed_and_frees_its_slot(
    make_app, monkeypatch
) -> None:
    app, ext = make_app(ASYNCSTATE_MAX_JOBS_PER_OWNER=1)

    @dataclass
    class Rows:
        n: int = 0

    @ext.job(state=Rows)
    def with_state(job) -> str:
        return "ok"

    store = ext.app_state(app).store
    down = StoreUnavailable("Redis is unreachable")

    def refuse(*_args, **_kwargs):
        raise down

    with app.test_request_context("/"):
        monkeypatch.setattr(store, "create", _only_for(store.create, "Rows", refuse))
        monkeypatch.setattr(store, "remove", refuse)
        with pytest.raises(StoreUnavailable):
            with_state.start()  # the queued document and the slot were written; undoing failed
        monkeypatch.undo()
        state = ext.app_state(app)
        index = state.records.owner_key(owners.request_owner(create=False))
        # the writer records it failed, which frees the slot
        doc = wait_until(
            lambda: (
                (d := state.records.statuses(store.claims(index).recent))
                and d[0]
                and d[0]["status"] == "failed"
                and d
            ),
            5,
            interval=0.05,
            message="the refused start recorded failed",
        )
        assert doc[0]["error"]["type"] == "StartRefused"
        assert with_state.start().wait(10)["status"] == "succeeded"  # the slot is free again


def _only_for(real, marker: str, instead):
    """``real`` except for keys naming ``marker``, which get ``instead``."""

    def call(key, *args, **kwargs):
        return (instead if marker in key else real)(key, *args, **kwargs)

    return call


def test_restoring_a_running_job_keeps_the_owners_history(store) -> None:
    records = JobRecords(store, "me")
    key = records.owner_key("carol")
    for i in range(3):
        store.claim(key, f"done{i}", limit=5, keep=5, score=float(i))
        store.unclaim(key, [f"done{i}"])
    records.restore("carol", "running", keep=5)
    assert store.claims(key).recent == ["running", "done2", "done1", "done0"]
