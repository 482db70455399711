"""Prometheus metrics of jobs (extra ``metrics``: ``prometheus_client``).

With ``prometheus_client`` installed, the first ``init_app`` of a process registers,
once per process (every app of the process shares them, as Prometheus metrics are
per process), in ``prometheus_client``'s default registry, so that whatever serves
the app's ``/metrics`` (``make_wsgi_app()``, prometheus-flask-exporter) shows them:

=====================================================  ==========================================
``asyncstate_jobs_started_total{job}``                 jobs made by ``start()`` (a ``unique=``
                                                       start that finds its job unfinished makes
                                                       none) and by "Try again"
``asyncstate_jobs_finished_total{job,status,reason}``  jobs ended, by final status and ``reason``
``asyncstate_job_duration_seconds{job,status}``        how long the last run of an ended job
                                                       took (``started_at`` to its end); jobs
                                                       that never ran are not in it
``asyncstate_job_wait_seconds{job}``                   queued to running, ``created_at`` to
                                                       ``started_at`` of a job's first run
``asyncstate_jobs_running{job}``                       runs in progress in this process
``asyncstate_store_circuit_open``                      1 while this process's Redis circuit
                                                       breaker is not closed
``asyncstate_cancel_requests_total``                   cancel requests stored (children's too)
``asyncstate_jobs_waiting{waiting_for}``               the whole cluster's waiting jobs, read
                                                       from the store (:class:`StoreCollector`)
=====================================================  ==========================================

Labels are bounded: job names (the registered ones), statuses and reasons, never
ids or owners. Where each figure is taken: ``started`` in
:meth:`~flask_asyncstate.lifecycle.Lifecycle.start` (and ``rerun``); ``finished``
and the duration on :data:`~flask_asyncstate.signals.job_finished`, which the one
end path of every job sends once, in whichever process stores the end; the wait on
:data:`~flask_asyncstate.signals.job_started`; the running gauge around each run,
in the process running it; the circuit on
:data:`~flask_asyncstate.signals.store_circuit_changed`. A process that dies
(``SIGKILL``, out of memory) records nothing more: its jobs are ``lost`` to readers
without passing the end path, so ``finished`` does not count them.

Under gunicorn with several workers, or on RQ's forking worker and Celery's prefork
pool, set ``PROMETHEUS_MULTIPROC_DIR`` as ``prometheus_client`` documents: counters
and histograms add up over every process that ever wrote them, the running gauge
sums the live processes (``livesum``), the circuit gauge takes their maximum
(``livemax``). ``asyncstate_jobs_waiting`` is one cluster-wide figure that any
process can answer, read at scrape time: register :class:`StoreCollector` on the
registry your multiprocess ``/metrics`` serves. :func:`serve` serves a worker's.

Without ``prometheus_client`` nothing is registered, nothing imported, and every
hook here returns at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import signals
from .errors import StoreError

if TYPE_CHECKING:
    from .appstate import AppState

log = logging.getLogger("flask_asyncstate")

#: Upper bounds, in seconds, of the run duration histogram: a second to eight hours.
DURATION_BUCKETS = (
    0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800,
)  # fmt: skip
#: Upper bounds, in seconds, of the wait histogram: a pool thread at once to an hour's queue.
WAIT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
#: Seconds :class:`StoreCollector` answers from what it last read (scrapes in between read nothing).
STORE_FIGURES_TTL = 10.0
#: Most ids read to count the jobs waiting to run again (a bound, not an expected size).
RERUN_COUNT_CAP = 10_000

_lock = threading.Lock()
_metrics: Metrics | None = None
_tried = False
#: The apps of this process, for :class:`StoreCollector` (weakly: an app may go away).
_apps: weakref.WeakSet[AppState] = weakref.WeakSet()
_NULL = contextlib.nullcontext()


class Metrics:
    """This process's metric objects (made once, by :func:`install`)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.started = Counter(
            "asyncstate_jobs_started",
            "Jobs made by start() (and by Try again).",
            ["job"],
            registry=None,
        )
        self.finished = Counter(
            "asyncstate_jobs_finished",
            "Jobs ended, by final status and reason (empty when succeeded).",
            ["job", "status", "reason"],
            registry=None,
        )
        self.duration = Histogram(
            "asyncstate_job_duration_seconds",
            "Run time of ended jobs (their last run), by final status.",
            ["job", "status"],
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self.wait = Histogram(
            "asyncstate_job_wait_seconds",
            "Time from start() to the first run.",
            ["job"],
            buckets=WAIT_BUCKETS,
            registry=None,
        )
        self.running = Gauge(
            "asyncstate_jobs_running",
            "Runs in progress.",
            ["job"],
            multiprocess_mode="livesum",
            registry=None,
        )
        self.circuit = Gauge(
            "asyncstate_store_circuit_open",
            "1 while the Redis circuit breaker is open or half-open.",
            multiprocess_mode="livemax",
            registry=None,
        )
        self.cancels = Counter(
            "asyncstate_cancel_requests", "Cancel requests stored.", registry=None
        )
        # Label children by value: labels() checks, locks and builds a key on every call.
        self._children: dict[tuple[Any, ...], Any] = {}

    def collectors(self) -> list[Any]:
        return [
            self.started,
            self.finished,
            self.duration,
            self.wait,
            self.running,
            self.circuit,
            self.cancels,
        ]

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, made once (labels are bounded: so is this cache)."""
        key = (id(metric), *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found


def install(app_state: AppState) -> None:
    """At ``init_app``: register the metrics and connect their receivers, once per process,
    if ``prometheus_client`` is installed; :class:`StoreCollector` reads ``app_state``'s store."""
    global _metrics, _tried
    with _lock:
        if not _tried:
            _tried = True
            _metrics = _register()
        if _metrics is not None:
            _apps.add(app_state)


def _register() -> Metrics | None:
    try:
        from prometheus_client import REGISTRY
    except ImportError:
        return None
    made = Metrics()
    collector = StoreCollector()
    done: list[Any] = []
    try:
        for one in [*made.collectors(), collector]:
            REGISTRY.register(one)
            done.append(one)
    except ValueError as exc:  # the names are taken (by whom, the message says)
        for one in done:
            REGISTRY.unregister(one)
        log.warning("flask-asyncstate: metrics not registered: %s", exc)
        return None
    signals.job_started.connect(_on_started, weak=False)
    signals.job_finished.connect(_on_finished, weak=False)
    signals.store_circuit_changed.connect(_on_circuit, weak=False)
    return made


def installed() -> bool:
    """Whether this process records the metrics."""
    return _metrics is not None


# -- hooks: the lifecycle and the app state call these; all survive failures -------------


def started(name: str) -> None:
    """A job ``name`` was made (``start()``, "Try again")."""
    found = _metrics
    if found is not None:
        try:
            found.child(found.started, name).inc()
        except Exception:  # a metric never stops a start
            log.debug("asyncstate_jobs_started not counted", exc_info=True)


def running(name: str) -> contextlib.AbstractContextManager[Any]:
    """Around one run of a job ``name`` in this process: the running gauge."""
    found = _metrics
    return _NULL if found is None else _Running(found, name)


class _Running:
    __slots__ = ("_child",)

    def __init__(self, found: Metrics, name: str) -> None:
        self._child = found.child(found.running, name)

    def __enter__(self) -> None:
        try:
            self._child.inc()
        except Exception:
            log.debug("asyncstate_jobs_running not raised", exc_info=True)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._child.dec()
        except Exception:
            log.debug("asyncstate_jobs_running not lowered", exc_info=True)


def cancel_requested() -> None:
    """A cancel request was stored."""
    found = _metrics
    if found is not None:
        try:
            found.cancels.inc()
        except Exception:
            log.debug("asyncstate_cancel_requests not counted", exc_info=True)


def process_ended() -> None:
    """This process is about to exit (an RQ work horse): in multiprocess mode, drop its live
    gauges' files, so a running count or an open circuit does not outlive it."""
    if _metrics is None or not multiprocess_mode():
        return
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
    except Exception:
        log.debug("multiprocess metrics of this process not retired", exc_info=True)


# -- signal receivers -----------------------------------------------------------------


def _seconds(later: Any, earlier: Any) -> float | None:
    if isinstance(later, (int, float)) and isinstance(earlier, (int, float)):
        return max(0.0, float(later) - float(earlier))  # clocks of two hosts may disagree
    return None


def _on_started(sender: Any, *, document: dict[str, Any], **kw: Any) -> None:
    found = _metrics
    if found is None or (document.get("attempt") or 1) != 1 or document.get("resumed"):
        return  # the wait is start() to the first run; a retry's is its backoff, by design
    waited = _seconds(document.get("started_at"), document.get("created_at"))
    if waited is not None:
        found.child(found.wait, str(document.get("name"))).observe(waited)


def _on_finished(sender: Any, *, document: dict[str, Any], **kw: Any) -> None:
    found = _metrics
    if found is None:
        return
    name, status = str(document.get("name")), str(document.get("status"))
    found.child(found.finished, name, status, str(document.get("reason") or "")).inc()
    took = _seconds(document.get("updated_at"), document.get("started_at"))
    if took is not None:
        found.child(found.duration, name, status).observe(took)


def _on_circuit(sender: Any, *, new: str, **kw: Any) -> None:
    found = _metrics
    if found is not None:
        found.circuit.set(0 if new == "closed" else 1)


# -- the cluster-wide figure -------------------------------------------------------------


class StoreCollector:
    """``asyncstate_jobs_waiting{waiting_for}``: jobs waiting in the store, for the whole
    cluster, read at scrape time from what the store keeps anyway, no scan:

    - ``waiting_for="worker"``: queued for an RQ or Celery worker (the engine's queue
      index; at most ``ASYNCSTATE_MAX_QUEUED`` ids); only with those executors;
    - ``waiting_for="rerun"``: listed to run again (retries in their backoff, resumes,
      "Try again"; the due list, counted up to :data:`RERUN_COUNT_CAP`).

    Jobs waiting for a pool thread are each instance's own: see
    ``asyncstate_job_wait_seconds``. Answers are kept :data:`STORE_FIGURES_TTL` s, so
    scrapes cost at most two store reads per app per interval; a store that cannot
    answer leaves its figures out of that scrape.
    """

    def __init__(self, ttl: float = STORE_FIGURES_TTL) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._figures: dict[str, int] = {}

    def describe(self) -> list[Any]:
        return [self._family()]  # so that registering reads nothing

    def collect(self) -> Iterator[Any]:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= self._ttl:
                self._figures, self._at = _waiting(), now
            figures = dict(self._figures)
        family = self._family()
        for waiting_for, count in sorted(figures.items()):
            family.add_metric([waiting_for], count)
        yield family

    @staticmethod
    def _family() -> Any:
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily(
            "asyncstate_jobs_waiting",
            "Jobs waiting in the store, cluster-wide, by what they wait for.",
            labels=["waiting_for"],
        )


def _waiting() -> dict[str, int]:
    figures: dict[str, int] = {}
    seen: set[tuple[Any, str]] = set()
    for app_state in list(_apps):
        if app_state.closed:
            continue
        records = app_state.records
        client = getattr(app_state.store, "client", None)  # Redis: names its server and db
        place = (id(app_state.store) if client is None else repr(client), records.queue_key())
        if place in seen:  # two apps of this process on one store and prefix: counted once
            continue
        seen.add(place)
        try:
            if app_state.executor.remote:
                figures["worker"] = figures.get("worker", 0) + len(records.queued_ids())
            due = records.due(RERUN_COUNT_CAP) if app_state.extension.runs_again() else []
            figures["rerun"] = figures.get("rerun", 0) + len(due)
        except StoreError as exc:  # a scrape is answered all the same
            log.debug("asyncstate_jobs_waiting not read: %s", exc)
        except Exception:
            log.exception("asyncstate_jobs_waiting not read")
    return figures


# -- serving a worker's metrics -------------------------------------------------------


def multiprocess_mode() -> bool:
    """Whether ``prometheus_client`` keeps this process's values in files
    (``PROMETHEUS_MULTIPROC_DIR``), for one ``/metrics`` of several processes."""
    return bool(
        os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    )


def serve(port: int, addr: str = "0.0.0.0", *, forking: bool = False) -> None:
    """Serve ``/metrics`` on ``port`` from a background thread of this process: an RQ
    worker (``flask asyncstate worker --metrics-port``) or a Celery worker's main
    process (call it from Celery's ``worker_init`` signal).

    In multiprocess mode it serves every process's values (the work horses', the pool
    processes'), plus :class:`StoreCollector`; otherwise this process's registry.
    ``forking`` (an RQ worker that forks a work horse per job) requires multiprocess
    mode: a horse's figures would die with it. ``RuntimeError`` says what is missing.
    """
    try:
        from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    except ImportError:
        raise RuntimeError(
            "serving metrics needs prometheus_client: pip install 'flask-asyncstate[metrics]'"
        ) from None
    registry: Any = REGISTRY
    if multiprocess_mode():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(StoreCollector())
    elif forking:
        raise RuntimeError(
            "the forking worker runs each job in a work horse whose figures end with it:"
            " set PROMETHEUS_MULTIPROC_DIR to an empty directory (see prometheus_client's"
            " multiprocess mode), or run the worker with --simple"
        )
    start_http_server(port, addr, registry=registry)
