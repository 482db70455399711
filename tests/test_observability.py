"""What operators see (issue 27): Prometheus metrics, OpenTelemetry spans and the job fields
on log records, in-process with the thread pool and the inline executor on the memory store.
Real processes (RQ and Celery workers, gunicorn in multiprocess mode):
tests/test_observability_procs.py."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The extras' packages are in requirements/tests.txt; an environment without them skips here.
pytest.importorskip("prometheus_client")
pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY
from support.apps import Gate
from support.waiting import wait_until

from flask_asyncstate import JobCancelled, logs, metrics, store_circuit_changed, testing, tracing

ROOT = Path(__file__).resolve().parents[1]


def value(name: str, **labels: str) -> float:
    """A sample of the default registry (0 when the series does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _define(ext: Any, tag: str) -> dict[str, Any]:
    """Jobs of each outcome, named with ``tag``: the registry is the process's, shared by tests."""

    @ext.job(name=f"ok_{tag}")
    def ok(job: Any) -> int:
        logging.getLogger("tests.observability").info("working")
        return 1

    @ext.job(name=f"boom_{tag}")
    def boom(job: Any) -> None:
        raise ValueError("bad row 7")

    @ext.job(name=f"quit_{tag}")
    def quit_(job: Any) -> None:
        raise JobCancelled("stopped itself")

    @ext.job(name=f"late_{tag}", timeout=0.2)
    def late(job: Any) -> str:
        job.cancelled.wait(5)
        return "stopped at the deadline"

    @ext.job(name=f"flaky_{tag}", retries=1, backoff=0.05)
    def flaky(job: Any) -> int:
        if job.attempt == 1:
            raise ConnectionError("down")
        return job.attempt

    @ext.job(name=f"wait_{tag}")
    def wait(job: Any, gate: str) -> None:
        from support.apps import GATES

        GATES[gate].wait(10)

    @ext.job(name=f"parent_{tag}")
    def parent(job: Any) -> dict[str, int]:
        job.spawn(ok)
        return job.wait_children(10)

    return {
        "ok": ok,
        "boom": boom,
        "quit": quit_,
        "late": late,
        "flaky": flaky,
        "wait": wait,
        "parent": parent,
    }


@pytest.fixture
def tag() -> str:
    return secrets.token_hex(4)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The SDK's in-memory exporter behind the spans of flask_asyncstate.tracing (a provider of
    this test's own: the process's global provider stays as it was)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("tests"))
    monkeypatch.setattr(tracing, "_live", True)  # as once an app has set a provider
    yield exporter
    provider.shutdown()


