"""Fits the apps it lands in: retention and dismissal, guards, the admin routes, the result
slot and the assets helper (Chromium drives the same in test_browser_widget_result.py,
test_browser_admin.py and test_browser_real_app.py)."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest
from flask import Flask, jsonify, render_template_string
from flask_login import LoginManager, UserMixin, login_required, login_user
from markupsafe import Markup

from flask_asyncstate import JobContext
from flask_asyncstate.testing import client, wait_for

XHR = {"X-Requested-With": "fetch"}


def _app(make_app: Any, backend_url: str | None = None, **config: Any) -> tuple[Flask, Any, Any]:
    app, ext = make_app(backend_url, **config)
    gate = threading.Event()

    @ext.job(render_result="result.html")
    def export(job: JobContext, name: str) -> dict[str, str]:
        if name == "wait":
            gate.wait(10)
        return {"file": f"{name}.csv"}

    @ext.job(name="shout", render_result=lambda result: f"<b>{result}</b>")
    def shout(job: JobContext) -> str:
        return "<script>x</script>"

    @app.post("/export/<name>")
    def start(name: str) -> Any:
        return jsonify(token=export.start(name).token)

    @app.post("/shout")
    def start_shout() -> Any:
        return jsonify(token=shout.start().token)

    from jinja2 import ChoiceLoader, DictLoader

    app.jinja_loader = ChoiceLoader(  # type: ignore[assignment]
        [
            DictLoader({"result.html": '<a href="/files/{{ result.file }}">{{ job.name }}</a>'}),
            app.jinja_loader,
        ]
    )
    return app, ext, gate


# -- retention and dismissal ----------------------------------------------------------


def test_delete_dismisses_a_finished_job_and_refuses_an_unfinished_one(make_app, backend_url):
    app, ext, gate = _app(make_app, backend_url)
    browser = client(app)
    done = browser.post("/export/a").json["token"]
    running = browser.post("/export/wait").json["token"]
    with app.app_context():
        wait_for(ext.handle(done), "succeeded")
    assert app.test_client().delete(f"/asyncstate/jobs/{done}").status_code in (403, 404)
    answer = browser.delete(f"/asyncstate/jobs/{running}")
    assert answer.status_code == 409 and "cancel it first" in answer.json["error"]
    assert browser.delete(f"/asyncstate/jobs/{done}").json == {"dismissed": True}
    assert browser.get(f"/asyncstate/progress/{done}").status_code == 404
    with app.app_context():
        running_id = ext.handle(running).id
    assert [j["id"] for j in browser.get("/asyncstate/jobs").json] == [running_id]
    assert browser.delete(f"/asyncstate/jobs/{done}").status_code == 404  # once
    gate.set()


def test_forget_in_code(make_app, backend_url) -> None:
    app, ext, gate = _app(make_app, backend_url)
    with app.app_context():
        running = ext.registered_job("export").start("wait")
        with pytest.raises(RuntimeError, match="cancel it"):
            running.forget()
        gate.set()
        wait_for(running, "succeeded")
        assert running.forget() is True and running.status() is None
        assert running.forget() is False


def test_keep_finished_keeps_a_finished_job_longer_than_the_expiry(make_app, backend_url) -> None:
    app, ext, gate = _app(make_app, backend_url, ASYNCSTATE_EXPIRES=0.6, ASYNCSTATE_KEEP_FINISHED=3)
    short_app, short_ext, _ = _app(make_app, backend_url, ASYNCSTATE_EXPIRES=0.6)
    gate.set()
    kept, gone = client(app), client(short_app)
    kept_token = kept.post("/export/a").json["token"]
    gone_token = gone.post("/export/a").json["token"]
    with app.app_context():
        wait_for(ext.handle(kept_token), "succeeded")
    with short_app.app_context():
        wait_for(short_ext.handle(gone_token), "succeeded")
    time.sleep(1.2)  # two expiries without a read
    assert gone.get(f"/asyncstate/progress/{gone_token}").status_code == 404
    assert gone.get("/asyncstate/jobs").json == []
    assert kept.get(f"/asyncstate/progress/{kept_token}").status_code == 200
    with app.app_context():
        kept_id = ext.handle(kept_token).id
    assert [j["id"] for j in kept.get("/asyncstate/jobs").json] == [kept_id]


# -- guards -------------------------------------------------------------------------


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name


def _login(app: Flask) -> None:
    manager = LoginManager(app)
    manager.user_loader(User)
    manager.login_view = "login_page"

    @app.get("/login")
    def login_page() -> str:
        return "log in"

    @app.post("/login/<name>")
    def do_login(name: str) -> str:
        login_user(User(name))
        return "ok"


def test_blueprint_guard_login_required_answers_json_401(make_app) -> None:
    app, _ext, gate = _app(make_app, guard=login_required)
    _login(app)
    gate.set()
    anonymous = client(app)
    token = anonymous.post("/export/a").json["token"]
    answer = anonymous.get(f"/asyncstate/progress/{token}")
    assert answer.status_code == 401 and answer.is_json
    assert answer.json["error"] == "login required"
    assert answer.json["login_url"].startswith("/login")
    assert anonymous.get("/asyncstate/asyncstate.js").status_code == 200  # assets: unguarded
    user = client(app)
    user.post("/login/ann")
    mine = user.post("/export/b").json["token"]
    assert user.get(f"/asyncstate/progress/{mine}").status_code == 200


def test_guard_as_a_check_and_in_code(make_app) -> None:
    app, ext, gate = _app(make_app)
    calls: list[str] = []

    @ext.guard
    def only_with_header() -> Any:
        calls.append("x")
        from flask import request

        return None if request.headers.get("X-Ok") else ({"error": "no header"}, 403)

    gate.set()
    browser = client(app)
    token = browser.post("/export/a").json["token"]
    refused = browser.get(f"/asyncstate/progress/{token}")
    assert refused.status_code == 403 and refused.json == {"error": "no header"}
    assert browser.get(f"/asyncstate/progress/{token}", headers={"X-Ok": "1"}).status_code == 200
    assert calls


# -- the admin routes -----------------------------------------------------------------


def test_admin_is_off_unless_a_guard_is_set(make_app) -> None:
    app, _ext, _gate = _app(make_app)
    assert app.test_client().get("/asyncstate/admin").status_code == 404
    assert app.test_client().get("/asyncstate/admin/jobs").status_code == 404


def test_admin_lists_every_owners_jobs_and_cancels_one(make_app, backend_url) -> None:
    app, ext, gate = _app(make_app, backend_url, admin_guard=lambda: None)
    one, two = client(app), client(app)
    first = one.post("/export/wait").json["token"]
    done = one.post("/export/done").json["token"]
    two.post("/export/wait")
    with app.app_context():
        first_id = ext.handle(first).id
        wait_for(ext.handle(first), "running")
        wait_for(ext.handle(done), "succeeded")
    listing = app.test_client().get("/asyncstate/admin/jobs").json
    assert len(listing["jobs"]) == 3 and len(listing["instances"]) == 1
    assert {j["status"] for j in listing["jobs"]} >= {"succeeded"}
    assert all(j["owner"] and len(j["owner"]) == 8 for j in listing["jobs"])
    running = app.test_client().get("/asyncstate/admin/jobs?status=running").json["jobs"]
    assert first_id in {j["id"] for j in running}
    assert app.test_client().post(f"/asyncstate/admin/cancel/{first_id}").status_code == 403
    answer = client(app).post(f"/asyncstate/admin/cancel/{first_id}")
    assert answer.status_code == 202 and answer.json["cancel_requested"] is True
    assert client(app).post("/asyncstate/admin/cancel/nothex").status_code == 404
    page = app.test_client().get("/asyncstate/admin")
    assert page.status_code == 200 and b"asyncstate-admin.js" in page.data
    gate.set()


def test_admin_guard_refusal_of_the_page_is_passed_on(make_app) -> None:
    app, _ext, _gate = _app(make_app, admin_guard=login_required)
    _login(app)
    page = app.test_client().get("/asyncstate/admin")
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    data = app.test_client().get("/asyncstate/admin/jobs")
    assert data.status_code == 401 and data.is_json


# -- the result slot and the assets helper ---------------------------------------------


def test_result_route_renders_the_jobs_template_once_it_succeeded(make_app, backend_url) -> None:
    app, ext, gate = _app(make_app, backend_url)
    browser = client(app)
    token = browser.post("/export/wait").json["token"]
    assert browser.get(f"/asyncstate/result/{token}").status_code == 404  # not yet
    gate.set()
    with app.app_context():
        wait_for(ext.handle(token), "succeeded")
    html = browser.get(f"/asyncstate/result/{token}").json["html"]
    assert html == '<a href="/files/wait.csv">export</a>'
    assert app.test_client().get(f"/asyncstate/result/{token}").status_code == 404  # not theirs


def test_a_callables_plain_string_result_is_escaped(make_app) -> None:
    app, ext, _gate = _app(make_app)
    browser = client(app)
    token = browser.post("/shout").json["token"]
    with app.app_context():
        wait_for(ext.handle(token), "succeeded")
    html = browser.get(f"/asyncstate/result/{token}").json["html"]
    assert "<script>" not in html and "&lt;b&gt;" in html


def test_widget_renders_the_result_of_a_job_that_succeeded_already(make_app) -> None:
    app, ext, _gate = _app(make_app)

    @app.get("/page/<token>")
    def page(token: str) -> str:
        return render_template_string("{{ asyncstate_widget(token) }}", token=token)

    browser = client(app)
    token = browser.post("/export/r").json["token"]
    with app.app_context():
        wait_for(ext.handle(token), "succeeded")
    html = browser.get(f"/page/{token}").get_data(as_text=True)
    assert '<a href="/files/r.csv">export</a>' in html and 'data-asyncstate-result="true"' in html


def test_assets_go_on_a_page_once(make_app) -> None:
    app, _ext, _gate = _app(make_app)

    @app.get("/head")
    def head() -> str:
        return render_template_string(
            "<head>{{ asyncstate_assets(jquery=False) }}</head>"
            "{{ asyncstate_widget('a') }}{{ asyncstate_widget('b') }}"
        )

    @app.get("/body")
    def body() -> str:
        return render_template_string("{{ asyncstate_widget('a') }}{{ asyncstate_widget('b') }}")

    head_html = app.test_client().get("/head").get_data(as_text=True)
    body_html = app.test_client().get("/body").get_data(as_text=True)
    assert head_html.count("asyncstate.js") == 1 and "jquery.js" not in head_html
    assert body_html.count("asyncstate.js") == 1 and body_html.count("asyncstate.css") == 1
    assert head_html.index("asyncstate.js") < head_html.index("data-asyncstate-token")


def test_markup_from_a_callable_is_kept(make_app) -> None:
    app, ext = make_app()

    @ext.job(name="linked", render_result=lambda r: Markup('<a href="/x">{}</a>').format(r))
    def linked(job: JobContext) -> str:
        return "<file>"

    @app.post("/go")
    def go() -> Any:
        return jsonify(token=linked.start().token)

    browser = client(app)
    token = browser.post("/go").json["token"]
    with app.app_context():
        wait_for(ext.handle(token), "succeeded")
    assert (
        browser.get(f"/asyncstate/result/{token}").json["html"] == '<a href="/x">&lt;file&gt;</a>'
    )


def test_admin_routes_answer_json_for_every_method(make_app) -> None:
    app, _ext, _gate = _app(make_app, admin_guard=lambda: None)
    web = app.test_client()
    wrong = web.put("/asyncstate/admin/jobs")
    assert wrong.status_code == 405 and wrong.is_json and wrong.headers["Allow"] == "GET, HEAD"
    assert web.get("/asyncstate/admin/cancel/" + "a" * 32).status_code == 405
    options = web.options("/asyncstate/admin")
    assert options.status_code == 200 and options.is_json


def test_a_job_runs_with_its_own_g_and_starts_jobs_of_no_owner(make_app) -> None:
    from flask import g

    for executor in ("threads", "inline"):
        app, ext = make_app(ASYNCSTATE_EXECUTOR=executor)

        @ext.job(name=f"child_{executor}")
        def child(job: JobContext) -> None:
            return None

        @ext.job(name=f"parent_{executor}")
        def parent(job: JobContext) -> dict[str, Any]:
            handle = child.start()
            doc = handle._app.records.status(handle.id, internal=True)
            return {"g": getattr(g, "marker", None), "child_owner": doc["owner"]}

        @app.post("/go")
        def go() -> Any:
            g.marker = "the view's"
            return jsonify(token=parent.start().token)

        browser = client(app)
        token = browser.post("/go").json["token"]
        with app.app_context():
            doc = wait_for(ext.handle(token), "succeeded")
        assert doc["result"] == {"g": None, "child_owner": None}, executor


def test_admin_cancel_of_a_finished_job_cancels_nothing(make_app) -> None:
    app, ext, _gate = _app(make_app, admin_guard=lambda: None)
    with app.app_context():
        done = ext.registered_job("export").start("x")
        wait_for(done, "succeeded")
    answer = client(app).post(f"/asyncstate/admin/cancel/{done.id}")
    assert answer.status_code == 202 and answer.json["status"] == "succeeded"
    with app.app_context():
        assert done.status()["cancel_requested"] is False


def test_testing_client_follows_server_name(make_jobs) -> None:
    from flask_wtf.csrf import CSRFProtect

    app, _ext, jobs = make_jobs(SERVER_NAME="shop.example")
    CSRFProtect(app)

    @app.post("/start")
    def start() -> Any:
        return {"token": jobs["until_cancelled"].start().token}

    browser = client(app)
    token = browser.post("/start").json["token"]
    assert browser.post(f"/asyncstate/cancel/{token}").status_code == 202


# -- hardening found by a hostile review and a real integration ------------------------


def test_background_login_refusals_flash_nothing_and_lead_back_to_the_page(make_app) -> None:
    """login_required as the blueprint guard: a refused poll leaves no "Please log in" in the
    session, and login_url's next= is the page that polled, not the JSON route."""
    app, _ext, gate = _app(make_app, guard=login_required)
    _login(app)
    gate.set()
    browser = client(app)
    token = browser.post("/export/a").json["token"]
    for _ in range(3):
        answer = browser.get(
            f"/asyncstate/progress/{token}", headers={"Referer": "http://localhost/reports?id=7"}
        )
        assert answer.status_code == 401
    assert answer.json["login_url"] == "/login?next=%2Freports%3Fid%3D7"
    with browser.session_transaction() as session:
        assert "_flashes" not in session
    no_page = browser.get(f"/asyncstate/progress/{token}", headers={"Referer": "http://evil/x"})
    assert no_page.json["login_url"] == "/login"
    page = browser.get("/asyncstate/admin")  # not a guarded JSON route: no change there
    assert page.status_code == 404


