"""The blueprint: every row of SPEC.md's error table, session isolation, token tampering."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from flask import Flask
from flask_wtf.csrf import CSRFProtect, generate_csrf
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from support.apps import Gate
from support.redis_server import RedisServer

from flask_asyncstate import views
from flask_asyncstate.tokens import SALT

XHR = {"X-Requested-With": "XMLHttpRequest"}


@pytest.fixture
def web(make_jobs, backend_url):
    """An app with a view that starts jobs, on both backends."""
    app, ext, jobs = make_jobs(backend_url, ASYNCSTATE_MAX_JOBS_PER_OWNER=2)
    gate = Gate()

    @app.post("/start/<kind>")
    def start(kind: str):
        args = {"count": (3,), "until_cancelled": (), "blocked": (gate.name,)}[kind]
        return {"token": jobs[kind].start(*args).token}

    yield app, ext, gate
    gate.set()


def _start(client, kind: str = "until_cancelled") -> str:
    response = client.post(f"/start/{kind}")
    assert response.status_code == 200, response.data
    return response.json["token"]


def _assert_json_error(response, status: int) -> None:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    assert "error" in response.json
    assert response.headers["Cache-Control"] == "no-store"


def test_progress_answers_own_job_by_get_and_post(web) -> None:
    app, _ext, _ = web
    client = app.test_client()
    token = _start(client, "count")
    for method in (client.get, client.post):
        response = method(f"/asyncstate/progress/{token}")
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        assert response.json["name"] == "count"
        assert response.json["status"] in ("queued", "running", "succeeded")


def _flip(token: str, index: int) -> str:
    ch = token[index]
    return token[:index] + ("A" if ch != "A" else "B") + token[index + 1 :]


def test_bad_tokens_all_answer_the_same_404(web) -> None:
    app, _ext, _ = web
    client = app.test_client()
    token = _start(client)
    job_id = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=SALT).loads(token)
    other_key = URLSafeTimedSerializer("another-secret", salt=SALT).dumps(job_id)

    class OldSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 3600  # an hour ago: past the max age below

    old = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=SALT, signer=OldSigner).dumps(
        job_id
    )
    app.extensions["asyncstate"].signer.max_age = 60
    bodies = set()
    for bad in [
        "garbage",
        "",
        "a" * 600,
        _flip(token, 3),
        _flip(token, len(token) - 2),
        other_key,
        old,
        token + "x",
        "%00",
        "..%2f..%2fetc",
    ]:
        response = client.get(f"/asyncstate/progress/{bad}")
        _assert_json_error(response, 404)
        bodies.add(response.data)
    stranger = app.test_client()  # a valid token from another session
    response = stranger.get(f"/asyncstate/progress/{token}")
    _assert_json_error(response, 404)
    bodies.add(response.data)
    assert len(bodies) <= 2  # "no such job in this session", or "not found" (no route)
    assert client.get(f"/asyncstate/progress/{token}").status_code == 200


def test_sessions_are_isolated(web) -> None:
    app, _ext, _ = web
    alice, bob = app.test_client(), app.test_client()
    token = _start(alice)
    assert [j["token"] for j in alice.get("/asyncstate/jobs").json]
    assert bob.get("/asyncstate/jobs").json == []
    _assert_json_error(bob.post(f"/asyncstate/cancel/{token}", headers=XHR), 404)
    assert alice.get(f"/asyncstate/progress/{token}").json["cancel_requested"] is False


def test_jobs_lists_exactly_the_quota_of_finished_jobs(web) -> None:
    """ASYNCSTATE_MAX_JOBS_PER_OWNER (2 here) newest finished jobs, not one more: the
    owner's index holds one extra ended id from a job's end to the owner's next start."""
    app, ext, gate = web
    client = app.test_client()
    tokens = []
    for _ in range(3):
        tokens.append(_start(client, "count"))
        with app.app_context():
            assert ext.handle(tokens[-1]).wait(10)["status"] == "succeeded"
    listed = [j["token"] for j in client.get("/asyncstate/jobs").json]
    assert listed == [tokens[2], tokens[1]]  # newest first
    running = _start(client, "blocked")  # unfinished ones are listed besides them
    listed = [j["token"] for j in client.get("/asyncstate/jobs").json]
    assert listed == [running, tokens[2], tokens[1]]
    gate.set()
    with app.app_context():
        assert ext.handle(running).wait(10)["status"] == "succeeded"
    listed = [j["token"] for j in client.get("/asyncstate/jobs").json]
    assert listed == [running, tokens[2]]
    assert client.get(f"/asyncstate/progress/{tokens[0]}").status_code == 200  # still opens