def finished(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    return wait_until(
        lambda: (found := list(exporter.get_finished_spans())) and len(found) >= count and found,
        10,
        message=lambda: f"{count} spans, got {[s.name for s in exporter.get_finished_spans()]}",
    )


def named(found: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in found if s.name == name]


# -- metrics ---------------------------------------------------------------------------


def test_counts_are_exact_after_jobs_of_each_outcome(make_app: Any, tag: str) -> None:
    app, ext = make_app(ASYNCSTATE_MAX_WORKERS=4)
    jobs = _define(ext, tag)
    outcomes = {  # job -> (final status, reason) of every run of it
        "ok": ("succeeded", ""),
        "boom": ("failed", "error"),
        "quit": ("cancelled", "user"),
        "late": ("failed", "timeout"),
        "flaky": ("succeeded", ""),
    }
    runs = 3
    with app.app_context():
        handles = [jobs[kind].start() for kind in outcomes for _ in range(runs)]
        for handle in handles:
            testing.wait_for(handle, timeout=10)

    def all_counted() -> bool:
        return all(
            value(
                "asyncstate_jobs_finished_total",
                job=f"{kind}_{tag}",
                status=status,
                reason=reason,
            )
            == runs
            for kind, (status, reason) in outcomes.items()
        )

    wait_until(all_counted, 10, message="every end counted")
    wait_until(
        lambda: all(
            value("asyncstate_jobs_running", job=f"{kind}_{tag}") == 0 for kind in outcomes
        ),
        10,
    )
    for kind, (status, _reason) in outcomes.items():
        job = f"{kind}_{tag}"
        assert value("asyncstate_jobs_started_total", job=job) == runs
        # every outcome counted once, under its own status only
        assert (
            sum(
                value("asyncstate_jobs_finished_total", job=job, status=s, reason=r)
                for s, r in {*outcomes.values()}
            )
            == runs
        )
        assert value("asyncstate_job_duration_seconds_count", job=job, status=status) == runs
        assert value("asyncstate_job_wait_seconds_count", job=job) == runs  # first runs only
    # a timeout ran its 0.2 s: the duration says so
    late = value("asyncstate_job_duration_seconds_sum", job=f"late_{tag}", status="failed")
    assert late >= 0.2 * runs


def test_a_job_cancelled_while_queued_counts_as_cancelled_and_never_ran(
    make_app: Any, tag: str
) -> None:
    app, ext = make_app(ASYNCSTATE_MAX_WORKERS=1)
    jobs = _define(ext, tag)
    gate = Gate()
    cancels = value("asyncstate_cancel_requests_total")
    with app.app_context():
        blocker = jobs["wait"].start(gate.name)
        testing.wait_for(blocker, "running")
        waiting = jobs["ok"].start()
        assert waiting.cancel()
        testing.wait_for(waiting, "cancelled")
        gate.set()
        testing.wait_for(blocker, "succeeded")
    job = f"ok_{tag}"
    wait_until(
        lambda: (
            value("asyncstate_jobs_finished_total", job=job, status="cancelled", reason="user") == 1
        ),
        10,
    )
    assert value("asyncstate_cancel_requests_total") == cancels + 1
    assert value("asyncstate_jobs_started_total", job=job) == 1
    # it never ran: no duration, no wait
    assert value("asyncstate_job_duration_seconds_count", job=job, status="cancelled") == 0
    assert value("asyncstate_job_wait_seconds_count", job=job) == 0


def test_a_unique_start_that_finds_its_job_counts_no_new_job(make_app: Any, tag: str) -> None:
    app, ext = make_app()
    gate = Gate()

    @ext.job(name=f"single_{tag}", unique="app")
    def single(job: Any, gate_name: str) -> None:
        from support.apps import GATES

        GATES[gate_name].wait(10)

    with app.app_context():
        first = single.start(gate.name)
        again = single.start(gate.name)
        assert not again.is_new and again.id == first.id
        gate.set()
        testing.wait_for(first)
    assert value("asyncstate_jobs_started_total", job=f"single_{tag}") == 1


def test_the_circuit_gauge_follows_the_breaker(make_app: Any) -> None:
    app, _ext = make_app()
    store_circuit_changed.send(app, old="closed", new="open")
    assert value("asyncstate_store_circuit_open") == 1
    store_circuit_changed.send(app, old="open", new="half-open")
    assert value("asyncstate_store_circuit_open") == 1
    store_circuit_changed.send(app, old="half-open", new="closed")
    assert value("asyncstate_store_circuit_open") == 0


def test_metrics_are_registered_once_per_process(make_app: Any) -> None:
    make_app()
    make_app()  # a second app (and a third, the fixture's others) registers nothing again
    names = [name for name in REGISTRY._names_to_collectors if name.startswith("asyncstate_")]
    assert len(names) == len(set(names))
    assert "asyncstate_jobs_finished_total" in names
    assert metrics.installed()


def test_jobs_waiting_to_run_again_are_counted_from_the_store_with_a_cache(
    make_app: Any, tag: str
) -> None:
    app, ext = make_app()

    @ext.job(name=f"later_{tag}", retries=1, backoff=60)
    def later(job: Any) -> None:
        raise ConnectionError("down")

    collector = metrics.StoreCollector(ttl=60)
    before = _waiting(collector)["rerun"]
    with app.app_context():
        handle = later.start()
        wait_until(lambda: (handle.status() or {}).get("retry_at"), 10)
    assert _waiting(collector)["rerun"] == before  # the cached figure: no read this time
    fresh = metrics.StoreCollector(ttl=60)
    assert _waiting(fresh)["rerun"] == before + 1
    with app.app_context():
        handle.cancel()
        testing.wait_for(handle, "cancelled")
    assert _waiting(metrics.StoreCollector())["rerun"] == before


def test_jobs_waiting_for_a_worker_are_counted_from_the_engines_queue_index(
    make_app: Any, redis_url: str, tag: str
) -> None:
    app, ext = make_app(redis_url, ASYNCSTATE_EXECUTOR="rq", ASYNCSTATE_RQ_QUEUE=f"q-{tag}")

    @ext.job(name=f"queued_{tag}")
    def queued(job: Any) -> None:
        return None

    with app.app_context():
        handles = [queued.start() for _ in range(3)]  # no worker takes them
    assert _waiting(metrics.StoreCollector())["worker"] == 3
    with app.app_context():
        handles[0].cancel()
    assert _waiting(metrics.StoreCollector())["worker"] == 2


def _waiting(collector: metrics.StoreCollector) -> dict[str, float]:
    (family,) = list(collector.collect())
    return {s.labels["waiting_for"]: s.value for s in family.samples}


# -- traces ----------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["threads", "inline"])
def test_the_run_span_is_a_child_of_the_start_span_in_the_requests_trace(
    make_app: Any, spans: InMemorySpanExporter, tag: str, executor: str
) -> None:
    app, ext = make_app(ASYNCSTATE_EXECUTOR=executor)
    jobs = _define(ext, tag)
    tracer = tracing._tracer
    with app.test_request_context("/import"), tracer.start_as_current_span("POST /import"):
        handle = jobs["ok"].start()
    testing.wait_for(handle)
    found = finished(spans, 3)
    (request,) = named(found, "POST /import")
    (start,) = named(found, f"asyncstate.start ok_{tag}")
    (run,) = named(found, f"asyncstate.run ok_{tag}")
    assert start.parent is not None and start.parent.span_id == request.context.span_id
    assert run.parent is not None and run.parent.span_id == start.context.span_id
    assert run.context.trace_id == start.context.trace_id == request.context.trace_id
    assert start.attributes == {
        "asyncstate.job.name": f"ok_{tag}",
        "asyncstate.job.id": handle.id,
        "asyncstate.job.new": True,
    }
    assert run.attributes is not None
    assert run.attributes["asyncstate.job.id"] == handle.id
    assert run.attributes["asyncstate.job.status"] == "succeeded"
    assert run.attributes["asyncstate.job.attempt"] == 1
    assert run.status.status_code == StatusCode.UNSET


def test_a_failed_run_is_an_error_span_and_a_retry_an_event_in_the_same_trace(
    make_app: Any, spans: InMemorySpanExporter, tag: str
) -> None:
    app, ext = make_app()
    jobs = _define(ext, tag)
    with app.app_context():
        failed = jobs["boom"].start()
        flaky = jobs["flaky"].start()
        testing.wait_for(failed)
        testing.wait_for(flaky, "succeeded")
    found = finished(spans, 5)
    (boom,) = named(found, f"asyncstate.run boom_{tag}")
    assert boom.status.status_code == StatusCode.ERROR
    assert boom.status.description == "ValueError: bad row 7"
    assert boom.attributes is not None and boom.attributes["asyncstate.job.reason"] == "error"
    (start,) = named(found, f"asyncstate.start flaky_{tag}")
    first, second = sorted(
        named(found, f"asyncstate.run flaky_{tag}"), key=lambda s: s.start_time or 0
    )
    assert first.parent is not None and second.parent is not None
    assert first.parent.span_id == second.parent.span_id == start.context.span_id
    assert first.attributes is not None and first.attributes["asyncstate.job.status"] == "queued"
    assert [e.name for e in first.events] == ["asyncstate.retry"]
    assert first.events[0].attributes == {"asyncstate.job.attempt": 2}
    assert first.status.status_code == StatusCode.ERROR
    assert second.attributes is not None
    assert second.attributes["asyncstate.job.attempt"] == 2
    assert second.attributes["asyncstate.job.status"] == "succeeded"


def test_a_cancel_is_an_event_of_the_span_that_asks_and_a_child_job_nests(
    make_app: Any, spans: InMemorySpanExporter, tag: str
) -> None:
    app, ext = make_app()
    jobs = _define(ext, tag)
    gate = Gate()
    tracer = tracing._tracer
    with app.app_context():
        blocked = jobs["wait"].start(gate.name)
        with tracer.start_as_current_span("POST /cancel"):
            blocked.cancel()
        gate.set()
        testing.wait_for(blocked)
        parent = jobs["parent"].start()
        testing.wait_for(parent, "succeeded")
    found = finished(spans, 6)
    (cancel,) = named(found, "POST /cancel")
    assert [(e.name, dict(e.attributes or {})) for e in cancel.events] == [
        ("asyncstate.cancel", {"asyncstate.job.id": blocked.id})
    ]
    (parent_run,) = named(found, f"asyncstate.run parent_{tag}")
    (child_start,) = named(found, f"asyncstate.start ok_{tag}")
    (child_run,) = named(found, f"asyncstate.run ok_{tag}")
    assert child_start.parent is not None and child_run.parent is not None
    assert child_start.parent.span_id == parent_run.context.span_id
    assert child_run.parent.span_id == child_start.context.span_id


def test_an_untraced_start_stores_no_trace_context(make_app: Any, tag: str) -> None:
    app, ext = make_app()
    jobs = _define(ext, tag)
    with app.app_context():
        handle = jobs["ok"].start()
        testing.wait_for(handle)
        stored = ext.app_state().records.documents([handle.id])[0]
    assert stored is not None and "trace" not in stored


def test_a_traced_start_keeps_only_the_w3c_context_internal(
    make_app: Any, spans: InMemorySpanExporter, tag: str
) -> None:
    app, ext = make_app()
    jobs = _define(ext, tag)
    with app.app_context(), tracing._tracer.start_as_current_span("outer"):
        handle = jobs["ok"].start()
        testing.wait_for(handle)
        stored = ext.app_state().records.documents([handle.id])[0]
        public = handle.status()
    assert stored is not None and set(stored["trace"]) == {"traceparent"}
    assert public is not None and "trace" not in public


def test_until_the_app_sets_a_tracer_provider_no_span_is_made(
    make_app: Any, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, tag: str
) -> None:
    """With the API alone (no provider set: this process never sets one), hooks do nothing."""
    monkeypatch.setattr(tracing, "_live", False)
    app, ext = make_app()
    jobs = _define(ext, tag)
    with app.app_context(), tracing._tracer.start_as_current_span("outer"):
        handle = jobs["ok"].start()
        testing.wait_for(handle)
        stored = ext.app_state().records.documents([handle.id])[0]
    assert [span.name for span in finished(spans, 1)] == ["outer"]
    assert stored is not None and "trace" not in stored
    assert not tracing.tracing()


# -- log records -----------------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    handler.setFormatter(
        logging.Formatter("[%(asyncstate_job_name)s %(asyncstate_job_id)s] %(message)s")
    )
    loggers = [logging.getLogger("tests.observability"), logging.getLogger("flask_asyncstate")]
    levels = [one.level for one in loggers]
    for one in loggers:
        one.addHandler(handler)
        one.setLevel(logging.DEBUG)
    yield handler
    for one, level in zip(loggers, levels):
        one.removeHandler(handler)
        one.setLevel(level)