@pytest.mark.parametrize(
    ("returned", "status"),
    [(True, 200), (None, 200), (False, 403), (42, 403), (object(), 403), ("no", 403)],
)
def test_what_a_guard_returns_never_gives_a_500(make_app, returned, status) -> None:
    """``lambda: current_user.is_admin`` is how people write guards: True allows, False
    refuses with a JSON 403, and so do a value Flask cannot answer with and a bare body
    ("no", which Flask would answer 200)."""
    app, _ext, _gate = _app(make_app, admin_guard=lambda: returned)
    answer = app.test_client().get("/asyncstate/admin/jobs")
    assert answer.status_code == status and answer.is_json
    if status == 403:
        assert answer.json == {"error": "not allowed"}
    blueprint_app, ext, _gate = _app(make_app)
    ext.guard(lambda: returned)
    answer = blueprint_app.test_client().get("/asyncstate/jobs")
    assert answer.status_code == status and answer.is_json


def test_admin_routes_are_404_for_every_method_without_an_admin_page(make_app) -> None:
    app, _ext, _gate = _app(make_app)
    web = app.test_client()
    for method in ("GET", "OPTIONS", "POST", "PUT"):
        for path in ("/asyncstate/admin", "/asyncstate/admin/jobs", "/asyncstate/admin/cancel/x"):
            answer = web.open(path, method=method)
            assert answer.status_code == 404 and answer.is_json, (method, path)


