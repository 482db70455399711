"""Tests of docs/examples/testing_app.py: the examples of docs/testing.rst.

An ordinary pytest module, as it would sit in your project's ``tests/`` (with ``from
myapp import ...``). Run it with ``python -m pytest docs/examples/testing_tests.py``;
tests/test_docs_testing.py runs each of its tests too.
"""

import os
from urllib.parse import parse_qs, urlsplit

import pytest
from testing_app import asyncstate, create_app, export_orders  # from myapp import ...

from flask_asyncstate import job_finished
from flask_asyncstate.testing import client, isolated_config, job_gate, wait_for

CONFIG = {"TESTING": True, "SECRET_KEY": "test", "EXPORT_PAUSE": 0}
REDIS_URL = os.environ.get("REDIS_URL")  # a Redis the tests share (CI's), or None: in memory


@pytest.fixture
def make_app():
    def make(**config):
        # keys of its own on a shared Redis: job keys, Flask-Session's keys, the RQ queue
        isolated = isolated_config(REDIS_URL)
        return create_app({**CONFIG, **isolated, **config})  # init_app reads ASYNCSTATE_*

    yield make
    asyncstate.shutdown(timeout=2)  # stops the writer thread and the pool of every app made


def token_of(response):
    """The job token in the ``?token=`` of the redirect that follows a start."""
    assert response.status_code == 302, response.status_code
    return parse_qs(urlsplit(response.location).query)["token"][0]


# -- the inline executor -------------------------------------------------------------


def test_export_succeeds(make_app):
    app = make_app(ASYNCSTATE_EXECUTOR="inline")  # start() returns once the job has ended
    browser = client(app)
    response = browser.post("/export", data={"count": 3})
    token = token_of(response)
    page = browser.get(response.location).get_data(as_text=True)
    assert f'data-asyncstate-token="{token}"' in page
    doc = browser.get(f"/asyncstate/progress/{token}").json
    assert doc["status"] == "succeeded" and doc["reason"] is None
    assert doc["result"] == {"orders": 3}
    assert doc["message"] == "3 of 3 orders"


def test_a_bad_count_fails_the_job(make_app, caplog):
    app = make_app(ASYNCSTATE_EXECUTOR="inline")
    with app.app_context():
        handle = export_orders.start(0)  # outside a request: no owner, read it by handle
    doc = handle.status()
    assert doc["status"] == "failed" and doc["reason"] == "error"
    assert doc["error"] == {"type": "ValueError", "message": "nothing to export"}
    assert "Traceback" in caplog.text  # in the log, never in the document


def test_finished_signal(make_app):
    app = make_app(ASYNCSTATE_EXECUTOR="inline")
    seen = []

    def receiver(sender, job_id, document):
        seen.append(document["status"])

    with job_finished.connected_to(receiver, app), app.app_context():
        export_orders.start(2)
    assert seen == ["succeeded"]


# -- the thread pool and a gate ----------------------------------------------------------


def test_cancel_stops_the_export(make_app):
    app = make_app()
    browser = client(app)  # sends the same-origin header and the CSRF token
    with job_gate("collected", app) as gate:
        token = token_of(browser.post("/export", data={"count": 50}))
        gate.wait()  # the job is at job.checkpoint("collected"), and stays there
        assert browser.get(f"/asyncstate/progress/{token}").json["status"] == "running"
        assert browser.post(f"/asyncstate/cancel/{token}").status_code == 202
    with app.app_context():
        doc = wait_for(asyncstate.handle(token), "cancelled")
    assert doc["reason"] == "user"
    assert (doc["current"], doc["total"]) == (0, 50)  # stopped at the checkpoint


def test_a_third_export_is_refused_with_a_message(make_app):
    app = make_app(ASYNCSTATE_MAX_JOBS_PER_OWNER=2)
    browser = client(app)
    with job_gate("collected", app):  # held: both stay unfinished while the test looks
        first = token_of(browser.post("/export", data={"count": 10}))
        second = token_of(browser.post("/export", data={"count": 10}))
        refused = browser.post("/export", data={"count": 10})
        assert refused.status_code == 302 and "token=" not in refused.location
        page = browser.get(refused.location).get_data(as_text=True)
        assert "You already have 2 jobs in progress." in page
    with app.app_context():  # released: both run to their end
        for token in (first, second):
            assert wait_for(asyncstate.handle(token), "succeeded")["result"] == {"orders": 10}


