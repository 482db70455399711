"""Failure injection: Redis restarts, killed and terminated instances, load, contention, fuzzing.

Marked ``reliability`` (``-m "not reliability"`` skips them); ``.ci/run`` runs
them. Each test prints what it held, so the run reads as a report.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import requests
from apps import define_jobs
from procs import Counter, increment, state_api
from redis_server import RedisServer, free_port
from servers import ROOT, AppProcess, csrf_token

pytestmark = pytest.mark.reliability
spawn = multiprocessing.get_context("spawn")
XHR = {"X-Requested-With": "XMLHttpRequest"}


def test_redis_restart_mid_job_loses_nothing(make_app) -> None:
    server = RedisServer().start()
    try:
        app, ext = make_app(server.url)
        jobs = define_jobs(ext)

        @app.post("/start/<kind>")
        def start(kind: str):  # type: ignore[no-untyped-def]
            args = {"count": (60, 0.05), "until_cancelled": ()}[kind]
            return {"token": jobs[kind].start(*args).token}

        client = app.test_client()
        token = client.post("/start/count").json["token"]
        time.sleep(0.5)
        assert client.get(f"/asyncstate/progress/{token}").json["status"] == "running"

        server.stop()  # the job goes on while Redis is away
        outage = [client.get(f"/asyncstate/progress/{token}") for _ in range(5)]
        assert {r.status_code for r in outage} == {503}
        assert all(r.mimetype == "application/json" for r in outage)
        time.sleep(2.0)  # the job (3 s in all) ends during the outage: its final write waits
        server.start()  # empty: no persistence

        deadline = time.monotonic() + 10
        while (r := client.get(f"/asyncstate/progress/{token}")).status_code != 200 or \
                r.json["status"] != "succeeded":
            assert time.monotonic() < deadline, (r.status_code, r.data)
            time.sleep(0.1)
        doc = r.json
        assert doc["result"] == {"rows": 60} and doc["current"] == 60

        # the cancel listener is back: a new job can be cancelled from another instance
        token2 = client.post("/start/until_cancelled").json["token"]
        assert ext.app_state(app).store.subscribed.wait(5), "listener did not resubscribe"
        other_app, other_ext = make_app(server.url)
        with other_app.app_context():
            assert other_ext.cancel(token2) is True
        with app.app_context():
            assert ext.handle(token2).wait(10)["status"] == "cancelled"
        print(f"Redis down ~2 s mid-job: {len(outage)} x 503 JSON during the outage, final "
              "'succeeded' with its result present afterwards, later cancel delivered")
    finally:
        server.stop()


def test_killed_instance_is_lost_within_three_heartbeats(redis_url, tmp_path) -> None:
    interval = 0.5
    env = {"REDIS_URL": redis_url, "FLASK_ASYNCSTATE_HEARTBEAT_INTERVAL": str(interval)}
    with AppProcess(tmp_path, **env) as a, AppProcess(tmp_path, **env) as b:
        browser = requests.Session()
        token = browser.post(f"{a.url}/import", timeout=5, headers={
            "Accept": "application/json", "X-CSRFToken": csrf_token(browser, a.url + "/")
        }).json()["token"]
        time.sleep(0.3)
        assert browser.get(f"{b.url}/asyncstate/progress/{token}").json()["status"] == "running"
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        while browser.get(f"{b.url}/asyncstate/progress/{token}").json()["status"] != "lost":
            assert time.monotonic() - killed < 3 * interval + 1.0
            time.sleep(0.05)
        took = time.monotonic() - killed
    print(f"SIGKILL of the instance running the job -> 'lost' on the other after {took:.2f} s "
          f"(heartbeat {interval} s)")
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


def _gunicorn(port: int, redis_url: str, log: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "SECRET_KEY": "shared-test-secret",
           "EXAMPLE_PRODUCTS": "100000", "EXAMPLE_BATCH": "10", "EXAMPLE_PAUSE": "0.05",
           "FLASK_ASYNCSTATE_HEARTBEAT_INTERVAL": "0.5"}
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "8",
         "-b", f"127.0.0.1:{port}", "--graceful-timeout", "20", "example_app:create_app()"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/asyncstate/jobs", timeout=1)
            return
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)


def test_sigterm_of_a_gunicorn_worker_leaves_no_job_running(redis_url, tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    master = _gunicorn(port, redis_url, log)
    try:
        _wait_up(url, master)
        browsers = [requests.Session() for _ in range(3)]
        tokens = [b.post(f"{url}/import", timeout=5, headers={
            "Accept": "application/json", "X-CSRFToken": csrf_token(b, url + "/")
        }).json()["token"] for b in browsers]
        time.sleep(0.5)
        for b, t in zip(browsers, tokens):
            assert b.get(f"{url}/asyncstate/progress/{t}").json()["status"] == "running"
        worker = int(subprocess.check_output(["pgrep", "-P", str(master.pid)]).split()[0])
        os.kill(worker, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while True:
            try:
                statuses = [b.get(f"{url}/asyncstate/progress/{t}", timeout=2).json()["status"]
                            for b, t in zip(browsers, tokens)]
                if all(s not in ("queued", "running") for s in statuses):
                    break
            except (requests.RequestException, ValueError):
                pass  # the master is starting a new worker
            assert time.monotonic() < deadline, "jobs still running after SIGTERM"
            time.sleep(0.2)
    finally:
        master.terminate()
        master.wait(30)
        log.close()
    assert set(statuses) <= {"cancelled", "lost"}
    print(f"SIGTERM to gunicorn worker {worker} with 3 running imports -> {statuses}")


def test_many_pollers_on_two_instances_while_jobs_run_and_are_cancelled(redis_url, tmp_path) -> None:
    """200 concurrent pollers for 30 s on 2 instances; 20 jobs run, 10 of them cancelled."""
    env = {"REDIS_URL": redis_url, "EXAMPLE_PRODUCTS": "600", "EXAMPLE_BATCH": "20",
           "EXAMPLE_PAUSE": "0.5", "FLASK_ASYNCSTATE_MAX_WORKERS": "20"}
    duration = 30.0
    with AppProcess(tmp_path, **env) as a, AppProcess(tmp_path, **env) as b:
        instances = [a, b]
        owners = [requests.Session() for _ in range(20)]
        csrf = [csrf_token(s, instances[i % 2].url + "/") for i, s in enumerate(owners)]
        tokens = [s.post(f"{instances[i % 2].url}/import", timeout=10, headers={
            "Accept": "application/json", "X-CSRFToken": csrf[i]
        }).json()["token"] for i, s in enumerate(owners)]
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
                    time.sleep(0.5)

        threads = [threading.Thread(target=poller, args=(n,)) for n in range(200)]
        for t in threads:
            t.start()
        time.sleep(3)
        for i in range(10):  # cancel half, through the instance that did not start them
            r = owners[i].post(f"{instances[(i + 1) % 2].url}/asyncstate/cancel/{tokens[i]}",
                               headers={**XHR, "X-CSRFToken": csrf[i]}, timeout=10)
            assert r.status_code == 202
        for t in threads:
            t.join()
        finals = []
        for i, (s, tok) in enumerate(zip(owners, tokens)):
            doc = s.get(f"{a.url}/asyncstate/progress/{tok}", timeout=10).json()
            deadline = time.monotonic() + 30
            while doc["status"] in ("queued", "running"):
                assert time.monotonic() < deadline
                time.sleep(0.5)
                doc = s.get(f"{a.url}/asyncstate/progress/{tok}", timeout=10).json()
            finals.append(doc["status"])
    assert errors == [], errors[:10]
    assert finals == ["cancelled"] * 10 + ["succeeded"] * 10, finals
    print(f"200 pollers x {duration:.0f} s on 2 instances: {served[0]} requests, 0 errors; "
          f"20 jobs -> 10 cancelled, 10 succeeded")
