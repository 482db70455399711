"""Failure injection: Redis restarts, killed and terminated instances, load, contention, fuzzing.

Marked ``reliability`` (``-m "not reliability"`` skips them); ``.ci/run`` runs
them. Each test prints what it held, so the run reads as a report.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import pytest
import requests
from support.gunicorn_server import GunicornServer
from support.procs import Counter, increment, state_api
from support.redis_server import RedisServer
from support.servers import AppProcess, csrf_token
from support.waiting import wait_until

pytestmark = pytest.mark.reliability
spawn = multiprocessing.get_context("spawn")
XHR = {"X-Requested-With": "XMLHttpRequest"}


def test_redis_restart_mid_job_loses_nothing(make_app, make_jobs) -> None:
    server = RedisServer().start()
    try:
        app, ext, jobs = make_jobs(server.url)

        @app.post("/start/<kind>")
        def start(kind: str):
            args = {"count": (60, 0.05), "until_cancelled": ()}[kind]
            handle = jobs[kind].start(*args)
            return {"token": handle.token, "id": handle.id}

        client = app.test_client()
        started = client.post("/start/count").json
        token = started["token"]
        wait_until(
            lambda: client.get(f"/asyncstate/progress/{token}").json["status"] == "running",
            5,
            message="the job runs",
        )
        job = ext.app_state(app).local_context(started["id"])
        assert job is not None

        server.stop()  # the job goes on while Redis is away
        down_at = time.monotonic()
        outage = [client.get(f"/asyncstate/progress/{token}") for _ in range(5)]
        assert {r.status_code for r in outage} == {503}
        assert all(r.mimetype == "application/json" for r in outage)
        # the job (3 s in all) ends during the outage: sealed here, its final write waits
        wait_until(lambda: job.finished, 10, interval=0.05, message="the job ends in the outage")
        assert not job.done.is_set()  # not stored yet: Redis is still down
        server.start()  # empty: no persistence
        down_for = time.monotonic() - down_at

        def final() -> dict[str, Any] | None:
            r = client.get(f"/asyncstate/progress/{token}")
            return r.json if r.status_code == 200 and r.json["status"] == "succeeded" else None

        doc = wait_until(final, 10, interval=0.1, message="'succeeded' readable after the restart")
        assert doc["result"] == {"rows": 60} and doc["current"] == 60

        # the cancel listener is back: a new job can be cancelled from another instance
        token2 = client.post("/start/until_cancelled").json["token"]
        assert ext.app_state(app).store.subscribed.wait(5), "listener did not resubscribe"
        other_app, other_ext = make_app(server.url)
        with other_app.app_context():
            assert other_ext.cancel(token2) is True
        with app.app_context():
            assert ext.handle(token2).wait(10)["status"] == "cancelled"
        print(
            f"Redis down {down_for:.1f} s mid-job, the job ending meanwhile: {len(outage)} x "
            "503 JSON during the outage, final 'succeeded' with its result present "
            "afterwards, later cancel delivered"
        )
    finally:
        server.stop()


def test_killed_instance_is_lost_within_three_heartbeats(redis_url, tmp_path) -> None:
    interval = 0.5
    env = {"REDIS_URL": redis_url, "FLASK_ASYNCSTATE_HEARTBEAT_INTERVAL": str(interval)}
    with AppProcess(tmp_path, **env) as a, AppProcess(tmp_path, **env) as b:
        browser = requests.Session()
        token = browser.post(
            f"{a.url}/import",
            timeout=5,
            headers={"Accept": "application/json", "X-CSRFToken": csrf_token(browser, a.url + "/")},
        ).json()["token"]

        def status() -> str:
            return browser.get(f"{b.url}/asyncstate/progress/{token}", timeout=5).json()["status"]

        wait_until(lambda: status() == "running", 5, message="B sees the job running")
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(
            lambda: status() == "lost",
            3 * interval + 1.0,
            interval=0.05,
            message="B reports the job lost",
        )
        took = time.monotonic() - killed
    print(
        f"SIGKILL of the instance running the job -> 'lost' on the other after {took:.2f} s "
        f"(heartbeat {interval} s)"
    )
    assert took <= 3 * interval + 0.3


def test_updates_under_contention_are_exact(redis_url) -> None:
    state = state_api(redis_url)
    state.create(Counter(), name="load")
    started = time.monotonic()
    procs = [spawn.Process(target=increment, args=(redis_url, "load", 8, 5000)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
        assert p.exitcode == 0
    took = time.monotonic() - started
    assert state.get(Counter, name="load") == Counter(80000)
    print(f"2 processes x 8 threads x 5,000 updates -> exactly 80,000 in {took:.1f} s")


def test_sigterm_of_a_gunicorn_worker_leaves_no_job_running(redis_url, tmp_path) -> None:
    env = {
        "REDIS_URL": redis_url,
        "EXAMPLE_PRODUCTS": "100000",
        "EXAMPLE_BATCH": "10",
        "EXAMPLE_PAUSE": "0.05",
        "FLASK_ASYNCSTATE_HEARTBEAT_INTERVAL": "0.5",
    }
    with GunicornServer(tmp_path, workers=1, threads=8, graceful_timeout=20, env=env) as server:
        url = server.url
        browsers = [requests.Session() for _ in range(3)]
        tokens = [
            b.post(
                f"{url}/import",
                timeout=5,
                headers={"Accept": "application/json", "X-CSRFToken": csrf_token(b, url + "/")},
            ).json()["token"]
            for b in browsers
        ]

        def statuses() -> list[str] | None:
            try:
                return [
                    b.get(f"{url}/asyncstate/progress/{t}", timeout=2).json()["status"]
                    for b, t in zip(browsers, tokens)
                ]
            except (requests.RequestException, ValueError):
                return None  # the master is starting a new worker

        wait_until(lambda: statuses() == ["running"] * 3, 5, message="all three imports run")
        worker = server.worker_pid()
        os.kill(worker, signal.SIGTERM)
        ended = wait_until(
            lambda: (
                (now := statuses()) and all(s not in ("queued", "running") for s in now) and now
            ),
            20,
            interval=0.2,
            message="jobs still running after SIGTERM",
        )
    assert set(ended) <= {"cancelled", "lost"}
    print(f"SIGTERM to gunicorn worker {worker} with 3 running imports -> {ended}")


def test_many_pollers_on_two_instances_while_jobs_run_and_are_cancelled(
    redis_url, tmp_path
) -> None:
    """200 concurrent pollers for 30 s on 2 instances; 20 jobs run, 10 of them cancelled."""
    env = {
        "REDIS_URL": redis_url,
        "EXAMPLE_PRODUCTS": "600",
        "EXAMPLE_BATCH": "20",
        "EXAMPLE_PAUSE": "0.5",
        "FLASK_ASYNCSTATE_MAX_WORKERS": "20",
    }
    duration = 30.0
    with AppProcess(tmp_path, **env) as a, AppProcess(tmp_path, **env) as b:
        instances = [a, b]
        owners = [requests.Session() for _ in range(20)]
        csrf = [csrf_token(s, instances[i % 2].url + "/") for i, s in enumerate(owners)]
        tokens = [
            s.post(
                f"{instances[i % 2].url}/import",
                timeout=10,
                headers={"Accept": "application/json", "X-CSRFToken": csrf[i]},
            ).json()["token"]
            for i, s in enumerate(owners)
        ]
        served, errors = [0], []
        lock = threading.Lock()
        stop = time.monotonic() + duration

        def poller(n: int) -> None:
            owner, token = owners[n % 20], tokens[n % 20]
            with requests.Session() as s:
                s.cookies.update(owner.cookies)
                while time.monotonic() < stop:
                    try:
                        r = s.get(f"{instances[n % 2].url}/asyncstate/progress/{token}", timeout=10)
                        ok = r.status_code == 200 and r.json()["id"]
                    except (requests.RequestException, ValueError) as exc:
                        ok, r = False, exc  # type: ignore[assignment]
                    with lock:
                        served[0] += 1
                        if not ok:
                            errors.append(str(getattr(r, "status_code", r)))
                    time.sleep(0.5)  # the load under test: each poller reads twice a second

        threads = [threading.Thread(target=poller, args=(n,)) for n in range(200)]
        for t in threads:
            t.start()
        # cancel while the load is on: once every poller has been answered a few times
        wait_until(
            lambda: served[0] >= 3 * len(threads),
            20,
            interval=0.1,
            message=lambda: f"200 pollers answered 600 times (served {served[0]})",
        )
        for i in range(10):  # cancel half, through the instance that did not start them
            r = owners[i].post(
                f"{instances[(i + 1) % 2].url}/asyncstate/cancel/{tokens[i]}",
                headers={**XHR, "X-CSRFToken": csrf[i]},
                timeout=10,
            )
            assert r.status_code == 202
        for t in threads:
            t.join()
        finals = []
        for s, tok in zip(owners, tokens):

            def final(s: requests.Session = s, tok: str = tok) -> str | None:
                status = s.get(f"{a.url}/asyncstate/progress/{tok}", timeout=10).json()["status"]
                return None if status in ("queued", "running") else status

            finals.append(wait_until(final, 30, interval=0.5, message=f"job {tok[:12]}... ends"))
    assert errors == [], errors[:10]
    assert finals == ["cancelled"] * 10 + ["succeeded"] * 10, finals
    print(
        f"200 pollers x {duration:.0f} s on 2 instances: {served[0]} requests, 0 errors; "
        f"20 jobs -> 10 cancelled, 10 succeeded"
    )
