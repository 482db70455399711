"""What flask-asyncstate keeps per app, in ``app.extensions["asyncstate"]``, and the one accessor.

:class:`AppState` wires the parts of one app together: settings, store, typed
state API, job records, token signer, stream limits, the registry of this
process's jobs, their lifecycle, the executor that runs them and the writer
thread. :func:`get` finds it for the current (or a given) app.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import secrets
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app

from . import metrics, owners, tokens, tracing
from .config import Settings
from .executors import Executor, InlineExecutor, ThreadExecutor
from .jobs import JobBuffer, JobHandle
from .lifecycle import Lifecycle, LocalJobs
from .records import JobRecords
from .sse import StreamSlots
from .state import StateAPI
from .status import JobStatus
from .stores.base import Store
from .writer import Writer

log = logging.getLogger("flask_asyncstate")

#: Key in ``app.extensions``.
EXTENSION_KEY = "asyncstate"


def get(app: Flask | None = None) -> AppState:
    """The :class:`AppState` of ``app`` (default: the current app)."""
    target = current_app if app is None else app
    try:
        found = target.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "flask-asyncstate is not registered on this Flask app. Did you forget to call"
            " 'AsyncState.init_app(app)'?"
        ) from None
    assert isinstance(found, AppState)
    return found


def new_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class AppState:
    """The per-app runtime of flask-asyncstate (see the module docstring)."""

    def __init__(
        self,
        app: Flask,
        extension: Any,
        settings: Settings,
        store: Store,
        celery: Any = None,
    ) -> None:
        self.app_ref = weakref.ref(app)
        #: The :class:`~flask_asyncstate.AsyncState` this app was registered with.
        self.extension = extension
        #: The validated ``ASYNCSTATE_*`` configuration, and the tuning keywords.
        self.settings = settings
        #: The shared store (memory or Redis) everything below sits on.
        self.store = store
        #: The typed state API (``asyncstate.state``).
        self.state = StateAPI(store)
        #: Job, instance and owner entries in the store.
        self.records = JobRecords(
            store, new_instance_id(), settings.heartbeat_interval, settings.keep_finished
        )
        #: Signs job ids into tokens and checks them back.
        self.signer = tokens.TokenSigner(app.config, settings.token_max_age)
        #: Open event streams of this process, bounded in all and per owner.
        self.streams = StreamSlots(
            settings.max_streams,
            settings.tuning.max_streams_per_owner,
            lifetime=settings.tuning.sse_max_age + 2 * settings.tuning.sse_ping_interval + 5,
        )
        #: The jobs of this process (queued, running, or with a final document to store).
        self.local_jobs = LocalJobs()
        #: What this process is, in heartbeats: ``"web"``, ``"rq worker"``, ``"celery worker"``.
        self.role = "web"
        #: Where jobs run (``ASYNCSTATE_EXECUTOR``): a thread pool, RQ or Celery workers, or inline.
        self.executor: Executor = _executor(self, settings, store, celery)
        #: The thread that flushes progress and beats the heartbeat.
        self.writer = Writer(self)
        #: Starts, runs and ends jobs, whatever executor runs them.
        self.lifecycle = Lifecycle(self)
        self._lock = threading.Lock()
        self._pid = os.getpid()  # the process these jobs belong to
        self._closed = False
        _shut_down_at_exit(self)
        _renew_after_fork(self)

    @property
    def flask_app(self) -> Flask:
        app = self.app_ref()
        if app is None:
            raise RuntimeError("the Flask app of this flask-asyncstate state was garbage-collected")
        return app

    @property
    def blueprint_guard(self) -> Callable[..., Any] | None:
        """The guard before every route of the blueprint but its static files, if any."""
        return self.extension.blueprint_guard

    @property
    def admin_guard(self) -> Callable[..., Any] | None:
        """The guard of the operator's page; None: the page is off (its routes answer 404)."""
        return self.extension.admin_page_guard

    @property
    def instance_id(self) -> str:
        """This process's id in heartbeats and job documents (renewed in a forked child)."""
        return self.records.instance_id

    @property
    def retry_after(self) -> int:
        """Seconds a client should wait after a 503 of the store: when the circuit probes again."""
        return max(1, math.ceil(self.settings.tuning.circuit_reset))

    # -- threads -------------------------------------------------------------

    def ensure_running(self) -> None:
        """Start the executor and writer on first use, and again in a forked child."""
        with self._lock:
            if self._closed:
                raise RuntimeError("flask-asyncstate was shut down; no new jobs can start")
            self.executor.start()
            if not self.writer.alive:
                self.writer.start()

    def after_fork(self) -> None:
        """In a forked child (gunicorn --preload): its own instance id, so its death is its
        own; none of the parent's jobs, threads or lock states."""
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.records.instance_id = new_instance_id()
        self.local_jobs.after_fork()
        self.executor.after_fork()
        self.writer.after_fork()
        self.store.after_fork()
        self.lifecycle.after_fork()

    def supervise(self) -> None:
        """Restart the writer (and through it the store's listener) if it ended anyway.

        Called where jobs start and end, so running jobs keep their heartbeat even
        if nothing new is started.
        """
        if self.writer.alive or self._closed or self.writer.stopped:
            return
        try:
            with self._lock:
                if not self.writer.alive and not self._closed:
                    self.writer.start()
        except Exception:  # a job must run even if the restart fails
            log.exception("writer restart failed")

    # -- jobs ------------------------------------------------------------------

    def request_owner(self, *, create: bool) -> str | None:
        """The owner id of the current request (``@owner_loader``, user or session)."""
        return owners.request_owner(self.extension.owner_callback, create=create)

    def job_handle(self, job_id: str) -> JobHandle:
        return JobHandle(self, job_id)

    def cancel_job(
        self, job_id: str, queued: bool = True, *, family: bool = True, depth: int = 0
    ) -> bool:
        """Store the cancel request; the holder's Event is set via pub/sub (or its next write).

        A job still waiting for a worker ends ``cancelled`` at once and leaves the engine's queue.
        ``queued=False`` (the caller read a later status: a job never goes back to waiting)
        spares that check's round trip. Every unfinished child of the job is cancelled too;
        ``family=False`` (the caller read that it has none) spares that read.
        """
        found = self.store.cancel(self.records.job_key(job_id))
        if found:
            metrics.cancel_requested()
            tracing.cancel_requested(job_id)
        if found and family:
            self.lifecycle.cancel_children(job_id, depth)
        if found and queued and self.executor.remote:
            self.lifecycle.cancel_queued(job_id)
        elif found and queued:  # waiting here for a pool thread: it ends now
            self.lifecycle.end_cancelled_waiting()
            if self.local_jobs.get(job_id) is None and self.extension.runs_again():
                self.lifecycle.cancel_queued(job_id)  # waiting for a retry: it ends now
        return found

    def local_context(self, job_id: str) -> JobBuffer | None:
        local = self.local_jobs.get(job_id)
        return None if local is None else local.ctx

    @property
    def closed(self) -> bool:
        """Shut down (or shutting down): no job starts or runs here any more."""
        return self._closed

    def retire_process(self) -> None:
        """A process about to ``os._exit`` (an RQ work horse) whose jobs have all ended: stop
        the writer and remove the heartbeat entry, without joining threads."""
        self._closed = True
        self.writer.stop(join=0.5)
        metrics.process_ended()
        tracing.flush()  # os._exit follows: the SDK's batch would be lost
        if self.writer.borrowed:
            return  # the instance id is the worker's, which lives on
        try:
            self.records.retire_instance()
        except Exception:  # the entry expires by itself
            log.debug("heartbeat entry not removed", exc_info=True)

    def shutdown(self, timeout: float | None = None) -> None:
        """Cancel running jobs, wait up to ``timeout`` s, write ``lost`` for any still running."""
        with self._lock:
            if self._closed or self._pid != os.getpid():
                return
            self._closed = True
        timeout = self.settings.tuning.shutdown_timeout if timeout is None else timeout
        for local in self.local_jobs.running():
            local.ctx.stop_reason = "shutdown"  # the document tells a restart from a user's cancel
            local.ctx.cancelled.set()
        for job_id in self.executor.shutdown():  # never started: honour the cancel now
            waiting = self.local_jobs.get(job_id)
            if waiting is not None and not self.lifecycle.resume_later(waiting.ctx, waiting.job):
                self.lifecycle.finish(waiting.ctx, waiting.job, JobStatus.CANCELLED)
        self.executor.wait(timeout)
        for local in self.local_jobs.running():
            if self.lifecycle.resume_later(local.ctx, local.job):
                continue  # it goes on elsewhere; this thread's writes no longer count
            self.lifecycle.finish(
                local.ctx,
                local.job,
                JobStatus.LOST,
                error={
                    "type": "Shutdown",
                    "message": "the instance running this job shut down",
                },
            )
        self.writer.stop(join=0)
        self.lifecycle.flush()  # last chance for final documents that met an outage
        self.writer.stop()
        try:
            self.records.retire_instance()
        except Exception:  # noqa: BLE001, S110 - the store is away; our heartbeat expires by itself
            pass
        self.store.close()  # stops its listener; a client passed to init_app stays open