def test_wait_for_fails_at_once_when_the_job_ends_otherwise(make_app):
    app = make_app()
    with app.app_context():
        handle = export_orders.start(0)
        with pytest.raises(AssertionError, match="ended without reaching"):
            wait_for(handle, "succeeded", timeout=10)  # no 10 s wait: it failed


def test_a_gate_cannot_hold_an_inline_job(make_app):
    app = make_app(ASYNCSTATE_EXECUTOR="inline")
    with app.app_context(), job_gate("collected", app):
        doc = export_orders.start(5).status()  # inline: the job has ended already
    assert doc["status"] == "failed"
    assert "run inline" in doc["error"]["message"]


def test_apps_on_one_redis_keep_their_jobs_apart(make_app):
    if REDIS_URL is None:
        pytest.skip("no shared Redis: each app keeps its jobs in its own memory anyway")
    mine, theirs = make_app(ASYNCSTATE_EXECUTOR="inline"), make_app(ASYNCSTATE_EXECUTOR="inline")
    token = token_of(client(mine).post("/export", data={"count": 2}))
    with mine.app_context():
        assert asyncstate.handle(token).status()["status"] == "succeeded"
    with theirs.app_context():  # the same SECRET_KEY and Redis, another prefix
        assert asyncstate.handle(token).status() is None


def test_a_burst_worker_runs_the_queued_export(make_app):
    if REDIS_URL is None:
        pytest.skip("RQ needs Redis")
    app = make_app(ASYNCSTATE_EXECUTOR="rq")  # start() queues the job for a worker
    browser = client(app)
    token = token_of(browser.post("/export", data={"count": 3}))
    assert browser.get(f"/asyncstate/progress/{token}").json["status"] == "queued"
    worker = ["asyncstate", "worker", "--burst", "--simple"]  # this app's queue, in this process
    assert app.test_cli_runner().invoke(args=worker).exit_code == 0
    doc = browser.get(f"/asyncstate/progress/{token}").json
    assert doc["status"] == "succeeded" and doc["result"] == {"orders": 3}


# -- CSRF ------------------------------------------------------------------------------


def test_with_csrf_protect_the_helper_sends_the_token(make_app):
    app = make_app()
    browser, plain = client(app), app.test_client()
    assert plain.post("/export", data={"count": 5}).status_code == 400  # CSRFProtect
    with job_gate("collected", app):
        token = token_of(browser.post("/export", data={"count": 5}))
        cancel = f"/asyncstate/cancel/{token}"
        refused = plain.post(cancel, headers={"X-Requested-With": "XMLHttpRequest"})
        assert refused.status_code == 403
        assert refused.json["error"].startswith("CSRF check failed")
        assert browser.post(cancel).status_code == 202


def test_with_csrf_off_only_the_same_origin_proof_is_asked(make_app):
    app = make_app(WTF_CSRF_ENABLED=False)  # turns our check off too
    browser = app.test_client()
    with job_gate("collected", app):
        token = token_of(browser.post("/export", data={"count": 5}))
        cancel = f"/asyncstate/cancel/{token}"
        assert browser.post(cancel).status_code == 403
        same_origin = {"X-Requested-With": "XMLHttpRequest"}  # what the widget sends
        assert browser.post(cancel, headers=same_origin).status_code == 202


def test_a_csrf_header_of_your_own(make_app):
    app = make_app(WTF_CSRF_HEADERS=["X-My-Token"])
    browser = client(app)
    mine = {"X-My-Token": browser.csrf_token()}  # (the helper sends it too, under that name)
    with job_gate("collected", app):
        token = token_of(browser.post("/export", data={"count": 5}, headers=mine))
        assert browser.post(f"/asyncstate/cancel/{token}", headers=mine).status_code == 202