def test_cancel_needs_post_and_same_origin_proof(web) -> None:
    app, _ext, _ = web
    client = app.test_client()
    token = _start(client)
    response = client.get(f"/asyncstate/cancel/{token}")
    _assert_json_error(response, 405)
    assert response.headers["Allow"] == "POST"
    _assert_json_error(client.delete(f"/asyncstate/progress/{token}"), 405)
    _assert_json_error(client.post("/asyncstate/jobs"), 405)
    _assert_json_error(client.post(f"/asyncstate/cancel/{token}"), 403)
    _assert_json_error(
        client.post(f"/asyncstate/cancel/{token}", headers={"Origin": "https://evil.example"}), 403
    )
    assert client.get(f"/asyncstate/progress/{token}").json["cancel_requested"] is False
    response = client.post(f"/asyncstate/cancel/{token}", headers={"Origin": "http://localhost"})
    assert response.status_code == 202
    assert response.json["cancel_requested"] is True
    assert response.headers["Cache-Control"] == "no-store"


def test_cancel_with_header_stops_the_job(web) -> None:
    app, ext, _ = web
    client = app.test_client()
    token = _start(client)
    response = client.post(f"/asyncstate/cancel/{token}", headers=XHR)
    assert response.status_code == 202 and response.json["cancel_requested"] is True
    with app.app_context():
        assert ext.handle(token).wait(10)["status"] == "cancelled"
    assert client.get(f"/asyncstate/progress/{token}").json["status"] == "cancelled"


def test_flask_wtf_csrf_is_honoured(app, jobs) -> None:
    CSRFProtect(app)  # set up after us: our blueprint must still answer JSON

    @app.get("/start")
    def start():
        return {"token": jobs["until_cancelled"].start().token, "csrf": generate_csrf()}

    client = app.test_client()
    started = client.get("/start").json
    url = f"/asyncstate/cancel/{started['token']}"
    _assert_json_error(client.post(url, headers=XHR), 403)
    _assert_json_error(client.post(url, headers={**XHR, "X-CSRFToken": "forged"}), 403)
    response = client.post(url, headers={**XHR, "X-CSRFToken": started["csrf"]})
    assert response.status_code == 202


def test_quota_answers_429(web) -> None:
    app, _ext, _gate = web
    client = app.test_client()
    _start(client, "blocked")
    _start(client, "blocked")
    response = client.post("/start/blocked")
    _assert_json_error(response, 429)
    assert "You already have 2 jobs" in response.json["error"]  # words for the user, not config
    assert response.headers["Retry-After"]
    assert app.test_client().post("/start/blocked").status_code == 200  # others are not affected


def test_store_unreachable_answers_503(make_jobs) -> None:
    server = RedisServer().start()
    try:
        app, _ext, jobs = make_jobs(server.url)

        @app.post("/start")
        def start():
            return {"token": jobs["count"].start(2).token}

        client = app.test_client()
        token = client.post("/start").json["token"]
        assert client.get(f"/asyncstate/progress/{token}").status_code == 200
        server.stop()
        _assert_json_error(client.get(f"/asyncstate/progress/{token}"), 503)
        _assert_json_error(client.post(f"/asyncstate/cancel/{token}", headers=XHR), 503)
        _assert_json_error(client.get("/asyncstate/jobs"), 503)
        _assert_json_error(client.post("/start"), 503)
    finally:
        server.stop()


def test_unknown_paths_under_the_prefix_answer_json(web) -> None:
    app, _ext, _ = web
    client = app.test_client()
    for path in [
        "/asyncstate",
        "/asyncstate/",
        "/asyncstate/progress/",
        "/asyncstate/nope",
        "/asyncstate/progress/a/b",
        "/asyncstate/cancel",
    ]:
        _assert_json_error(client.get(path), 404)


def test_assets_are_served_locally(web) -> None:
    app, _ext, _ = web
    client = app.test_client()
    for path, needle in [
        ("jquery.js", b"jQuery v3"),
        ("asyncstate.js", b"$.fn[NAME] = Plugin"),
        ("asyncstate.mjs", b"customElements.define('asyncstate-progress'"),
        ("asyncstate.css", b".asyncstate-bar"),
    ]:
        with client.get(f"/asyncstate/{path}") as response:
            assert response.status_code == 200
            assert needle in response.data


