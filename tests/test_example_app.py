"""The example app: its hardening (CSRF, cookie, private session dir, shared secret, no-store,
gevent), its sign-in, its one-import-at-a-time rule and its French."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import stat
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from support.gunicorn_server import GunicornServer
from support.servers import csrf_token
from support.waiting import wait_until

import example_app
from example_app import InsecureStorage, create_app, shared_secret_key

JSON = {"Accept": "application/json"}
XHR = {"X-Requested-With": "XMLHttpRequest"}
#: A tiny import that runs inline: the in-process tests need no threads.
SMALL = {
    "ASYNCSTATE_EXECUTOR": "inline",
    "EXAMPLE_PRODUCTS": 20,
    "EXAMPLE_BATCH": 10,
    "EXAMPLE_PAUSE": 0.0,
}
spawn = multiprocessing.get_context("spawn")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _page_csrf(client: FlaskClient) -> str:
    """The CSRF token the index page gives this client's session (meta and form field agree)."""
    page = client.get("/").get_data(as_text=True)
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    field = re.search(r'<input type="hidden" name="csrf_token" value="([^"]+)">', page)
    assert meta and field, page
    return field.group(1)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's first run: no REDIS_URL, SECRET_KEY or SESSION_DIR in the environment."""
    for name in ("REDIS_URL", "SECRET_KEY", "SESSION_DIR", "FLASK_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_example(clean_env: None) -> Iterator[Any]:
    """Factory of example apps (shut down after the test: they share the module's AsyncState)."""
    made: list[Flask] = []

    def build(instance: Path, **config: object) -> Flask:
        app = create_app({**SMALL, **config}, instance_path=str(instance))
        made.append(app)
        return app

    yield build
    for app in made:
        example_app.asyncstate.app_state(app).shutdown(2)


@pytest.fixture
def app(make_example: Any, tmp_path: Path) -> Flask:
    return make_example(tmp_path / "instance")


# -- CSRF ------------------------------------------------------------------------------------


def test_tuning_keywords_come_from_example_tuning_variables(
    make_example: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``EXAMPLE_TUNING_<KEYWORD>``: the extension's tuning keywords (values read as JSON);
    ``FLASK_ASYNCSTATE_*`` keeps setting the configuration keys."""
    monkeypatch.setenv("EXAMPLE_TUNING_SSE_MAX_AGE", "1.5")
    monkeypatch.setenv("EXAMPLE_TUNING_MAX_STREAMS_PER_OWNER", "1")
    monkeypatch.setenv("FLASK_ASYNCSTATE_MAX_STREAMS", "7")
    app = make_example(tmp_path / "instance")
    settings = example_app.asyncstate.app_state(app).settings
    assert settings.tuning.sse_max_age == 1.5 and settings.tuning.max_streams_per_owner == 1
    assert settings.max_streams == 7
    monkeypatch.setenv("EXAMPLE_TUNING_SSE_MAX_AGEE", "1")
    with pytest.raises(TypeError, match="'sse_max_agee'"):
        make_example(tmp_path / "other")


def test_import_without_the_csrf_token_is_refused_and_starts_no_job(app: Flask) -> None:
    client = app.test_client()
    client.get("/")  # the session exists and holds a CSRF secret: only the token is missing
    form = client.post("/import")
    assert form.status_code == 400 and "CSRF token is missing" in form.get_data(as_text=True)
    api = client.post("/import", headers=JSON)
    assert api.status_code == 400 and api.json == {"error": "The CSRF token is missing."}
    forged = client.post("/import", headers={**JSON, "X-CSRFToken": "forged"})
    assert forged.status_code == 400
    assert client.get("/asyncstate/jobs").json == []


def test_import_with_the_csrf_token_redirects_a_form_and_answers_json_202(app: Flask) -> None:
    client = app.test_client()
    token = _page_csrf(client)
    form = client.post("/import", data={"csrf_token": token})
    assert form.status_code == 302 and form.headers["Location"].startswith("/?token=")
    api = client.post("/import", headers={**JSON, "X-CSRFToken": token})
    assert api.status_code == 202 and set(api.json) == {"token"}
    jobs = client.get("/asyncstate/jobs").json
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]


def test_cancel_route_checks_the_csrf_token_from_the_meta_tag(app: Flask) -> None:
    """The library's own check is live on the example: the widget's token from ``<meta>`` passes."""
    client = app.test_client()
    token = _page_csrf(client)
    job = client.post("/import", headers={**JSON, "X-CSRFToken": token}).json["token"]
    refused = client.post(f"/asyncstate/cancel/{job}", headers=XHR)
    assert refused.status_code == 403 and "CSRF" in refused.json["error"]
    accepted = client.post(f"/asyncstate/cancel/{job}", headers={**XHR, "X-CSRFToken": token})
    assert accepted.status_code == 202  # the inline job already ended: the document says how


# -- cookie and caching -----------------------------------------------------------------------


def test_session_cookie_is_samesite_lax_and_httponly(app: Flask) -> None:
    response = app.test_client().get("/")
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert len(cookies) == 1, response.headers
    attributes = {part.strip() for part in cookies[0].split(";")[1:]}
    assert {"SameSite=Lax", "HttpOnly"} <= attributes, cookies[0]


def test_pages_with_job_tokens_are_sent_no_store(app: Flask) -> None:
    client = app.test_client()
    token = client.post("/import", headers={**JSON, "X-CSRFToken": _page_csrf(client)}).json[
        "token"
    ]
    page = client.get(f"/?token={token}")
    assert page.status_code == 200 and token in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    [job] = client.get("/asyncstate/jobs").json
    jobs = client.get("/my-jobs")
    assert job["status"] == "succeeded" and jobs.status_code == 200
    assert f'data-job-id="{job["id"]}"' in jobs.get_data(as_text=True)
    assert jobs.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("client", ["jquery", "htmx", "module"])
def test_the_import_page_three_ways(app: Flask, client: str) -> None:
    """The form of each page starts the import and comes back to that page, which shows the
    widget its way; each page links to the other two."""
    browser = app.test_client()
    path = {"jquery": "/", "htmx": "/htmx", "module": "/module"}[client]
    form = browser.get(path).get_data(as_text=True)
    for other in ("/", "/htmx", "/module"):
        assert f'href="{other}"' in form
    assert f'<input type="hidden" name="client" value="{client}">' in form
    answer = browser.post("/import", data={"csrf_token": _page_csrf(browser), "client": client})
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(f"{path}?token=")
    token = location.split("token=", 1)[1]
    shown = browser.get(location)
    page = shown.get_data(as_text=True)
    assert shown.headers["Cache-Control"] == "no-store"
    assert f'id="client-{client}" aria-current="page"' in page
    scripts = re.findall(r'<script[^>]* src="([^"]+)"', page)
    if client == "jquery":
        assert f'data-asyncstate-token="{token}"' in page
        assert "/asyncstate/asyncstate.js" in scripts
    elif client == "htmx":  # rendered on the server, htmx and its SSE extension from npm
        assert 'data-asyncstate-fragment="succeeded"' in page  # (it ran inline: done)
        assert scripts == ["/vendor/htmx.min.js", "/vendor/sse.js"]  # no jQuery, none of ours
        for script in scripts:
            with browser.get(script) as served:
                assert served.status_code == 200 and served.mimetype == "text/javascript"
    else:  # the element and the module, no jQuery
        assert f'<asyncstate-progress token="{token}" prefix="/asyncstate"' in page
        assert 'mode="poll"' in page  # this process serves no streams: none asked for
        assert scripts == ["/asyncstate/asyncstate.mjs"]
    assert 'id="htmx-missing"' not in page


def test_the_htmx_page_says_to_run_npm_ci_when_htmx_is_missing(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = {name: tmp_path / "node_modules" / name for name in example_app.VENDOR}
    monkeypatch.setattr(example_app, "VENDOR", missing)
    browser = app.test_client()
    token = _start(browser).json["token"]
    page = browser.get(f"/htmx?token={token}").get_data(as_text=True)
    notice = re.search(r'<p [^>]*id="htmx-missing">([^<]*)</p>', page)
    assert notice and "run npm ci" in notice.group(1)
    assert 'role="alert"' in page and "/vendor/" not in page  # no script tag that would 404
    assert 'data-asyncstate-fragment="succeeded"' in page  # the widget as it is, still shown
    answer = browser.get("/vendor/htmx.min.js")
    assert answer.status_code == 404 and b"run npm ci" in answer.data


def test_the_htmx_page_in_french_says_why_its_widget_is_english(app: Flask) -> None:
    browser = app.test_client()
    _choose(browser, "fr")
    token = _start(browser).json["token"]
    page = browser.get(f"/htmx?token={token}").get_data(as_text=True)
    assert 'id="htmx-labels"' in page and "Flask-Babel" in page
    assert '<p class="asyncstate-status" role="status">Done</p>' in page  # the server's labels
    module = browser.get(f"/module?token={token}").get_data(as_text=True)
    assert "Annuler" in module  # the element takes the page's labels, in French
    english = app.test_client()
    token = _start(english).json["token"]
    assert 'id="htmx-labels"' not in english.get(f"/htmx?token={token}").get_data(as_text=True)


# -- the session directory --------------------------------------------------------------------


def test_session_dir_is_created_private_under_the_instance_path(app: Flask, tmp_path: Path) -> None:
    sessions = tmp_path / "instance" / "sessions"
    assert app.instance_path == str(tmp_path / "instance")
    assert _mode(tmp_path / "instance") == 0o700 and _mode(sessions) == 0o700
    app.test_client().get("/")  # writes this session's file
    files = list(sessions.iterdir())
    assert files and {_mode(f) for f in files} == {0o600}


@pytest.mark.parametrize(
    ("where", "mode"),
    [
        ("sessions", 0o777),  # the reported hole: anyone can plant a pickle
        ("sessions", 0o750),  # group-readable: the sessions' job ids and CSRF secrets leak
        ("instance", 0o777),  # others could swap the sessions directory or the secret file
    ],
)
def test_an_existing_dir_open_to_others_is_refused(
    make_example: Any, tmp_path: Path, where: str, mode: int
) -> None:
    instance = tmp_path / "instance"
    (instance / "sessions").mkdir(parents=True, mode=0o700)
    os.chmod(instance, 0o700)
    os.chmod(instance / where if where == "sessions" else instance, mode)
    with pytest.raises(InsecureStorage, match=rf"{where}.* has mode {mode:o}"):
        make_example(instance, SECRET_KEY="set: only the session dir is checked")


def test_a_world_writable_session_dir_env_is_refused(
    make_example: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared-sessions"
    shared.mkdir()
    os.chmod(shared, 0o777)
    monkeypatch.setenv("SESSION_DIR", str(shared))
    with pytest.raises(InsecureStorage, match="shared-sessions has mode 777"):
        make_example(tmp_path / "instance")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_a_session_dir_of_another_user_is_refused(make_example: Any, tmp_path: Path) -> None:
    sessions = tmp_path / "instance" / "sessions"
    sessions.mkdir(parents=True, mode=0o700)
    os.chown(sessions, 65534, 65534)  # nobody
    with pytest.raises(InsecureStorage, match="belongs to uid 65534"):
        make_example(tmp_path / "instance")


# -- the secret key ---------------------------------------------------------------------------


def test_apps_without_secret_key_env_share_one_secret_file(
    make_example: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    instance = tmp_path / "instance"
    with caplog.at_level(logging.WARNING, logger="example_app"):
        first, second = make_example(instance), make_example(instance)  # two gunicorn workers
    secret_file = instance / "secret_key"
    assert first.secret_key == second.secret_key == secret_file.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", first.secret_key) and _mode(secret_file) == 0o600
    assert "several machines need the same SECRET_KEY" in caplog.text
    # what one worker signs, the other accepts: a CSRF token from the first worker's page
    # starts an import on the second (they share the session directory too)
    one, other = first.test_client(), second.test_client()
    token = _page_csrf(one)
    other.set_cookie("session", one.get_cookie("session").value)  # type: ignore[union-attr]
    assert other.post("/import", headers={**JSON, "X-CSRFToken": token}).status_code == 202


def test_a_secret_key_env_creates_no_secret_file(
    make_example: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    monkeypatch.setenv("SESSION_DIR", str(tmp_path / "sessions"))
    app = make_example(tmp_path / "instance")
    assert app.secret_key == "from-the-environment"
    assert not (tmp_path / "instance").exists()


def _race_for_secret(barrier: Any, instance: str, out: Any) -> None:
    """One worker starting: wait for the others, then all read or create the secret at once."""
    barrier.wait(30)
    out.put(shared_secret_key(instance))


@pytest.mark.reliability  # processes, servers or a flood: the whole suite runs it
def test_workers_racing_to_create_the_secret_all_get_the_winners(tmp_path: Path) -> None:
    instance, n = str(tmp_path / "instance"), 8
    barrier, out = spawn.Barrier(n), spawn.Queue()
    procs = [
        spawn.Process(target=_race_for_secret, args=(barrier, instance, out)) for _ in range(n)
    ]
    for p in procs:
        p.start()
    try:
        keys = [out.get(timeout=60) for _ in range(n)]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert len(set(keys)) == 1 and keys[0] == (tmp_path / "instance" / "secret_key").read_text()
    print(f"{n} processes raced to create instance/secret_key: one file, one key")


# -- under gunicorn with gevent workers -------------------------------------------------------


def _sse(response: requests.Response, deadline: float) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data) for each Server-Sent Events frame, until the stream ends or time is up."""
    event = "message"
    for line in response.iter_lines(decode_unicode=True):
        assert time.monotonic() < deadline, "event stream too slow"
        if line.startswith("event:"):
            event = line[len("event:") :].strip()
        elif line.startswith("data:"):
            yield event, json.loads(line[len("data:") :])
            event = "message"


def _wait_for(browser: requests.Session, url: str, status: str, within: float) -> dict[str, Any]:
    """The document at ``url`` once it reads ``status``; it may only be unfinished until then."""
    seen: list[dict[str, Any]] = []

    def reached() -> dict[str, Any] | None:
        doc = browser.get(url, timeout=5).json()
        seen[:] = [doc]
        if doc["status"] == status:
            return doc
        assert doc["status"] in ("queued", "running"), doc
        return None

    return wait_until(reached, within, interval=0.05, message=lambda: f"{status}: {seen}")


@pytest.mark.reliability  # processes, servers or a flood: the whole suite runs it
def test_import_watch_and_cancel_under_gunicorn_gevent(redis_url: str, tmp_path: Path) -> None:
    env = {
        "REDIS_URL": redis_url,
        "EXAMPLE_PRODUCTS": "300",
        "EXAMPLE_BATCH": "10",
        "EXAMPLE_PAUSE": "0.05",
    }  # 30 batches: 1.5 s per import
    server = GunicornServer(tmp_path, worker_class="gevent", workers=1, graceful_timeout=5, env=env)
    with server as app:
        browser = requests.Session()
        csrf = {"X-CSRFToken": csrf_token(browser, app.url + "/")}
        refused = browser.post(f"{app.url}/import", headers=JSON, timeout=5)
        assert refused.status_code == 400 and "CSRF" in refused.json()["error"]
        assert browser.get(f"{app.url}/asyncstate/jobs", timeout=5).json() == []

        started = time.monotonic()
        first = browser.post(f"{app.url}/import", headers={**JSON, **csrf}, timeout=5)
        assert first.status_code == 202, first.text
        done = _wait_for(
            browser,
            f"{app.url}/asyncstate/progress/{first.json()['token']}",
            "succeeded",
            within=20,
        )
        assert done["result"] == {"imported": 300}
        took = time.monotonic() - started

        second = browser.post(f"{app.url}/import", headers={**JSON, **csrf}, timeout=5)
        assert second.status_code == 202, second.text
        token = second.json()["token"]
        deadline = time.monotonic() + 20
        with browser.get(
            f"{app.url}/asyncstate/events/{token}", stream=True, timeout=(5, 5)
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            frames = _sse(stream, deadline)
            event, doc = next(frames)
            assert event == "message" and doc["status"] in ("queued", "running"), doc

            no_token = browser.post(f"{app.url}/asyncstate/cancel/{token}", headers=XHR, timeout=5)
            assert no_token.status_code == 403
            cancel = browser.post(
                f"{app.url}/asyncstate/cancel/{token}", headers={**XHR, **csrf}, timeout=5
            )
            assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True
            pushed = 1
            for event, doc in frames:  # the stream itself reports the cancel, then ends
                pushed += 1
                if event == "end":
                    break
        assert doc["status"] == "cancelled" and doc["current"] < 300, doc
        final = _wait_for(browser, f"{app.url}/asyncstate/progress/{token}", "cancelled", 5)
        assert final["id"] == doc["id"]
    log = server.log_path.read_text()
    assert "Traceback" not in log, log
    print(
        f"gunicorn -k gevent: CSRF-less import 400; import succeeded in {took:.1f} s; "
        f"second import streamed {pushed} SSE frames, cancelled at {doc['current']} of 300"
    )


# -- signing in and out -----------------------------------------------------------------------


def _login(client: FlaskClient, name: str, **extra: str) -> Any:
    """``POST /login`` with the session's CSRF token (redirects not followed)."""
    return client.post("/login", data={"csrf_token": _page_csrf(client), "name": name, **extra})


def _logout(client: FlaskClient) -> Any:
    return client.post("/logout", data={"csrf_token": _page_csrf(client)})


def _start(client: FlaskClient) -> Any:
    """``POST /import`` as a JSON client."""
    return client.post("/import", headers={**JSON, "X-CSRFToken": _page_csrf(client)})


def _job_ids(client: FlaskClient) -> list[str]:
    return [j["id"] for j in client.get("/asyncstate/jobs").json]


def _flashes(client: FlaskClient, path: str = "/") -> list[str]:
    page = client.get(path).get_data(as_text=True)
    return [
        re.sub(r"\s+", " ", m).strip() for m in re.findall(r'<p class="flash[^>]*>(.*?)</p>', page)
    ]


def test_login_page_has_a_csrf_protected_name_form_and_is_not_cached(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/login")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert 'name="csrf_token"' in body and 'name="name"' in body and 'maxlength="40"' in body
    assert 'id="sign-in"' in client.get("/").get_data(as_text=True)  # the header offers it
    refused = client.post("/login", data={"name": "alice"})
    assert refused.status_code == 400 and "CSRF token is missing" in refused.get_data(as_text=True)
    assert "Signed in as" not in client.get("/").get_data(as_text=True)
    assert client.get("/logout").status_code == 405  # signing out is a form, never a link


def test_login_strips_the_name_and_the_header_shows_it_until_logout(app: Flask) -> None:
    client = app.test_client()
    answer = _login(client, "  Alice Example  ")
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert '<span id="signed-in">Signed in as Alice Example</span>' in page
    assert "Signed in as Alice Example." in page  # the flash, once
    assert 'id="sign-out"' in page and 'id="sign-in"' not in page
    refused = client.post("/logout")  # no CSRF token: still signed in
    assert refused.status_code == 400
    assert "Signed in as Alice Example" in client.get("/").get_data(as_text=True)
    out = _logout(client)
    assert out.status_code == 302 and out.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert "Signed in as" not in page and 'id="sign-in"' in page
    assert "Signed out. Your jobs keep running: sign in again to see them." in page


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "Enter a name."),
        ("   \t ", "Enter a name."),
        ("x" * 41, "A name has at most 40 characters."),
    ],
)
def test_login_refuses_an_empty_or_long_name_with_a_flash(
    app: Flask, name: str, error: str
) -> None:
    client = app.test_client()
    answer = _login(client, name, next="/my-jobs")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login")
    assert _flashes(client, answer.headers["Location"]) == [error]
    assert "Signed in as" not in client.get("/").get_data(as_text=True)
    assert _login(client, " " + "y" * 40 + " ").status_code == 302  # 40 after stripping: fine
    assert f"Signed in as {'y' * 40}" in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
def test_login_never_redirects_off_site(app: Flask, target: str) -> None:
    client = app.test_client()
    assert _login(client, "alice", next=target).headers["Location"] == "/"
    assert _login(client, "alice", next="/my-jobs").headers["Location"] == "/my-jobs"


def test_login_and_logout_give_the_session_a_new_id(app: Flask) -> None:
    """Against session fixation: the id a browser had before signing in is worth nothing after."""
    client = app.test_client()
    client.get("/")
    before = client.get_cookie("session").value  # type: ignore[union-attr]
    _login(client, "alice")
    signed_in = client.get_cookie("session").value  # type: ignore[union-attr]
    assert signed_in != before
    planted = app.test_client()  # whoever held the old id
    planted.set_cookie("session", before)
    assert "Signed in as" not in planted.get("/").get_data(as_text=True)
    _logout(client)
    assert client.get_cookie("session").value != signed_in  # type: ignore[union-attr]


def test_a_users_jobs_follow_the_user_and_no_one_else_sees_them(app: Flask) -> None:
    laptop, phone, other = app.test_client(), app.test_client(), app.test_client()
    _login(laptop, "alice")
    started = _start(laptop)
    assert started.status_code == 202
    token = started.json["token"]
    [job_id] = _job_ids(laptop)
    _login(phone, "alice")  # another browser, the same user
    assert _job_ids(phone) == [job_id]
    assert phone.get(f"/asyncstate/progress/{token}").json["id"] == job_id
    assert f'data-job-id="{job_id}"' in phone.get("/my-jobs").get_data(as_text=True)
    _login(other, "bob")
    assert _job_ids(other) == []
    assert other.get(f"/asyncstate/progress/{token}").status_code == 404
    assert job_id not in other.get("/my-jobs").get_data(as_text=True)
    # signing out: the browser is anonymous (none of alice's jobs), signing in again finds them
    _logout(laptop)
    assert _job_ids(laptop) == []
    assert laptop.get(f"/asyncstate/progress/{token}").status_code == 404
    _login(laptop, "alice")
    assert _job_ids(laptop) == [job_id]


def test_my_jobs_renders_the_owners_jobs_as_live_widgets(app: Flask) -> None:
    client = app.test_client()
    empty = client.get("/my-jobs").get_data(as_text=True)
    assert "No jobs yet" in empty and "The jobs of this browser session." in empty
    _start(client)
    page = client.get("/my-jobs").get_data(as_text=True)
    [job_id] = _job_ids(client)
    assert f'data-job-id="{job_id}"' in page
    assert page.count("data-asyncstate-token=") == 1 and 'class="asyncstate-cancel"' in page
    _login(client, "alice")
    assert "The jobs of alice, from any browser they signed in on." in client.get(
        "/my-jobs"
    ).get_data(as_text=True)


# -- one import at a time -----------------------------------------------------------------------


@pytest.fixture
def slow_app(make_example: Any, tmp_path: Path) -> Flask:
    """Imports that run in threads for a minute (the test cancels them; teardown stops them)."""
    return make_example(
        tmp_path / "instance",
        ASYNCSTATE_EXECUTOR="threads",
        EXAMPLE_PRODUCTS=1000,
        EXAMPLE_BATCH=1,
        EXAMPLE_PAUSE=0.05,
    )


def _wait_final(client: FlaskClient, token: str) -> dict[str, Any]:
    return wait_until(
        lambda: (
            (d := client.get(f"/asyncstate/progress/{token}").json)["status"]
            not in ("queued", "running")
            and d
        ),
        10,
        message="the import ends",
    )


def test_a_second_import_while_one_runs_redirects_to_the_running_one(slow_app: Flask) -> None:
    client = slow_app.test_client()
    first = client.post("/import", data={"csrf_token": _page_csrf(client)})
    assert first.status_code == 302 and first.headers["Location"].startswith("/?token=")
    assert _flashes(client, first.headers["Location"]) == []  # a new import: no message
    second = client.post("/import", data={"csrf_token": _page_csrf(client)})
    assert second.status_code == 302 and second.headers["Location"].startswith("/?token=")
    assert _flashes(client, second.headers["Location"]) == [
        "An import is already running: here it is"
    ]
    token = second.headers["Location"].split("token=", 1)[1]
    [job_id] = _job_ids(client)  # one job, not two
    assert client.get(f"/asyncstate/progress/{token}").json["id"] == job_id
    again = _start(client)  # a JSON client: 200 (not 202) and the running job's token
    assert again.status_code == 200 and set(again.json) == {"token"}
    assert client.get(f"/asyncstate/progress/{again.json['token']}").json["id"] == job_id

    csrf = _page_csrf(client)
    cancel = client.post(f"/asyncstate/cancel/{token}", headers={**XHR, "X-CSRFToken": csrf})
    assert cancel.status_code == 202
    assert _wait_final(client, token)["status"] == "cancelled"
    fresh = _start(client)  # none unfinished: a new import
    assert fresh.status_code == 202
    assert client.get(f"/asyncstate/progress/{fresh.json['token']}").json["id"] != job_id
    client.post(f"/asyncstate/cancel/{fresh.json['token']}", headers={**XHR, "X-CSRFToken": csrf})


def test_one_import_at_a_time_is_per_owner(slow_app: Flask) -> None:
    alice, bob, anonymous = (slow_app.test_client() for _ in range(3))
    _login(alice, "alice")
    _login(bob, "bob")
    answers = [_start(c) for c in (alice, bob, anonymous)]
    assert [a.status_code for a in answers] == [202, 202, 202]
    ids = {_job_ids(c)[0] for c in (alice, bob, anonymous)}
    assert len(ids) == 3
    for client, answer in zip((alice, bob, anonymous), answers):
        token = answer.json["token"]
        client.post(
            f"/asyncstate/cancel/{token}", headers={**XHR, "X-CSRFToken": _page_csrf(client)}
        )
        assert _wait_final(client, token)["status"] == "cancelled"


def test_example_unique_0_lets_a_session_start_imports_up_to_its_quota(
    make_example: Any, tmp_path: Path
) -> None:
    """``EXAMPLE_UNIQUE=0``: what the load tests use to exercise the session quota instead."""
    app = make_example(
        tmp_path / "instance",
        ASYNCSTATE_EXECUTOR="threads",
        EXAMPLE_PRODUCTS=1000,
        EXAMPLE_BATCH=1,
        EXAMPLE_PAUSE=0.05,
        EXAMPLE_UNIQUE=False,
        ASYNCSTATE_MAX_JOBS_PER_OWNER=2,
    )
    client = app.test_client()
    codes = [_start(client).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    assert len(_job_ids(client)) == 2
    form = client.post("/import", data={"csrf_token": _page_csrf(client)})  # a person at a form
    assert form.status_code == 302 and _flashes(client, form.headers["Location"]) == [
        "Too many unfinished jobs: wait for one to end, or cancel one."
    ]


# -- French ---------------------------------------------------------------------------------------


def _choose(client: FlaskClient, lang: str, next: str = "/") -> Any:
    return client.post(
        "/language", data={"csrf_token": _page_csrf(client), "lang": lang, "next": next}
    )


def test_the_language_switch_is_a_csrf_form_kept_in_the_session(app: Flask) -> None:
    client = app.test_client()
    english = client.get("/").get_data(as_text=True)
    assert '<html lang="en">' in english and "Import products" in english
    assert client.post("/language", data={"lang": "fr"}).status_code == 400  # no CSRF token
    assert '<html lang="en">' in client.get("/").get_data(as_text=True)
    answer = _choose(client, "fr", next="/my-jobs")
    assert answer.status_code == 302 and answer.headers["Location"] == "/my-jobs"
    page = client.get("/").get_data(as_text=True)
    assert '<html lang="fr">' in page and "Importer les produits" in page
    assert "Importe 20 produits générés" in page and "Se connecter" in page
    assert "Aucune tâche pour l’instant" in client.get("/my-jobs").get_data(as_text=True)
    assert _choose(client, "de").status_code == 302  # unknown: ignored
    assert '<html lang="fr">' in client.get("/").get_data(as_text=True)
    assert _choose(client, "fr", next="https://evil.example/").headers["Location"] == "/"
    _choose(client, "en")
    assert '<html lang="en">' in client.get("/").get_data(as_text=True)


def test_accept_language_picks_the_first_page_language(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/", headers={"Accept-Language": "fr-CH, fr;q=0.9, en;q=0.8"})
    assert '<html lang="fr">' in page.get_data(as_text=True)
    assert '<html lang="en">' in client.get("/", headers={"Accept-Language": "de"}).get_data(
        as_text=True
    )


def _widget_labels(page: str) -> dict[str, str]:
    import html

    found = re.search(r'data-asyncstate-labels="([^"]+)"', page)
    assert found, page
    return json.loads(html.unescape(found.group(1)))


def test_the_widget_and_the_jobs_panel_speak_french(app: Flask) -> None:
    from example_app.i18n import FRENCH

    client = app.test_client()
    _choose(client, "fr")
    token = _start(client).json["token"]
    page = client.get(f"/?token={token}").get_data(as_text=True)
    assert _widget_labels(page) == {
        **FRENCH,
        "progress": "Progression de l’importation des produits",
    }
    assert '<button type="button" class="asyncstate-cancel">Annuler</button>' in page
    assert 'aria-label="Progression de l’importation des produits"' in page
    jobs = client.get("/my-jobs").get_data(as_text=True)
    assert _widget_labels(jobs) == FRENCH and ">Annuler</button>" in jobs
    # the progress message is in the language of whoever started the import
    assert client.get(f"/asyncstate/progress/{token}").json["message"] == "20 sur 20 produits"
    other = app.test_client()  # English
    english = other.get(f"/asyncstate/progress/{_start(other).json['token']}").json
    assert english["message"] == "20 of 20 products"
    assert ">Cancel</button>" in other.get("/my-jobs").get_data(as_text=True)


def test_the_french_labels_cover_every_widget_label_and_keep_its_fields() -> None:
    from example_app.i18n import FRENCH, TEXTS
    from flask_asyncstate.templating import DEFAULT_LABELS

    assert set(FRENCH) == set(DEFAULT_LABELS)
    for key, english in DEFAULT_LABELS.items():
        fields = set(re.findall(r"\{(\w+)\}", english))
        assert set(re.findall(r"\{(\w+)\}", FRENCH[key])) == fields, key
    assert set(TEXTS["fr"]) == set(TEXTS["en"])


@pytest.mark.reliability  # processes, servers or a flood: the whole suite runs it
def test_streams_never_take_a_threaded_servers_threads(redis_url: str, tmp_path: Path) -> None:
    """gunicorn gthread with 4 threads and the default ASYNCSTATE_MAX_STREAMS: one session's
    streams are refused at once (the widget polls), so another visitor's page never waits."""
    env = {"REDIS_URL": redis_url, "EXAMPLE_PRODUCTS": "10000", "EXAMPLE_PAUSE": "0.05"}
    server = GunicornServer(tmp_path, worker_class="gthread", threads=4, workers=1, env=env)
    with server as app:
        browser = requests.Session()
        csrf = {"X-CSRFToken": csrf_token(browser, app.url + "/")}
        started = browser.post(f"{app.url}/import", headers={**JSON, **csrf}, timeout=5)
        assert started.status_code == 202, started.text
        token = started.json()["token"]
        streams = [
            browser.get(f"{app.url}/asyncstate/events/{token}", stream=True, timeout=5)
            for _ in range(6)
        ]
        try:
            assert [s.status_code for s in streams] == [429] * 6
            assert {s.headers["Retry-After"] for s in streams} == {"10"}
            began = time.monotonic()
            other = requests.get(f"{app.url}/", timeout=5)
            waited = time.monotonic() - began
            assert other.status_code == 200
            poll = browser.get(f"{app.url}/asyncstate/progress/{token}", timeout=5)
            assert poll.status_code == 200 and poll.json()["status"] in ("queued", "running")
        finally:
            for s in streams:
                s.close()
            browser.post(f"{app.url}/asyncstate/cancel/{token}", headers={**XHR, **csrf}, timeout=5)
    print(f"gunicorn gthread x4: 6 streams refused 429 at once; another page in {waited:.3f} s")


# -- landmarks ------------------------------------------------------------------------------------


class _Landmarks(HTMLParser):
    """Counts ``<main>`` and collects the text and elements of ``<body>`` outside every landmark
    (axe-core's ``landmark-one-main`` and ``region`` rules)."""

    LANDMARKS = frozenset({"main", "header", "footer", "nav", "aside"})
    VOID = frozenset({"meta", "link", "input", "br", "img", "hr", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.mains = 0
        self.stack: list[str] = []
        self.outside: list[str] = []

    def _outside(self) -> bool:
        """In ``<body>``, in no landmark, and not in a script."""
        inside = ("body" in self.stack) and "script" not in self.stack
        return inside and not any(tag in self.LANDMARKS for tag in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "main":
            self.mains += 1
        if self._outside() and tag not in self.LANDMARKS | {"script"}:
            self.outside.append(f"<{tag}>")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self._outside() and data.strip():
            self.outside.append(data.strip())


def _landmarks(page: str) -> _Landmarks:
    found = _Landmarks()
    found.feed(page)
    return found


def test_every_page_has_one_main_landmark_holding_all_but_the_header(app: Flask) -> None:
    for lang in ("en", "fr"):
        client = app.test_client()
        _choose(client, lang)
        _login(client, "alice")  # leaves a flashed message for the next page
        pages = {"/ (flashed)": client.get("/").get_data(as_text=True)}
        assert 'class="flash"' in pages["/ (flashed)"]  # it must be in main too
        token = _start(client).json["token"]
        for path in ("/", f"/?token={token}", "/my-jobs", "/login") + tuple(
            f"/{client}?token={token}" for client in ("htmx", "module")
        ):
            pages[path] = client.get(path).get_data(as_text=True)
        _logout(client)
        pages["/ (signed out)"] = client.get("/").get_data(as_text=True)
        for path, page in pages.items():
            found = _landmarks(page)
            assert found.mains == 1 and page.count("<main>") == 1, (lang, path)
            assert found.outside == [], (lang, path, found.outside)


def _panel_names(page: str) -> list[str]:
    """What the jobs panel calls each job (its ``.asyncstate-job-name``)."""
    return re.findall(r'<p class="asyncstate-job-name"[^>]*>([^<]*)</p>', page)


@pytest.mark.parametrize("how", ["switch", "browser"])
def test_a_french_visitor_sees_the_import_by_its_french_label_and_message(
    app: Flask, how: str
) -> None:
    """Not ``import_products`` and "20 of 20 products": the label and the message are in the
    language of whoever started the import, chosen with the switch or by the browser."""
    client = app.test_client()
    french = {"Accept-Language": "fr-FR, fr;q=0.9"} if how == "browser" else {}
    if how == "switch":
        _choose(client, "fr")
    started = client.post("/import", headers={**JSON, **french, "X-CSRFToken": _page_csrf(client)})
    token = started.json["token"]
    doc = client.get(f"/asyncstate/progress/{token}").json
    assert doc["name"] == "import_products"  # what workers look the job up by
    assert doc["label"] == "Importation de produits"
    assert doc["message"] == "20 sur 20 produits"
    page = client.get("/my-jobs", headers=french).get_data(as_text=True)
    assert '<html lang="fr">' in page
    assert _panel_names(page) == ["Importation de produits"]
    assert "import_products" not in page

    english = app.test_client()
    doc = english.get(f"/asyncstate/progress/{_start(english).json['token']}").json
    assert (doc["label"], doc["message"]) == ("Product import", "20 of 20 products")
    assert _panel_names(english.get("/my-jobs").get_data(as_text=True)) == ["Product import"]


def test_the_import_label_outside_a_request_is_english(app: Flask) -> None:
    """A start with no visitor (a CLI command, a scheduler) gets the default language."""
    with app.app_context():
        handle = example_app.import_products.start(3, 3, 0.0)
    assert handle.status()["label"] == "Product import"