@pytest.mark.parametrize("origin", ["http://[", "http://[::1", "https://a]b", "\x00://"])
def test_a_malformed_origin_or_referer_is_a_403_not_a_500(make_app, origin) -> None:
    app, _ext, gate = _app(make_app, admin_guard=lambda: None)
    gate.set()
    browser = client(app)
    token = browser.post("/export/a").json["token"]
    plain = app.test_client(use_cookies=True)
    with browser.session_transaction() as theirs, plain.session_transaction() as mine:
        mine.update(theirs)
    for method, path in [
        ("POST", f"/asyncstate/cancel/{token}"),
        ("DELETE", f"/asyncstate/jobs/{token}"),
        ("POST", "/asyncstate/admin/cancel/" + "a" * 32),
    ]:
        answer = plain.open(path, method=method, headers={"Origin": origin})
        assert answer.status_code == 403 and answer.is_json, (path, answer.data)
    secure = client(app, base_url="https://shop.example")
    secure.get("/")  # a session of its own
    answer = secure.post(f"/asyncstate/cancel/{token}", headers={"Referer": origin})
    assert answer.status_code in (403, 404) and answer.is_json


def test_our_html_cannot_be_framed_and_json_is_never_sniffed(make_app) -> None:
    app, _ext, gate = _app(make_app, admin_guard=lambda: None)
    gate.set()
    web = app.test_client()
    page = web.get("/asyncstate/admin")
    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    for path in ("/asyncstate/admin/jobs", "/asyncstate/jobs", "/asyncstate/progress/x"):
        answer = web.get(path)
        assert answer.headers["X-Content-Type-Options"] == "nosniff", path
    unrouted = web.open("/asyncstate/jobs", method="PROPFIND")
    assert unrouted.status_code == 405 and unrouted.headers["X-Content-Type-Options"] == "nosniff"


