"""A stalled Redis: request-path calls wait at most ASYNCSTATE_REDIS_TIMEOUT, then the circuit
opens and they fail at once; background writes keep their patience, so the job still ends."""

from __future__ import annotations

import os
import signal
import time

import pytest
from support.apps import define_jobs
from support.redis_server import RedisServer
from support.waiting import wait_until

from flask_asyncstate import StoreUnavailable, store_circuit_changed


@pytest.fixture
def stalled_app(make_app):
    server = RedisServer().start()
    app, ext = make_app(
        server.url,
        ASYNCSTATE_REDIS_TIMEOUT=0.4,
        circuit_failures=2,
        circuit_reset=1.0,
    )
    try:
        yield app, ext, server
    finally:
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGCONT)
        ext.shutdown(timeout=2)
        server.stop()


def _timed(fn):
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


@pytest.mark.reliability  # processes, servers or a flood: the whole suite runs it
def test_stalled_redis_fails_fast_on_the_request_path_and_recovers(stalled_app) -> None:
    app, ext, server = stalled_app
    jobs = define_jobs(ext)
    changes: list[tuple[str, str]] = []

    def on_change(sender, old, new) -> None:
        changes.append((old, new))

    store_circuit_changed.connect(on_change, app)

    @app.post("/start")
    def start():
        return {"token": jobs["count"].start(40, 0.05).token}

    client = app.test_client()
    token = client.post("/start").json["token"]
    assert client.get(f"/asyncstate/progress/{token}").status_code == 200
    os.kill(server.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        answers = [_timed(lambda: client.get(f"/asyncstate/progress/{token}")) for _ in range(5)]
        for answer, _seconds in answers:
            assert answer.status_code == 503 and answer.is_json
            assert answer.headers["Retry-After"] == "1"
        waits = [seconds for _a, seconds in answers]
        assert max(waits[:2]) < 0.8  # bounded by the timeout, not redis-py's 5 s and retries
        assert max(waits[2:]) < 0.05  # the circuit is open: no wait at all
        assert ("closed", "open") in changes
        with app.test_request_context("/"):
            _nothing, seconds = _timed(
                lambda: pytest.raises(StoreUnavailable, jobs["count"].start, 1)
            )
        assert seconds < 0.05  # a click never waits for a job that cannot be recorded
        time.sleep(1.5)  # the stall outlasts ASYNCSTATE_CIRCUIT_RESET (1 s): the point here
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
    # after the reset time a probe goes through and closes it
    wait_until(
        lambda: client.get(f"/asyncstate/progress/{token}").status_code == 200,
        3,
        interval=0.1,
        message="/progress answers 200 again",
    )
    assert changes[-1][1] == "closed"
    with app.app_context():
        doc = ext.handle(token).wait(15)
    assert doc["status"] == "succeeded" and doc["current"] == 40  # the writer kept its patience
    second = client.post("/start").json["token"]
    cancel = client.post(f"/asyncstate/cancel/{second}", headers={"X-Requested-With": "t"})
    assert cancel.status_code == 202
    with app.app_context():
        assert ext.handle(second).wait(10)["status"] == "cancelled"
    print(
        f"stalled Redis: first answers in {max(waits[:2]):.2f} s, then "
        f"{max(waits[2:]) * 1000:.1f} ms with the circuit open; circuit {changes}"
    )
