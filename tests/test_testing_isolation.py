"""``flask_asyncstate.testing.isolated_config``: apps of tests that share one Redis stay apart.

Two apps with one ``SECRET_KEY`` on one real redis-server (what the tests of a project
look like on a CI Redis): configured alike, each sees the other's jobs through a token, a
``unique="app"`` job and a session cookie; with ``isolated_config()`` each, none of that.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask, session
from flask_session import Session

from flask_asyncstate import AsyncState, JobContext
from flask_asyncstate.testing import isolated_config, job_gate, wait_for

SECRET = "one-secret-for-every-test-app"


def build(redis_url: str, config: dict[str, Any]) -> tuple[Flask, AsyncState, Any]:
    """An app with Redis sessions (Flask-Session), its jobs in ``redis_url``, ``config`` on top."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=SECRET,
        TESTING=True,
        ASYNCSTATE_REDIS_URL=redis_url,
        ASYNCSTATE_FLUSH_INTERVAL=0.05,
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(redis_url),
    )
    app.config.update(config)
    Session(app)
    ext = AsyncState(app)

    @ext.job(unique="app")
    def rebuild(job: JobContext) -> str:
        job.checkpoint("started")
        return "done"

    @app.post("/start")
    def start() -> dict[str, Any]:
        handle = rebuild.start()
        return {"token": handle.token, "new": handle.is_new}

    @app.get("/mine")
    def mine() -> dict[str, Any]:
        session["seen"] = True  # a session worth storing
        return {"jobs": [job["id"] for job in ext.jobs()]}

    return app, ext, rebuild


@pytest.fixture
def apps(redis_url: str) -> Iterator[Any]:
    made: list[AsyncState] = []

    def make(config: dict[str, Any]) -> tuple[Flask, AsyncState, Any]:
        found = build(redis_url, config)
        made.append(found[1])
        return found

    yield make
    for ext in made:
        ext.shutdown(timeout=2)


def _leaks(first: tuple[Flask, AsyncState, Any], second: tuple[Flask, AsyncState, Any]) -> dict:
    """What the second app sees of a job the first app's client started (held running)."""
    (app_a, ext_a, _), (app_b, ext_b, _) = first, second
    browser = app_a.test_client()
    seen: dict[str, Any] = {}
    with job_gate("started", app_a) as gate:
        token = browser.post("/start").json["token"]
        gate.wait()
        [job_id] = browser.get("/mine").json["jobs"]
        with app_b.app_context():
            seen["status"] = ext_b.handle(token).status()  # a token from the other app
        with app_b.test_request_context():
            seen["unique_new"] = second[2].start().is_new  # finds the other app's job?
            other_token = second[2].start().token
        cookie = browser.get_cookie("session")
        assert cookie is not None
        thief = app_b.test_client()
        thief.set_cookie("session", cookie.value)  # the first app's session id, sent to the second
        seen["jobs_by_cookie"] = thief.get("/mine").json["jobs"]
        seen["job_id"] = job_id
    with app_a.app_context():
        wait_for(ext_a.handle(token), "succeeded")
    with app_b.app_context():
        wait_for(ext_b.handle(other_token), {"succeeded", "cancelled"})
    return seen


def test_apps_configured_alike_on_one_redis_see_each_others_jobs(apps: Any) -> None:
    """The leak the helper is for: same (default) prefixes, one Redis."""
    seen = _leaks(apps({}), apps({}))
    assert seen["status"] is not None and seen["status"]["id"] == seen["job_id"]
    assert seen["unique_new"] is False  # the second app's start found the first app's job
    assert seen["jobs_by_cookie"] == [seen["job_id"]]  # and its session


def test_apps_with_isolated_config_on_one_redis_see_nothing_of_each_other(
    apps: Any, redis_url: str
) -> None:
    first_config, second_config = isolated_config(), isolated_config()
    seen = _leaks(apps(first_config), apps(second_config))
    assert seen["status"] is None  # the token's job does not exist for the second app
    assert seen["unique_new"] is True  # a unique="app" job of its own
    assert seen["jobs_by_cookie"] == []  # the first app's session id names no session here

    client = redis.Redis.from_url(redis_url)
    keys = [key.decode() for key in client.keys("*")]
    client.close()
    for config in (first_config, second_config):  # each app wrote under its own prefixes
        assert any(key.startswith(config["ASYNCSTATE_KEY_PREFIX"]) for key in keys)
        assert any(key.startswith(config["SESSION_KEY_PREFIX"]) for key in keys)
    assert not any(key.startswith(("asyncstate:", "session:")) for key in keys)


def test_isolated_config_keys() -> None:
    one, two = isolated_config(), isolated_config("redis://127.0.0.1:1/0", name="shop")
    assert set(one) == {"ASYNCSTATE_KEY_PREFIX", "SESSION_KEY_PREFIX", "ASYNCSTATE_RQ_QUEUE"}
    assert two["ASYNCSTATE_REDIS_URL"] == "redis://127.0.0.1:1/0"
    assert two["ASYNCSTATE_KEY_PREFIX"].startswith("shop-")
    for key in ("ASYNCSTATE_KEY_PREFIX", "SESSION_KEY_PREFIX", "ASYNCSTATE_RQ_QUEUE"):
        assert one[key] != isolated_config()[key]  # a new prefix every call
    assert one["ASYNCSTATE_KEY_PREFIX"] != one["SESSION_KEY_PREFIX"]
