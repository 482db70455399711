"""Fits the apps it lands in: request context in jobs, CSRF settings, guards, retention, reasons."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask, jsonify, request, session, url_for

from flask_asyncstate import JobContext


def _links_app(make_app: Any, backend_url: str | None, **config: Any) -> tuple[Flask, Any]:
    app, ext = make_app(backend_url, **config)

    @app.get("/download/<name>")
    def download(name: str) -> str:
        return name

    @ext.job
    def export(job: JobContext) -> dict[str, Any]:
        session["touched"] = True  # a job has a session of its own: never saved anywhere
        return {
            "url": url_for("download", name="report.csv", _external=True),
            "root": request.url_root,
            "has_cookie": bool(request.cookies),
        }

    @app.post("/export")
    def start() -> Any:
        return jsonify(token=export.start().token)

    return app, ext


@pytest.mark.parametrize("executor", ["threads", "inline"])
def test_url_for_in_a_job_builds_the_starting_requests_external_url(
    make_app, backend_url, executor
) -> None:
    app, ext = _links_app(make_app, backend_url, ASYNCSTATE_EXECUTOR=executor)
    client = app.test_client()
    client.set_cookie("other", "1")
    token = client.post(
        "/export", base_url="https://shop.example:8443/app", headers={"Cookie": "a=b"}
    ).json["token"]
    with app.app_context():
        doc = ext.handle(token).wait(10)
    assert doc["status"] == "succeeded", doc
    assert doc["result"] == {
        "url": "https://shop.example:8443/app/download/report.csv",
        "root": "https://shop.example:8443/app/",
        "has_cookie": False,
    }


def test_outside_a_request_server_name_applies(make_app, backend_url) -> None:
    app, ext = _links_app(
        make_app, backend_url, SERVER_NAME="jobs.example", PREFERRED_URL_SCHEME="https"
    )
    with app.app_context():
        handle = ext.registered_job("export").start()
        doc = handle.wait(10)
    assert doc["status"] == "failed"  # `request` has no meaning outside a request...
    assert doc["error"]["type"] == "RuntimeError"

    @ext.job(name="link_only")
    def link_only(job: JobContext) -> str:
        return url_for("download", name="x.csv", _external=True)

    with app.app_context():
        assert link_only.start().wait(10)["result"] == "https://jobs.example/download/x.csv"


# -- CSRF follows Flask-WTF's configuration ------------------------------------------

XHR = {"X-Requested-With": "fetch"}


def _csrf_app(make_app: Any, exempt: bool = False, **config: Any) -> tuple[Any, str, str]:
    from flask_wtf.csrf import CSRFProtect, generate_csrf
    from support.apps import define_jobs

    app, ext = make_app(**config)
    csrf = CSRFProtect(app)
    if exempt:
        csrf.exempt(app.blueprints["asyncstate"])
    jobs = define_jobs(ext)

    @app.get("/start")
    def start() -> Any:
        return {"token": jobs["until_cancelled"].start().token, "csrf": generate_csrf()}

    client = app.test_client()
    started = client.get("/start").json
    return client, f"/asyncstate/cancel/{started['token']}", started["csrf"]


@pytest.mark.parametrize("referer", ["http://[", "http://[::1", "https://a]b"])
def test_a_malformed_referer_over_https_under_csrfprotect_is_a_403_not_a_500(
    make_app, referer
) -> None:
    """Flask-WTF checks the Referer over https, and its URL parser raises on these."""
    from flask_wtf.csrf import CSRFProtect, generate_csrf
    from support.apps import define_jobs

    app, ext = make_app()
    CSRFProtect(app)
    jobs = define_jobs(ext)

    @app.get("/start")
    def start() -> Any:
        return {"token": jobs["until_cancelled"].start().token, "csrf": generate_csrf()}

    client = app.test_client()
    https = {"base_url": "https://shop.example"}
    started = client.get("/start", **https).json
    proofs = {**XHR, "X-CSRFToken": started["csrf"]}
    for method, path in [
        ("POST", f"/asyncstate/cancel/{started['token']}"),
        ("DELETE", f"/asyncstate/jobs/{started['token']}"),
        ("POST", f"/asyncstate/retry/{started['token']}"),
    ]:
        answer = client.open(path, method=method, headers={**proofs, "Referer": referer}, **https)
        assert answer.status_code == 403 and answer.is_json, (path, answer.data)
    good = {**proofs, "Referer": "https://shop.example/"}
    assert (
        client.post(f"/asyncstate/cancel/{started['token']}", headers=good, **https).status_code
        == 202
    )


@pytest.mark.parametrize(
    "config",
    [
        {"WTF_CSRF_ENABLED": False},  # Flask-WTF's own test switch
        {"WTF_CSRF_CHECK_DEFAULT": False},  # only views marked csrf.protect() are checked
        {"WTF_CSRF_METHODS": ["PUT"]},
    ],
)
def test_csrf_settings_that_turn_flask_wtf_off_turn_our_check_off(make_app, config) -> None:
    client, url, _token = _csrf_app(make_app, **config)
    assert client.post(url, headers=XHR).status_code == 202
    assert client.post(url).status_code == 403  # the same-origin proof is still ours to ask


def test_csrf_exempt_blueprint_is_honoured(make_app) -> None:
    client, url, _token = _csrf_app(make_app, exempt=True)
    assert client.post(url, headers=XHR).status_code == 202


def test_csrf_custom_header_name_and_form_field(make_app) -> None:
    client, url, token = _csrf_app(make_app, WTF_CSRF_HEADERS=["X-My-Token"])
    assert client.post(url, headers={**XHR, "X-CSRFToken": token}).status_code == 403
    assert client.post(url, headers={**XHR, "X-My-Token": token}).status_code == 202
    client2, url2, token2 = _csrf_app(make_app)
    assert client2.post(url2, headers=XHR, data={"csrf_token": token2}).status_code == 202


# -- flask_asyncstate.testing ------------------------------------------------------


def test_job_gate_holds_a_job_at_its_checkpoint_until_released(make_app, backend_url) -> None:
    from flask_asyncstate.testing import job_gate, wait_for

    app, ext = make_app(backend_url)

    @ext.job
    def export(job: JobContext) -> int:
        for i in job.iter(range(10)):
            if i == 4:
                job.checkpoint("half")
        return 10

    with app.app_context():
        with job_gate("half") as gate:
            handle = export.start()
            held = gate.wait()
            assert held.id == handle.id
            time.sleep(0.15)  # the writer flushed meanwhile: the job is still at the gate
            assert wait_for(handle, "running")["current"] == 4
        assert wait_for(handle, "succeeded")["result"] == 10


def test_a_cancel_reaches_a_job_held_at_a_gate(make_app) -> None:
    from flask_asyncstate.testing import job_gate, wait_for

    app, ext = make_app()

    @ext.job
    def export(job: JobContext) -> None:
        job.checkpoint("start")

    with app.app_context(), job_gate("start") as gate:
        handle = export.start()
        gate.wait()
        handle.cancel()
        assert wait_for(handle)["status"] == "cancelled"


def test_job_gate_refuses_the_inline_executor_instead_of_hanging(make_app) -> None:
    from flask_asyncstate.testing import job_gate, wait_for

    app, ext = make_app(ASYNCSTATE_EXECUTOR="inline")

    @ext.job
    def export(job: JobContext) -> None:
        job.checkpoint("start")

    with app.app_context(), job_gate("start"):
        doc = wait_for(export.start())
    assert (
        doc["status"] == "failed" and "run inline (ASYNCSTATE_EXECUTOR)" in doc["error"]["message"]
    )
    with pytest.raises(AssertionError, match="ended without reaching"), app.app_context():
        wait_for(export.start(), "cancelled")  # it succeeds: no gate now


def test_client_helper_passes_same_origin_and_csrf_checks(app, ext, jobs) -> None:
    from flask_wtf.csrf import CSRFProtect

    from flask_asyncstate.testing import client, wait_for

    CSRFProtect(app)

    @app.post("/start")
    def start() -> Any:
        return {"token": jobs["until_cancelled"].start().token}

    browser = client(app)
    token = browser.post("/start").json["token"]  # the app's own CSRF check passes too
    assert browser.post(f"/asyncstate/cancel/{token}").status_code == 202
    assert app.test_client().post("/start").status_code == 400  # without the helper: refused
    with app.app_context():
        assert wait_for(ext.handle(token))["status"] == "cancelled"


# -- why a job ended ------------------------------------------------------------------


def test_the_document_says_why_a_job_ended(make_app, backend_url) -> None:
    from flask_asyncstate.testing import job_gate, wait_for

    app, ext = make_app(backend_url)

    @ext.job(timeout=0.2)
    def slow(job: JobContext, how: str) -> None:
        if how == "error":
            raise ValueError("bad row")
        if how == "fine":
            return
        job.checkpoint("held")
        job.cancelled.wait(5)
        job.check_cancelled()

    with app.app_context():
        fine, error = slow.start("fine"), slow.start("error")
        timeout = slow.start("timeout")
        with job_gate("held") as gate:
            user = slow.start("user")
            gate.wait(2)
        user.cancel()
        reasons = {
            name: wait_for(handle)["reason"]
            for name, handle in [("fine", fine), ("error", error), ("user", user)]
        }
        reasons["timeout"] = wait_for(timeout)["reason"]
    assert reasons == {"fine": None, "error": "error", "user": "user", "timeout": "timeout"}


def test_a_server_shutdown_is_not_a_users_cancel(make_app, redis_url) -> None:
    from flask_asyncstate.testing import wait_for

    app, ext = make_app(redis_url, ASYNCSTATE_MAX_WORKERS=1)
    other_app, other = make_app(redis_url)  # another instance, reading after the restart

    @ext.job
    def export(job: JobContext) -> None:
        job.cancelled.wait(10)
        job.check_cancelled()

    with app.app_context():
        running, waiting = export.start(), export.start()
        wait_for(running, "running")
        ext.shutdown(5)
    with other_app.app_context():
        for handle in (running, waiting):
            doc = other.app_state().records.status(handle.id)
            assert (doc["status"], doc["reason"], doc["cancel_requested"]) == (
                "cancelled",
                "shutdown",
                False,
            )


def test_client_helper_on_another_host_over_https(app, ext, jobs) -> None:
    from flask_wtf.csrf import CSRFProtect

    from flask_asyncstate.testing import client, wait_for

    CSRFProtect(app)

    @app.post("/start")
    def start() -> Any:
        return {"token": jobs["until_cancelled"].start().token}

    browser = client(app, base_url="https://shop.example/app")
    token = browser.post("/start").json["token"]
    assert browser.post(f"/asyncstate/cancel/{token}").status_code == 202
    with app.app_context():
        assert wait_for(ext.handle(token))["status"] == "cancelled"
    token = browser.post("/start").json["token"]
    no_referer = browser.post(f"/asyncstate/cancel/{token}", headers={"Referer": ""})
    assert no_referer.status_code == 403 and "referrer" in no_referer.json["error"]
