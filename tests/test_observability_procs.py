"""What operators see, across real processes (issue 27): a web instance (``flask run``) starts
jobs that an RQ (forking or simple) or Celery worker runs, every process writing its spans to
one file, its metrics in one ``PROMETHEUS_MULTIPROC_DIR``, the worker serving them; and
gunicorn with two workers in multiprocess mode, scraped after jobs of each outcome."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("prometheus_client")
pytest.importorskip("opentelemetry.sdk")

import requests
from support.gunicorn_server import GunicornServer
from support.observing import read_spans, sample, samples
from support.redis_server import RedisServer, free_port
from support.waiting import wait_until
from support.worker_procs import TESTS, Engine
from test_workers import final, start

pytestmark = [pytest.mark.reliability, pytest.mark.workers]


class ObservedEngine(Engine):
    """The worker tests' processes, each exporting spans to ``spans`` and keeping metrics in
    ``metrics_dir``; the one worker serves every process's metrics on ``metrics_port``."""

    def __init__(self, kind: str, redis_url: str, log_dir: Path) -> None:
        super().__init__(kind, redis_url, log_dir)
        self.spans = log_dir / "spans.jsonl"
        self.metrics_dir = log_dir / "metrics"
        self.metrics_dir.mkdir()
        self.metrics_port = free_port()
        self.env.update(
            WT_SPANS=str(self.spans),
            WT_METRICS_PORT=str(self.metrics_port),
            PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir),
        )

    def worker_argv(self) -> list[str]:
        argv = super().worker_argv()
        if self.kind == "celery":
            return argv  # support.worker_app serves them from Celery's worker_init
        return [*argv, "--metrics-port", str(self.metrics_port)]

    def metrics(self) -> dict[Any, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        return samples(requests.get(url, timeout=5).text)


@pytest.fixture(scope="module", params=["rq", "rq-simple", "celery"])
def engine(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path_factory: Any
) -> Iterator[ObservedEngine]:
    found = ObservedEngine(
        request.param, redis_server.url, tmp_path_factory.mktemp(f"observed-{request.param}")
    )
    try:
        found.start_web()
        found.start_workers(1)
        yield found
    finally:
        found.close()


def test_the_workers_run_span_continues_the_web_start_span(engine: ObservedEngine) -> None:
    s, web = requests.Session(), engine.webs[0][1]
    job = start(s, web, "observed")
    assert final(s, web, job["token"])["status"] == "succeeded"

    def both() -> list[dict[str, Any]]:
        found = [
            span
            for span in read_spans(engine.spans)
            if span["attributes"].get("asyncstate.job.id") == job["id"]
        ]
        return found if len(found) == 2 else []

    spans = {span["name"]: span for span in wait_until(both, 10, message="the job's two spans")}
    begun, ran = spans["asyncstate.start observed"], spans["asyncstate.run observed"]
    web_pid = engine.webs[0][0].pid
    assert begun["pid"] == web_pid and ran["pid"] != web_pid  # two processes
    assert ran["pid"] == int(engine.mark("pid", job["id"]) or 0)  # the one that ran it
    assert ran["trace_id"] == begun["trace_id"]
    assert ran["parent_id"] == begun["span_id"]
    assert ran["attributes"]["asyncstate.job.status"] == "succeeded"


def test_records_a_job_logs_on_a_worker_carry_its_id_and_name(engine: ObservedEngine) -> None:
    s, web = requests.Session(), engine.webs[0][1]
    job = start(s, web, "observed")
    final(s, web, job["token"])
    assert engine.mark("log", job["id"]) == b"observed converting"


def test_the_worker_serves_every_processs_counts(engine: ObservedEngine) -> None:
    s, web = requests.Session(), engine.webs[0][1]
    before = engine.metrics()
    ok, bad = start(s, web, "observed"), start(s, web, "fails")
    final(s, web, ok["token"])
    final(s, web, bad["token"])

    def counted() -> dict[Any, float]:
        found = engine.metrics()
        ends = sample(
            found, "asyncstate_jobs_finished_total", job="fails", status="failed", reason="error"
        ) - sample(
            before, "asyncstate_jobs_finished_total", job="fails", status="failed", reason="error"
        )
        return found if ends == 1 else {}

    found = wait_until(counted, 10, message="the failed job counted")

    def grew(name: str, **labels: str) -> float:
        return sample(found, name, **labels) - sample(before, name, **labels)

    # started in the web process, ended in the worker (a work horse, a pool process)
    assert grew("asyncstate_jobs_started_total", job="observed") == 1
    assert grew("asyncstate_jobs_started_total", job="fails") == 1
    assert (
        grew("asyncstate_jobs_finished_total", job="observed", status="succeeded", reason="") == 1
    )
    assert grew("asyncstate_job_duration_seconds_count", job="observed", status="succeeded") == 1
    assert grew("asyncstate_job_wait_seconds_count", job="fails") == 1
    assert sample(found, "asyncstate_jobs_running", job="observed") == 0
    assert sample(found, "asyncstate_jobs_waiting", waiting_for="worker") == 0


# -- gunicorn, two workers, multiprocess mode -------------------------------------------


def test_gunicorn_two_workers_counts_exact_in_every_scrape(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "MA_REDIS_URL": redis_server.url,
        "MA_PREFIX": f"ma{os.getpid()}:",
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
    }
    server = GunicornServer(
        tmp_path,
        workers=2,
        threads=4,
        env=env,
        app="support.metrics_app:create_app()",
        extra_args=("-c", "python:support.metrics_app"),
    )
    per_kind = 10
    started: Counter[str] = Counter()
    pids: set[int] = set()
    with server:
        for _ in range(200):  # new connections until both workers served, and enough jobs
            if len(pids) == 2 and min(started[k] for k in ("ok", "boom", "quit")) >= per_kind:
                break
            kind = min(("ok", "boom", "quit"), key=lambda k: started[k])
            answer = requests.post(f"{server.url}/start/{kind}", timeout=5)
            assert answer.status_code == 202, answer.text
            started[kind] += 1
            pids.add(answer.json()["pid"])
        assert len(pids) == 2, f"one worker served every request: {pids}"
        outcomes = {
            "ok": ("succeeded", ""),
            "boom": ("failed", "error"),
            "quit": ("cancelled", "user"),
        }

        def scrape() -> dict[Any, float]:
            return samples(requests.get(f"{server.url}/metrics", timeout=5).text)

        def exact() -> dict[Any, float]:
            found = scrape()
            ended = all(
                sample(found, "asyncstate_jobs_finished_total", job=k, status=s, reason=r)
                == started[k]
                for k, (s, r) in outcomes.items()
            )
            return found if ended else {}

        wait_until(exact, 15, message=lambda: f"every end counted: {scrape()}")
        for _ in range(6):  # whichever worker answers the scrape, the figures are the same
            found = scrape()
            for kind, (status, reason) in outcomes.items():
                n = started[kind]
                assert sample(found, "asyncstate_jobs_started_total", job=kind) == n
                assert (
                    sample(
                        found,
                        "asyncstate_jobs_finished_total",
                        job=kind,
                        status=status,
                        reason=reason,
                    )
                    == n
                )
                assert (
                    sample(found, "asyncstate_job_duration_seconds_count", job=kind, status=status)
                    == n
                )
                assert sample(found, "asyncstate_job_wait_seconds_count", job=kind) == n
                assert sample(found, "asyncstate_jobs_running", job=kind) == 0
            assert sample(found, "asyncstate_store_circuit_open") == 0
    print(f"gunicorn 2 workers {sorted(pids)}: {dict(started)} jobs, every scrape exact")