@pytest.mark.parametrize("executor", ["threads", "inline"])
def test_records_emitted_in_a_job_carry_its_id_and_name(
    make_app: Any, records: Records, tag: str, executor: str
) -> None:
    app, ext = make_app(ASYNCSTATE_EXECUTOR=executor)
    jobs = _define(ext, tag)
    with app.app_context():
        ok = jobs["ok"].start()
        failed = jobs["boom"].start()
        testing.wait_for(ok)
        testing.wait_for(failed)
    logging.getLogger("tests.observability").info("outside")
    lines = [records.format(r) for r in records.seen]
    assert f"[ok_{tag} {ok.id}] working" in lines  # the job's own logger
    # ours: the failure is logged by the lifecycle, inside the job's fields
    assert any(line.startswith(f"[boom_{tag} {failed.id}] job {failed.id}") for line in lines)
    assert "[- -] outside" in lines


def test_records_of_other_threads_and_made_by_hand_have_the_fields(records: Records) -> None:
    with logs.JobFields("abc", "export"):
        inside = logging.getLogger("tests.observability").makeRecord(
            "x", logging.INFO, __file__, 1, "made", (), None
        )
        elsewhere: list[logging.LogRecord] = []
        thread = threading.Thread(
            target=lambda: elsewhere.append(logging.makeLogRecord({"msg": "other thread"}))
        )
        thread.start()
        thread.join()
    assert (inside.asyncstate_job_id, inside.asyncstate_job_name) == (
        "abc",
        "export",
    )
    assert elsewhere[0].asyncstate_job_id == logs.OUTSIDE
    assert logs.current() == (logs.OUTSIDE, logs.OUTSIDE)