def _executor(app_state: AppState, settings: Settings, store: Store, celery: Any) -> Executor:
    """The executor ``ASYNCSTATE_EXECUTOR`` asks for."""
    if settings.executor == "inline":
        return InlineExecutor()
    if settings.executor == "threads":
        return ThreadExecutor(settings.max_workers)
    if not getattr(store, "shared", False):
        raise ValueError(
            f"ASYNCSTATE_EXECUTOR = {settings.executor!r} runs jobs in other processes, which"
            " need a shared store: set ASYNCSTATE_REDIS_URL (or pass redis=)"
        )
    if settings.executor == "rq":
        client = getattr(store, "client", None)
        if client is None:
            raise ValueError(
                "ASYNCSTATE_EXECUTOR = 'rq' needs the Redis store: RQ's queue lives there"
            )
        if getattr(store, "cluster", False):
            raise ValueError(
                "RQ does not run on Redis Cluster: use Celery, or plain/Sentinel Redis"
            )
        from .executors import RQExecutor

        fast = getattr(store, "request_client", client)
        return RQExecutor(
            app_state,
            client,
            fast,
            settings.rq_queue,
            settings.expires,
            settings.tuning.timeout_grace,
        )
    if celery is None:
        raise ValueError(
            "ASYNCSTATE_EXECUTOR = 'celery' needs the Celery app: AsyncState(app, celery=celery_app)"
        )
    from .executors import CeleryExecutor

    return CeleryExecutor(celery, app_state, settings.tuning.timeout_grace)


def _renew_after_fork(app_state: AppState) -> None:
    ref = weakref.ref(app_state)

    def in_child() -> None:
        alive = ref()
        if alive is not None:
            alive.after_fork()

    os.register_at_fork(after_in_child=in_child)


def _shut_down_at_exit(app_state: AppState) -> None:
    """At interpreter exit, end this app's jobs cleanly (job threads are daemons: no join waits)."""
    ref = weakref.ref(app_state)

    def on_exit() -> None:
        alive = ref()
        if alive is not None:
            alive.shutdown()

    atexit.register(on_exit)