def test_owned_is_the_owner_check_for_an_apps_own_routes(make_app, backend_url) -> None:
    app, ext, gate = _app(make_app, backend_url)
    gate.set()

    @app.get("/download/<token>")
    def download(token: str) -> Any:
        handle = ext.owned(token)
        if handle is None:
            return {"error": "not yours"}, 404
        return {"id": handle.id, "status": handle.status()["status"]}

    alice, bob = client(app), client(app)
    first = alice.post("/export/first").json["token"]
    for n in range(8):  # more than /jobs lists: the first is still hers
        alice.post(f"/export/n{n}")
    with app.app_context():
        wait_for(ext.handle(first), "succeeded")
    assert alice.get(f"/download/{first}").status_code == 200
    assert bob.get(f"/download/{first}").status_code == 404
    assert alice.get(f"/download/{first[:-2]}xx").status_code == 404
    assert alice.get("/download/nonsense").status_code == 404
    with app.test_request_context():
        assert ext.owned(None) is None  # type: ignore[arg-type]


def test_an_empty_owner_id_is_refused(make_app) -> None:
    app, ext, _gate = _app(make_app, owner_loader=lambda: "")
    with app.test_request_context(), pytest.raises(ValueError, match="empty owner id"):
        ext.app_state(app).request_owner(create=True)


def test_result_template_without_autoescape_is_never_inserted(make_app) -> None:
    """The name says .html, but the app turned autoescape off: no slot, never raw HTML."""

    class Unescaped(Flask):
        jinja_options: ClassVar[dict[str, Any]] = {"autoescape": False}

    from flask import Flask as _Flask

    app, _ext, gate = _app(make_app)
    app.__class__ = Unescaped
    app.__dict__.pop("jinja_env", None)  # the cached environment is made again
    assert isinstance(app, _Flask)
    gate.set()

    @app.post("/evil")
    def evil() -> Any:
        return jsonify(
            token=app.extensions["asyncstate"]
            .extension.registered_job("export")
            .start("<img src=x onerror=alert(1)>")
            .token
        )

    browser = client(app)
    token = browser.post("/evil").json["token"]
    with app.app_context():
        wait_for(app.extensions["asyncstate"].extension.handle(token), "succeeded")
    answer = browser.get(f"/asyncstate/result/{token}")
    assert answer.status_code == 404 and b"onerror" not in answer.data