def test_the_record_factory_is_installed_once_and_wraps_the_one_before(make_app: Any) -> None:
    make_app()
    ours = logging.getLogRecordFactory()
    make_app()
    assert logging.getLogRecordFactory() is ours


# -- without the optional packages -------------------------------------------------------


def test_without_prometheus_client_and_opentelemetry_nothing_is_imported_and_jobs_run() -> None:
    """In a fresh interpreter where neither package can be imported: jobs run as before, no
    metric or span hook does anything, and the job fields are on log records all the same."""
    code = textwrap.dedent(
        """
        import logging, sys
        for name in ("prometheus_client", "opentelemetry"):
            sys.modules[name] = None  # importing it raises ImportError
        from support.apps import make_app
        from flask_asyncstate import metrics, testing, tracing

        seen = []
        logging.basicConfig(level=logging.INFO, format="%(asyncstate_job_id)s %(message)s")
        app, ext = make_app()

        @ext.job
        def work(job):
            seen.append(logging.getLogger("w").makeRecord("w", 20, "f", 1, "m", (), None))
            return 1

        with app.app_context():
            handle = work.start()
            doc = testing.wait_for(handle)
            handle.cancel()
        assert doc["status"] == "succeeded", doc
        assert not metrics.installed() and not tracing.ENABLED
        assert seen[0].asyncstate_job_id == handle.id
        assert not any(m.startswith(("prometheus_client.", "opentelemetry.")) for m in sys.modules)
        ext.shutdown(2)
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
