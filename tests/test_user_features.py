"""What users reach for next: job.iter, rate and ETA, unique jobs, owners, labels."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest
from flask import Flask, jsonify, request
from flask_login import LoginManager, UserMixin, login_user, logout_user
from support.procs import start_unique
from support.waiting import wait_until

from flask_asyncstate import AsyncState, JobCancelled, JobContext
from flask_asyncstate.templating import DEFAULT_LABELS, translated

HEADERS = {"X-Requested-With": "fetch"}


# -- job.token -----------------------------------------------------------------


def test_a_job_knows_its_own_token(make_app, backend_url) -> None:
    """For the links a job builds to its own pages (the recipe's download link)."""
    app, ext = make_app(backend_url)

    @ext.job
    def own(job: JobContext) -> str:
        return job.token

    with app.test_request_context():
        handle = own.start()
        doc = handle.wait(10)
        assert doc["status"] == "succeeded"
        assert ext.handle(doc["result"]).id == handle.id  # a token of this job, signed here
        assert ext.status(doc["result"])["id"] == handle.id  # the owner's session takes it


# -- job.iter ------------------------------------------------------------------


def test_iter_yields_items_and_records_progress_after_each(make_app, backend_url) -> None:
    app, ext = make_app(backend_url)
    seen: list[tuple[int, Any, Any]] = []

    @ext.job
    def rows(job: JobContext, items: list[str]) -> list[str]:
        out = []
        buffer = ext.app_state(app).local_context(job.id)  # what the writer would copy
        assert buffer is not None
        for item in job.iter(items, message="{current} of {total} rows"):
            doc = buffer.snapshot()
            seen.append((doc["current"], doc["total"], doc["message"]))
            out.append(item.upper())
        return out

    with app.app_context():
        doc = rows.start(["a", "b", "c"]).wait(10)
    assert doc["status"] == "succeeded" and doc["result"] == ["A", "B", "C"]
    assert doc["current"] == 3 and doc["total"] == 3 and doc["message"] == "3 of 3 rows"
    # progress is recorded after each item: while item i runs, i - 1 are done
    assert [s[0] for s in seen] == [0, 1, 2]
    assert seen[1][2] == "1 of 3 rows"


def test_iter_without_len_has_no_total_and_a_question_mark(make_app) -> None:
    app, ext = make_app()

    @ext.job
    def gen(job: JobContext) -> int:
        return sum(job.iter((i for i in range(4)), message="{current} of {total}"))

    with app.app_context():
        doc = gen.start().wait(10)
    assert doc["result"] == 6 and doc["total"] is None and doc["message"] == "4 of ?"


def test_iter_checks_cancel_before_each_item_and_stops_within_one(make_app, backend_url) -> None:
    app, ext = make_app(backend_url)
    ran: list[int] = []
    reached = threading.Event()

    @ext.job
    def slow(job: JobContext) -> None:
        for i in job.iter(range(1000)):
            ran.append(i)
            if i == 5:
                reached.set()
                job.cancelled.wait(5)  # the cancel arrives while item 5 runs

    with app.app_context():
        handle = slow.start()
        assert reached.wait(10)
        handle.cancel()
        doc = handle.wait(10)
    assert doc["status"] == "cancelled"
    assert ran == list(range(6))  # item 6 never started
    assert doc["current"] == 6


def test_iter_message_is_text_not_a_format_string(make_app) -> None:
    """Only {current} and {total} (with an optional thousands separator) are filled in: a
    file name with braces or a format spec from data neither fails the job nor allocates."""
    app, ext = make_app()

    @ext.job
    def named(job: JobContext, name: str) -> None:
        for _ in job.iter(range(1200), message=f"{name}: {{current:,}} of {{total:_}}"):
            pass

    with app.app_context():
        braces = named.start("report {2026} {x!r} {}.csv").wait(10)
        # str.format would pad this to ~10**24 characters (143 MiB at 10**8)
        huge = named.start("{current:>99999999999999999999999}").wait(10)
        unknown = named.start("{done} {0} {{current}}").wait(10)
    assert braces["status"] == "succeeded"
    assert braces["message"] == "report {2026} {x!r} {}.csv: 1,200 of 1_200"
    assert huge["status"] == "succeeded"
    assert huge["message"] == "{current:>99999999999999999999999}: 1,200 of 1_200"
    assert unknown["message"] == "{done} {0} {1200}: 1,200 of 1_200"


def test_iter_total_unknown_shows_a_question_mark(make_app) -> None:
    app, ext = make_app()

    @ext.job
    def gen(job: JobContext) -> None:
        for _ in job.iter((i for i in range(3)), message="{current:,} of {total:,}"):
            pass

    with app.app_context():
        doc = gen.start().wait(10)
    assert doc["status"] == "succeeded" and doc["message"] == "3 of ?"


# -- rate and ETA ----------------------------------------------------------------


def test_running_job_has_started_at_rate_and_a_shrinking_eta(make_app, backend_url) -> None:
    app, ext = make_app(backend_url)

    @ext.job
    def steady(job: JobContext) -> None:
        for _ in job.iter(range(40)):
            time.sleep(0.05)

    with app.app_context():
        handle = steady.start()
        wait_until(lambda: (handle.status() or {}).get("eta") is not None, 10, interval=0.02)
        first = handle.status()
        wait_until(lambda: (handle.status() or {}).get("current", 0) >= first["current"] + 8, 10)
        later = handle.status()
        doc = handle.wait(10)
    assert first["started_at"] >= first["created_at"]
    assert 5 < first["rate"] < 40  # about 20 items/s
    assert 0 < later["eta"] < first["eta"]
    assert doc["status"] == "succeeded" and doc["eta"] is None and doc["rate"] > 0
    print(f"rate {first['rate']}/s, eta {first['eta']} s -> {later['eta']} s")


def test_queued_job_has_no_start_or_eta(make_app) -> None:
    app, ext = make_app(ASYNCSTATE_MAX_WORKERS=1)
    gate = threading.Event()

    @ext.job
    def blocker(job: JobContext) -> None:
        gate.wait(10)

    with app.app_context():
        first, second = blocker.start(), blocker.start()
        doc = second.status()
        gate.set()
        first.wait(10), second.wait(10)
    assert doc["status"] == "queued" and doc["started_at"] is None and doc["eta"] is None


# -- unique jobs -----------------------------------------------------------------


def _blocking_jobs(ext: AsyncState, gate: threading.Event) -> dict[str, Any]:
    @ext.job(unique=True)
    def export(job: JobContext) -> str:
        gate.wait(10)
        return "done"

    @ext.job(unique="app")
    def reindex(job: JobContext) -> str:
        gate.wait(10)
        return "done"

    return {"export": export, "reindex": reindex}


def _start_route(app: Flask, jobs: dict[str, Any]) -> None:
    @app.post("/start/<name>")
    def start(name: str) -> Any:
        handle = jobs[name].start()
        return jsonify(id=handle.id, token=handle.token, new=handle.is_new)


def test_unique_per_owner_returns_the_unfinished_job(make_app, backend_url) -> None:
    app, ext = make_app(backend_url)
    gate = threading.Event()
    jobs = _blocking_jobs(ext, gate)
    _start_route(app, jobs)
    alice, bob = app.test_client(), app.test_client()
    a1 = alice.post("/start/export").json
    a2 = alice.post("/start/export").json
    b1 = bob.post("/start/export").json
    assert a1["new"] is True and a2 == dict(a1, new=False, token=a2["token"])
    assert b1["new"] is True and b1["id"] != a1["id"]  # another owner, another job
    assert alice.get(f"/asyncstate/progress/{a2['token']}").status_code == 200
    assert len(alice.get("/asyncstate/jobs").json) == 1
    gate.set()
    with app.app_context():
        assert ext.handle(a1["token"]).wait(10)["status"] == "succeeded"
    a3 = alice.post("/start/export").json  # the first one ended: a new one
    assert a3["new"] is True and a3["id"] != a1["id"]


def test_unique_app_is_one_job_for_every_owner(make_app, backend_url) -> None:
    app, ext = make_app(backend_url)
    gate = threading.Event()
    _start_route(app, _blocking_jobs(ext, gate))
    first = app.test_client().post("/start/reindex").json
    again = app.test_client().post("/start/reindex").json
    with app.app_context():
        outside = ext.registered_job("reindex").start()  # no request: same app-wide place
    assert first["new"] and not again["new"] and not outside.is_new
    assert again["id"] == first["id"] == outside.id
    gate.set()


def test_unique_holder_that_vanished_does_not_block_forever(make_app, backend_url) -> None:
    app, ext = make_app(backend_url)
    gate = threading.Event()
    jobs = _blocking_jobs(ext, gate)
    with app.app_context():
        records = ext.app_state().records
        key = records.unique_key("reindex", "app", None)
        # a holder whose job vanished without giving the place back (Redis lost it, or
        # its instance died before it could): the next start frees the place
        assert records.claim_unique(key, "gone") is None
        second = jobs["reindex"].start()
        assert second.is_new and second.id != "gone"
        third = jobs["reindex"].start()
        assert not third.is_new and third.id == second.id
    gate.set()


def test_simultaneous_unique_starts_in_threads_make_one_job(make_app, backend_url) -> None:
    app, ext = make_app(backend_url)
    gate = threading.Event()
    jobs = _blocking_jobs(ext, gate)
    barrier = threading.Barrier(8)
    got: list[tuple[str, bool]] = []

    def start() -> None:
        with app.app_context():
            barrier.wait(5)
            handle = jobs["reindex"].start()
            got.append((handle.id, handle.is_new))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    gate.set()
    assert len({job_id for job_id, _ in got}) == 1 and sum(new for _, new in got) == 1


@pytest.mark.reliability  # processes, servers or a flood: the whole suite runs it
def test_simultaneous_unique_starts_from_two_instances_make_one_job(make_app, redis_url) -> None:
    """Two OS processes start the app-unique job at the same moment, five times over."""
    spawn = multiprocessing.get_context("spawn")
    rounds = 5
    go = [spawn.Event() for _ in range(rounds + 1)]
    outs = [spawn.Queue() for _ in range(2)]
    procs = [
        spawn.Process(target=start_unique, args=(redis_url, rounds, go, out), daemon=True)
        for out in outs
    ]
    for proc in procs:
        proc.start()
    app, ext = make_app(redis_url)
    try:
        for i in range(rounds):
            time.sleep(2.0 if i == 0 else 0.1)  # both processes up and waiting
            go[i].set()
            seen = [out.get(timeout=30) for out in outs]
            ids = {job_id for job_id, _ in seen}
            assert len(ids) == 1, seen
            assert sorted(new for _, new in seen) == [False, True], seen
            with app.app_context():
                job_id = ids.pop()
                ext.app_state().cancel_job(job_id)
                assert ext.app_state().job_handle(job_id).wait(10)["status"] == "cancelled"
        assert [out.get(timeout=10) for out in outs] == [("done", None)] * 2
    finally:
        go[rounds].set()
        for proc in procs:
            proc.join(10)
    print(f"{rounds} rounds of simultaneous starts from 2 processes: one job each")


def test_unique_must_be_true_false_or_app(make_app) -> None:
    _app, ext = make_app()
    with pytest.raises(ValueError, match="unique"):
        ext.job(unique="session")(lambda job: None)


# -- owners ----------------------------------------------------------------------


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name


def _login_app(make_app: Any, backend_url: str | None, **config: Any) -> tuple[Flask, Any]:
    app, ext = make_app(backend_url, **config)
    gate = threading.Event()
    login = LoginManager(app)
    login.user_loader(User)

    @ext.job
    def export(job: JobContext) -> str:
        while not gate.wait(0.01):
            job.check_cancelled()
        return "file.csv"

    @app.post("/login/<name>")
    def do_login(name: str) -> str:
        login_user(User(name))
        return "ok"

    @app.post("/logout")
    def do_logout() -> str:
        logout_user()
        return "ok"

    @app.post("/export")
    def start() -> Any:
        return jsonify(token=export.start().token)

    app.gate = gate  # type: ignore[attr-defined]
    return app, ext


def test_next_user_in_the_same_browser_never_sees_the_previous_users_jobs(
    make_app, backend_url
) -> None:
    app, _ext = _login_app(make_app, backend_url)
    browser = app.test_client()
    browser.post("/login/alice")
    token = browser.post("/export").json["token"]
    assert browser.get(f"/asyncstate/progress/{token}").status_code == 200
    browser.post("/logout")
    browser.post("/login/bob")
    assert browser.get("/asyncstate/jobs").json == []
    assert browser.get(f"/asyncstate/progress/{token}").status_code == 404
    assert browser.post(f"/asyncstate/cancel/{token}", headers=HEADERS).status_code == 404
    browser.post("/logout")
    assert browser.get(f"/asyncstate/progress/{token}").status_code == 404  # anonymous now
    browser.post("/login/alice")
    # the same job (tokens of one job differ in their signing time: compare ids)
    job_id = browser.get(f"/asyncstate/progress/{token}").json["id"]
    assert [j["id"] for j in browser.get("/asyncstate/jobs").json] == [job_id]
    assert browser.get(f"/asyncstate/progress/{token}").json["status"] in ("queued", "running")
    app.gate.set()  # type: ignore[attr-defined]


def test_a_users_jobs_follow_them_to_another_session_and_count_one_quota(
    make_app, backend_url
) -> None:
    app, ext = _login_app(make_app, backend_url, ASYNCSTATE_MAX_JOBS_PER_OWNER=2)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    phone.post("/login/alice")
    token = laptop.post("/export").json["token"]
    job_id = laptop.get(f"/asyncstate/progress/{token}").json["id"]
    assert [j["id"] for j in phone.get("/asyncstate/jobs").json] == [job_id]
    assert phone.post(f"/asyncstate/cancel/{token}", headers=HEADERS).status_code == 202
    with app.app_context():
        assert ext.handle(token).wait(10)["status"] == "cancelled"
    phone.post("/export"), laptop.post("/export")
    third = phone.post("/export")
    assert third.status_code == 429  # two sessions, one user, one quota of 2
    app.gate.set()  # type: ignore[attr-defined]


def test_anonymous_jobs_stay_with_their_session(make_app, backend_url) -> None:
    app, _ext = _login_app(make_app, backend_url)
    one, two = app.test_client(), app.test_client()
    token = one.post("/export").json["token"]
    assert one.get(f"/asyncstate/progress/{token}").status_code == 200
    assert two.get(f"/asyncstate/progress/{token}").status_code == 404
    assert two.get("/asyncstate/jobs").json == []
    app.gate.set()  # type: ignore[attr-defined]


def test_owner_callable_overrides_the_default(make_app, backend_url) -> None:
    app, ext = make_app(backend_url, owner_loader=lambda: request.headers.get("X-Team") or None)
    gate = threading.Event()

    @ext.job
    def export(job: JobContext) -> None:
        gate.wait(10)

    @app.post("/export")
    def start() -> Any:
        return jsonify(token=export.start().token)

    red1, red2, anon = app.test_client(), app.test_client(), app.test_client()
    token = red1.post("/export", headers={"X-Team": "red"}).json["token"]
    assert red2.get(f"/asyncstate/progress/{token}", headers={"X-Team": "red"}).status_code == 200
    assert red2.get(f"/asyncstate/progress/{token}", headers={"X-Team": "blue"}).status_code == 404
    assert anon.get(f"/asyncstate/progress/{token}").status_code == 404  # its session: none
    assert len(red2.get("/asyncstate/jobs", headers={"X-Team": "red"}).json) == 1
    gate.set()


def test_owner_loader_refuses_bad_values(make_app) -> None:
    with pytest.raises(TypeError, match=r"asyncstate.owner_loader\(\) takes a callable"):
        make_app(owner_loader=42)
    app, ext = make_app(owner_loader=_bad_owner)

    @ext.job
    def nothing(job: JobContext) -> None:
        return None

    with app.test_request_context(), pytest.raises(TypeError, match="the owner_loader must"):
        nothing.start()


def _bad_owner() -> object:
    return object()


# -- labels ----------------------------------------------------------------------


def test_labels_override_and_unknown_keys_are_refused(make_app) -> None:
    app, _ext = make_app()
    with app.app_context():
        labels = translated({"cancel": "Stop"})
        assert labels["cancel"] == "Stop" and labels["succeeded"] == DEFAULT_LABELS["succeeded"]
        with pytest.raises(KeyError, match="cancle"):
            translated({"cancle": "Stop"})


def test_script_route_carries_the_default_labels(make_app) -> None:
    app, _ext = make_app()
    text = app.test_client().get("/asyncstate/asyncstate.js").get_data(as_text=True)
    assert "window.asyncstateLabels = {" in text and '"etaMinutes"' in text


def test_flask_babel_translates_the_server_rendered_labels(make_app, tmp_path) -> None:
    flask_babel = pytest.importorskip("flask_babel")
    from babel.messages.catalog import Catalog
    from babel.messages.mofile import write_mo

    catalog = Catalog(locale="fr")
    catalog.add("Cancel", "Annuler")
    catalog.add("about {minutes} min left", "environ {minutes} min restantes")
    folder = tmp_path / "fr" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    with open(folder / "messages.mo", "wb") as mo:
        write_mo(mo, catalog)
    app, _ext = make_app(BABEL_TRANSLATION_DIRECTORIES=str(tmp_path))
    flask_babel.Babel(app, locale_selector=lambda: "fr")
    with app.test_request_context():
        labels = translated({"running": "En cours"})
    assert labels["cancel"] == "Annuler"
    assert labels["etaMinutes"] == "environ {minutes} min restantes"
    assert labels["running"] == "En cours" and labels["failed"] == "Failed"  # untranslated


def test_jobcancelled_still_exported() -> None:
    assert issubclass(JobCancelled, Exception)


# -- unique places through cancels, restarts and long waits ---------------------------------


def test_a_job_cancelled_while_it_waits_for_a_pool_thread_ends_at_once(make_app, backend_url):
    from flask_asyncstate.testing import job_gate, wait_for

    app, ext = make_app(backend_url, ASYNCSTATE_MAX_WORKERS=1)

    @ext.job(name="long_one")
    def long_one(job: JobContext) -> None:
        job.checkpoint("busy")

    @ext.job(name="waiting_unique", unique="app")
    def waiting_unique(job: JobContext) -> None:
        return None

    with app.app_context(), job_gate("busy") as gate:
        long_one.start()
        gate.wait()  # the only pool thread is busy
        waiting = waiting_unique.start()
        assert waiting.cancel() is True
        doc = waiting.status()
        assert (doc["status"], doc["reason"]) == ("cancelled", "user")  # not when a thread frees
        again = waiting_unique.start()
        assert again.is_new and again.id != waiting.id  # its unique place was given back
        gate.release()
        assert wait_for(again)["status"] == "succeeded"
        assert wait_for(waiting)["status"] == "cancelled"  # and it never ran


def test_a_waiting_job_cancelled_from_another_instance_ends_within_a_tick(make_app, redis_url):
    from flask_asyncstate.testing import job_gate, wait_for

    app, ext = make_app(redis_url, ASYNCSTATE_MAX_WORKERS=1)
    other_app, other = make_app(redis_url)

    @ext.job(name="long_two")
    def long_two(job: JobContext) -> None:
        job.checkpoint("busy")

    with app.app_context(), job_gate("busy") as gate:
        long_two.start()
        gate.wait()
        waiting = long_two.start()
        with other_app.app_context():
            assert other.app_state().cancel_job(waiting.id) is True
        assert wait_for(waiting, "cancelled", timeout=2)["reason"] == "user"


def test_a_unique_place_lost_with_redis_data_is_held_again(make_app, redis_url, redis_client):
    from flask_asyncstate.testing import wait_for

    app, ext = make_app(redis_url)

    @ext.job(name="only_one", unique="app")
    def only_one(job: JobContext) -> None:
        job.cancelled.wait(10)

    with app.app_context():
        first = only_one.start()
        wait_for(first, "running")
        redis_client.flushdb()  # a restart without persistence
        wait_until(lambda: first.status() is not None, 5)  # the heartbeat wrote it again
        time.sleep(0.3)
        second = only_one.start()
        assert not second.is_new and second.id == first.id
        first.cancel()


def test_a_holder_still_being_admitted_is_waited_for(make_app, backend_url) -> None:
    app, ext = make_app(backend_url)
    with app.app_context():
        records = ext.app_state().records
        key = records.unique_key("pending_job", "app", None)
        doc = {"id": "a" * 32, "name": "pending_job", "status": "queued", "_pending": True}
        records.store.create(records.job_key("a" * 32), dict(doc, updated_at=time.time()))
        assert records.claim_unique(key, "a" * 32) is None
        # the first start's quota refuses it a moment later: it undoes its document
        threading.Timer(0.2, lambda: records.store.remove(records.job_key("a" * 32))).start()
        started = time.monotonic()
        b = "b" * 32
        records.store.create(records.job_key(b), dict(doc, id=b, updated_at=time.time()))
        assert records.claim_unique(key, b) is None  # not handed the one that never existed
        assert time.monotonic() - started >= 0.15


def test_render_result_template_must_autoescape(make_app) -> None:
    _app, ext = make_app()
    with pytest.raises(ValueError, match="autoescapes"):
        ext.job(name="unsafe", render_result="exports/done.jinja")(lambda job: None)


def test_keep_finished_shorter_than_the_expiry_is_refused(make_app) -> None:
    with pytest.raises(ValueError, match="at least ASYNCSTATE_EXPIRES"):
        make_app(ASYNCSTATE_EXPIRES=60, ASYNCSTATE_KEEP_FINISHED=1)