def test_widget_renders_accessible_markup(web) -> None:
    app, _ext, _ = web
    with app.test_request_context("/"):
        html = app.jinja_env.from_string("{{ asyncstate_widget('t<o>k') }}").render()
    assert 'role="progressbar"' in html and 'aria-valuenow="0"' in html
    assert 'data-asyncstate-token="t&lt;o&gt;k"' in html
    assert (
        'data-src="/asyncstate/jquery.js"' in html and "cdn" not in html.lower()
    )  # only if missing


def test_url_prefix_is_configurable(make_app) -> None:
    app, _ext = make_app(ASYNCSTATE_URL_PREFIX="/jobs-api/")
    assert app.test_client().get("/jobs-api/jobs").json == []
    with app.test_request_context("/"):
        assert (
            'data-asyncstate-prefix="/jobs-api"'
            in app.jinja_env.from_string("{{ asyncstate_widget('t') }}").render()
        )
    assert isinstance(app, Flask)


def test_cancel_of_a_finished_job_changes_nothing(web) -> None:
    app, ext, _ = web
    client = app.test_client()
    token = _start(client, "count")
    with app.app_context():
        ext.handle(token).wait(10)
    response = client.post(f"/asyncstate/cancel/{token}", headers=XHR)
    assert response.status_code == 202
    assert response.json["status"] == "succeeded" and response.json["cancel_requested"] is False
    assert client.get(f"/asyncstate/progress/{token}").json["cancel_requested"] is False


def test_bad_token_in_a_user_view_is_a_json_404(web) -> None:
    app, ext, _ = web

    @app.get("/mine/<token>")
    def mine(token: str):
        return ext.status(token) or {}

    _assert_json_error(app.test_client().get("/mine/forged"), 404)


@pytest.mark.parametrize("prefix", ["", "/", "relative"])
def test_url_prefix_must_be_an_absolute_path(make_app, prefix: str) -> None:
    with pytest.raises(ValueError, match="ASYNCSTATE_URL_PREFIX"):
        make_app(ASYNCSTATE_URL_PREFIX=prefix)


def test_widget_script_is_told_the_statuses_wherever_it_is_served_from(make_app) -> None:
    app, _ext = make_app()
    client = app.test_client()
    script = client.get("/asyncstate/asyncstate.js")
    assert script.status_code == 200
    assert script.data.startswith(b'window.asyncstateStatuses = {"all": ["queued", "running"')
    assert (
        client.get(
            "/asyncstate/asyncstate.js", headers={"If-None-Match": script.headers["ETag"]}
        ).status_code
        == 304
    )
    assert client.get("/asyncstate/static/asyncstate.js").status_code == 404  # one way only
    with app.test_request_context("/"):
        page = app.jinja_env.from_string(
            "{{ asyncstate_widget('t', script_url='/assets/asyncstate.js') }}"
        ).render()
    assert '<script>window.asyncstateStatuses = {"all": ["queued"' in page
    assert '"final": ["succeeded", "failed", "cancelled", "lost"]' in page


def test_the_classic_script_is_the_modules_core_then_the_plugin(make_app) -> None:
    """``asyncstate.mjs`` and ``asyncstate.js`` serve one core: the module's code, its one
    export statement turned into the classic script's namespace, then the jQuery plugin."""
    app, _ext = make_app()
    client = app.test_client()
    module = client.get("/asyncstate/asyncstate.mjs")
    assert module.status_code == 200 and module.mimetype == "text/javascript"
    text = module.get_data(as_text=True)
    assert text.startswith('window.asyncstateStatuses = {"all": ["queued", "running"')
    assert text.count("\nexport ") == 1 and "\nimport " not in text  # no bundler needed
    core = text[text.index("/*!") : text.rindex("\nexport {")]
    classic = client.get("/asyncstate/asyncstate.js").get_data(as_text=True)
    assert "\nexport " not in classic and "window.asyncstate = (function () {" in classic
    assert core in classic and classic.index(core) < classic.index("$.fn[NAME] = Plugin")


def test_the_type_declarations_name_what_the_module_exports() -> None:
    static = Path(views.STATIC_FOLDER)
    exports = re.search(r"\nexport \{([^}]*)\};", (static / "asyncstate.mjs").read_text())
    assert exports is not None
    declared = (static / "asyncstate.d.ts").read_text()
    assert sorted(name.strip() for name in exports[1].split(",")) == sorted(
        re.findall(r"^export (?:class|const) (\w+)", declared, re.MULTILINE)
    )
