"""The example app's hardening: CSRF, cookie, private session dir, shared secret, no-store; gevent."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from gunicorn_server import GunicornServer
from servers import csrf_token
from waiting import wait_until

import example_app
from example_app import InsecureStorage, create_app, shared_secret_key

JSON = {"Accept": "application/json"}
XHR = {"X-Requested-With": "XMLHttpRequest"}
#: A tiny import that runs inline (eager): the in-process tests need no threads.
SMALL = {
    "ASYNCSTATE_EAGER": True,
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
    assert accepted.status_code == 202  # the eager job already ended: the document says how


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
    jobs = client.get("/my-jobs")
    assert jobs.status_code == 200 and 'data-status="succeeded"' in jobs.get_data(as_text=True)
    assert jobs.headers["Cache-Control"] == "no-store"


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
