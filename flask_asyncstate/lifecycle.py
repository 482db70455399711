"""The life of one job, whatever executor runs it: admit it, run it, end it final.

Path of a job: :meth:`Lifecycle.start` admits it (its queued document, the
owner's quota slot, a unique job's place, a place in the engine's queue, its
typed state; all undone when a start is refused half-way) and hands
:meth:`Lifecycle.run` to the executor, or, for RQ and Celery, puts a JSON
payload on the engine's queue, whose worker takes the job
(:meth:`Lifecycle.run_taken`). ``run`` writes ``running``, calls the function
in the request context of the request that started it (its URL root only: no
body, cookies or session, so ``url_for(_external=True)`` builds the view's
links), and :meth:`Lifecycle.finish` stores the final document in the job's
write turn, so no buffered progress can land after it. A final document that
meets an outage is kept here and retried by the writer; one that cannot be
stored at all is replaced by a minimal ``failed`` one. Every job ends final,
and every end, whoever stores it (this process, a web instance cancelling a
waiting job, a worker engine giving up on one), goes through
:meth:`Lifecycle.ended`: the owner's slot, the unique place and the queue place
are given back there, and ``job_finished`` is sent there.

A queued job for a worker names no ``instance``. The worker that takes it, and
a web instance cancelling it while it waits, both change its document with one
conditional update (:meth:`~flask_asyncstate.records.JobRecords.transition`),
so exactly one of them wins: a cancelled job never runs, a taken one is
cancelled through its Event like any running job.

Deadlines (``@asyncstate.job(timeout=SECONDS)``): at the deadline the job's
cancel Event is set (a job that checks it stops there, and ends ``failed`` with
a ``JobTimeout`` error, not ``cancelled``); the grace later a job that still
runs is recorded ``failed`` anyway. A thread cannot be killed, so a pool thread
that ignores its Event runs on until it returns (its writes no longer count);
RQ raises ``JobTimeoutException`` in the job at its limit, Celery's prefork
pool kills the process at its hard limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, has_request_context, request

from . import logs, metrics, serialization, signals, tracing
from .errors import (
    Duplicate,
    JobCancelled,
    JobNotRetryable,
    QueueFull,
    QuotaExceeded,
    StoreError,
    error_of,
)
from .executors import PAYLOAD_VERSION, RemoteExecutor
from .jobs import BoundState, JobBuffer, JobHandle
from .records import MAX_CHILDREN, process_ended, reason_of
from .signals import send
from .status import FINAL, UNFINISHED, JobStatus
from .stores.base import request_path
from .templating import translated

if TYPE_CHECKING:
    from .appstate import AppState
    from .jobs import TrackedJob

log = logging.getLogger("flask_asyncstate")

_STOPPED = {"type": "WorkerStopped", "message": "the worker process was stopped while the job ran"}

#: Longest URL root kept (a hostile Host header is not worth more).
MAX_ORIGIN = 2048
#: Largest queued document (encoded, in characters) a worker's payload carries for its take; a
#: larger one is read by the take instead (one round trip more, a smaller message).
_PAYLOAD_DOCUMENT = 4096

_in_job: ContextVar[bool] = ContextVar("asyncstate_in_job", default=False)


# -- the request context a job runs in ------------------------------------------------


def capture() -> str | None:
    """The current request's URL root (``https://example.com/app/``), or None outside one."""
    if not has_request_context():
        return None
    root = request.url_root
    return root if len(root) <= MAX_ORIGIN else None


def in_job() -> bool:
    """Whether this code runs inside a job (whose request context serves no user)."""
    return _in_job.get()


@contextlib.contextmanager
def job_context(app: Flask, origin: Any) -> Iterator[None]:
    """The context a job runs in: a fresh app context (its own ``g``, no user), and a bare
    request context at ``origin`` when it has one. Its store calls stay patient (it is
    background work, not a request), and a job it starts gets no owner."""
    token = _in_job.set(True)
    try:
        with app.app_context(), request_path(False):
            if isinstance(origin, str) and origin:
                with app.test_request_context("/", base_url=origin):
                    yield
            else:
                yield
    finally:
        _in_job.reset(token)


def timeout_error(timeout: float | None) -> dict[str, str]:
    """The ``error`` field of a job that ran past its deadline."""
    return {
        "type": "JobTimeout",
        "message": f"the job ran longer than its timeout of {timeout:g} s",
    }


def _waiting(doc: dict[str, Any]) -> bool:
    return doc.get("status") == JobStatus.QUEUED and doc.get("instance") is None


def _unfinished(doc: dict[str, Any]) -> bool:
    return doc.get("status") in UNFINISHED


def _unchanged(doc: dict[str, Any], since: float | None) -> bool:
    """A report kept through an outage is about the run it was made of: one the document
    shows untouched since (a resume or another end changes ``updated_at``)."""
    return since is None or (doc.get("updated_at") or 0.0) <= since


def _reported(doc: dict[str, Any], reporter: str | None = None) -> bool:
    """An engine's report of a death is about this run: the job names no process yet, or
    one that has ended (not one that took it since: see :func:`records.process_ended`), or
    the ``reporter`` itself (an RQ forking worker reporting its work horse, which runs
    under the worker's instance id)."""
    named = doc.get("instance")
    if named is None:
        return True
    return named == reporter if reporter is not None else process_ended(named)


#: What "Try again" runs again: a job that ended without succeeding.
RETRYABLE = (JobStatus.FAILED.value, JobStatus.CANCELLED.value, JobStatus.LOST.value)
#: Jobs the dispatcher reads from the due list per look (the soonest due first).
DUE_BATCH = 50
#: Resumable jobs the sweep reads per look for a dead instance.
WATCH_BATCH = 1000
#: Engine reports of a death kept while the store is unreachable (the oldest go first).
ABANDONED_KEPT = 10_000
#: A kept report: why, the status it ends the job in, the reporter, when it was made.
_Report = tuple[str, str, str | None, float]
#: Seconds a "Try again" in progress keeps others off the job (see :meth:`Lifecycle.rerun`).
RERUN_MARK = 30.0


def _due(now: float) -> Callable[[dict[str, Any]], bool]:
    """The condition of taking a job whose next run is due (a retry, a resume, a re-run)."""
    return lambda doc: _waiting(doc) and doc.get("retry_at") is not None and doc["retry_at"] <= now


#: What a run that starts over (a retry, a "Try again") does not keep of the last one.
_AFRESH: dict[str, Any] = {
    "current": 0,
    "total": None,
    "percent": None,
    "message": None,
    "resumed": False,
    "cursor": None,
}


def _cannot() -> str:
    return translated()["tryAgainRefused"]


def again(doc: dict[str, Any], at: float, **change: Any) -> dict[str, Any]:
    """The change that puts an ended (or stopped) job back in the queue, due at ``at``."""
    return {
        "status": JobStatus.QUEUED.value,
        "instance": None,
        "retry_at": at,
        "attempt": (doc.get("attempt") or 1) + 1,
        "result": None,
        "reason": None,
        "eta": None,
        "rate": None,
        "started_at": None,
        "counted": False,
        "updated_at": time.time(),
        **change,
    }


# -- this process's jobs ----------------------------------------------------------------


@dataclass
class Local:
    """One job of this process."""

    ctx: JobBuffer
    job: TrackedJob
    #: The sealed final document, while the store has not taken it yet.
    final: dict[str, Any] | None = field(default=None)


class LocalJobs:
    """Thread-safe registry of this process's jobs (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Local] = {}
        self._queued: set[str] = set()
        #: Checkpoint name -> the test's gate there (:func:`flask_asyncstate.testing.job_gate`).
        self.checkpoints: dict[str, Any] = {}

    def reserve(self, job_id: str, limit: int) -> int | None:
        """Take a queue place for ``job_id``; None when ``limit`` jobs already wait (else their count)."""
        with self._lock:
            waiting = len(self._queued)
            if waiting >= limit:
                return None
            self._queued.add(job_id)
            return waiting

    def unqueue(self, job_id: str) -> bool:
        """The job left the queue (it runs now, or it never will); True for the one caller
        that took it out, so a pool thread and a cancel never both have it."""
        with self._lock:
            if job_id not in self._queued:
                return False
            self._queued.discard(job_id)
            return True

    def waiting_cancelled(self) -> list[Local]:
        """Jobs still waiting for a pool thread whose cancel Event is set."""
        with self._lock:
            return [
                self._jobs[j]
                for j in self._queued
                if j in self._jobs and self._jobs[j].ctx.cancelled.is_set()
            ]

    def add(self, ctx: JobBuffer, job: TrackedJob) -> None:
        ctx.checkpoints = self.checkpoints
        with self._lock:
            self._jobs[ctx.id] = Local(ctx, job)

    def get(self, job_id: str) -> Local | None:
        with self._lock:
            return self._jobs.get(job_id)

    def defer(self, job_id: str, final: dict[str, Any]) -> None:
        """The final document met an outage: keep it for the writer to retry."""
        with self._lock:
            local = self._jobs.get(job_id)
            if local is not None:
                local.final = final

    def remove(self, job_id: str) -> Local | None:
        """Forget the job, once: the first caller gets it, later ones None."""
        with self._lock:
            self._queued.discard(job_id)
            return self._jobs.pop(job_id, None)

    def running(self) -> list[Local]:
        """Jobs whose final document is not sealed (queued or running)."""
        with self._lock:
            return [j for j in self._jobs.values() if j.final is None]

    def deferred(self) -> list[Local]:
        """Jobs whose sealed final document still waits for the store."""
        with self._lock:
            return [j for j in self._jobs.values() if j.final is not None]

    def all(self) -> list[Local]:
        with self._lock:
            return list(self._jobs.values())

    def after_fork(self) -> None:
        """A forked child inherits none of its parent's jobs, nor the state of its lock."""
        self._lock = threading.Lock()
        self._jobs = {}
        self._queued = set()


# -- the life of a job -------------------------------------------------------------------


class Lifecycle:
    """Starts, runs and ends the jobs of one app (see the module docstring)."""

    def __init__(self, app_state: AppState) -> None:
        self.app_state = app_state
        self.records = app_state.records
        self.jobs = app_state.local_jobs
        #: Engine reports of a death that met an outage (see :meth:`end_abandoned`), by job id.
        self._abandoned: dict[str, _Report] = {}
        self._abandoned_lock = threading.Lock()
        self._retrier: threading.Thread | None = None

    # -- starting ------------------------------------------------------------

    def start(
        self,
        job: TrackedJob,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        parent: JobBuffer | None = None,
    ) -> JobHandle:
        """Admit, record and submit a job (with ``parent``, a child of that running job:
        its owner, no quota slot of its own); nothing is left behind when it is refused.
        Seen by operators: a span around it (:mod:`.tracing`), a count (:mod:`.metrics`)."""
        with tracing.start_span(job.name) as span:
            handle = self._start(job, args, kwargs, parent)
            tracing.started(span, handle.id, handle.is_new)
        if handle.is_new:
            metrics.started(job.name)
        return handle

    def _start(
        self,
        job: TrackedJob,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        parent: JobBuffer | None,
    ) -> JobHandle:
        app = self.app_state
        serialization.check_arguments(args, kwargs, f"job {job.name!r}")  # JSON, for every executor
        app.ensure_running()
        owner = None if parent is None else parent.owner
        if parent is None and has_request_context() and not in_job():  # a job serves no user
            app.signer.require_key()  # a job nobody could be given a token for is never made
            owner = app.request_owner(create=True)
        job_id = secrets.token_hex(16)
        parent_id = None if parent is None else parent.id
        if isinstance(app.executor, RemoteExecutor):
            return self._enqueue(app.executor, job, job_id, owner, args, kwargs, parent_id)
        waiting = self.jobs.reserve(job_id, app.settings.max_queued)
        if waiting is None:
            raise QueueFull(
                f"{app.settings.max_queued} jobs are already waiting on this server"
                " (ASYNCSTATE_MAX_QUEUED)",
                translated()["busy"],
            )
        try:
            ctx = self.admit(job, job_id, owner, False, args, kwargs, parent_id)
        except Duplicate as found:  # unique=: that job is still unfinished
            self.jobs.unqueue(job_id)
            return JobHandle(app, found.job_id, is_new=False)
        except BaseException:
            self.jobs.unqueue(job_id)
            raise
        self.jobs.add(ctx, job)
        try:
            app.executor.submit(job_id, lambda: self.run(ctx, job, args, kwargs))
        except RuntimeError:  # shut down between our check and the submit
            self.finish(ctx, job, JobStatus.CANCELLED)
            raise RuntimeError("flask-asyncstate was shut down; no new jobs can start") from None
        return JobHandle(app, job_id)  # the token is signed when first asked for

    def admit(
        self,
        job: TrackedJob,
        job_id: str,
        owner: str | None,
        remote: bool = False,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        parent: str | None = None,
    ) -> JobBuffer:
        """Write the queued document, claim the owner's quota slot (and, for a worker, a
        place in the engine's queue), create the job's state.

        A job queued for a worker names no instance until one takes it, and no cancel
        Event is held here: the worker holds it.
        """
        # A lazy label becomes text here, in the starting request's locale: workers and
        # other instances have no such request.
        label = job.name if job.label is None else str(job.label) or job.name
        # The unique place is named once, here, and kept in the document: every end reads it.
        unique = None if parent else self.records.unique_key(job.name, job.unique, owner)
        instance = None if remote else self.records.instance_id
        ctx = JobBuffer.new(job_id, job.name, instance, owner, label, unique, job.max_attempts)
        ctx.origin = capture()
        tracing.carry(ctx.doc)  # the start span's context, for the run to continue its trace
        if parent is not None:
            ctx.doc["parent"] = parent
        self._keep_arguments(ctx, job, args, kwargs or {})
        event = None if remote else ctx.cancelled
        first = ctx.snapshot()
        if ctx.unique_key is None and parent is None:
            self._admit_at_once(ctx, job, first, remote)
            return ctx
        if ctx.unique_key is not None:
            first["_pending"] = True  # a unique place holder not admitted yet (claim_unique)
        self.records.create(first, event, job.never_expires)
        try:
            if ctx.unique_key is not None:  # claimed after the document exists (see claim_unique)
                holder = self.records.claim_unique(ctx.unique_key, job_id)
                if holder is not None:
                    ctx.unique_key = None  # not ours to give back
                    raise Duplicate(holder)
            limit = self.app_state.settings.max_jobs_per_owner
            if parent is not None and not self.records.adopt_child(parent, job_id):
                ctx.doc.pop("parent")  # not counted: nothing to give back
                raise ValueError(f"job {parent} has {MAX_CHILDREN} children, the most it may")
            if (
                parent is None
                and owner is not None
                and not self.records.admit(owner, job_id, limit)
            ):
                raise self._refusal("owner")
            if remote and not self.records.enter_queue(job_id, self.app_state.settings.max_queued):
                raise self._refusal("queue")
            if job.state_type is not None and not remote:  # a worker creates it when it takes
                self._create_state(ctx, job)
            if ctx.unique_key is not None:  # admitted: a duplicate start may now return it
                self.records.store.write(self.records.job_key(job_id), ctx.snapshot())
            if (job.resumes or parent is not None) and self.records.store.ranks:
                self.records.watch(job_id, first["created_at"])  # its death is acted on
            # Last: a refused start never reaches the newest jobs the admin page reads.
            self.records.list_job(job_id, first["created_at"])
        except BaseException:
            self.abandon(ctx, job, remote)
            raise
        return ctx

    def _admit_at_once(
        self, ctx: JobBuffer, job: TrackedJob, first: dict[str, Any], remote: bool
    ) -> None:
        """:meth:`admit` of a job with no unique place and no parent, its steps sent together
        (:meth:`~flask_asyncstate.records.JobRecords.create_admitted`: one round trip on
        Redis); a refusal undoes them all, its listing included."""
        settings = self.app_state.settings
        owner = ctx.owner
        try:
            # (a store error in that round trip is undone too: some of it may have run)
            refused = self.records.create_admitted(
                first,
                None if remote else ctx.cancelled,
                job.never_expires,
                None if owner is None else (owner, settings.max_jobs_per_owner),
                settings.max_queued if remote else None,
                bool(job.resumes),
            )
            for place in refused:
                limit = settings.max_jobs_per_owner if place == "owner" else settings.max_queued
                if not self.records.claim_again(place, ctx.id, owner, limit):
                    raise self._refusal(place)
            if job.state_type is not None and not remote:  # a worker creates it when it takes
                self._create_state(ctx, job)
        except BaseException:
            self.abandon(ctx, job, remote, listed=True)
            raise

    def _refusal(self, place: str) -> QuotaExceeded | QueueFull:
        """What a start raises when the owner's quota (``"owner"``) or the jobs waiting for
        a worker (``"queue"``) are full: words for the developer and for the user."""
        settings = self.app_state.settings
        if place == "owner":
            limit = settings.max_jobs_per_owner
            return QuotaExceeded(
                f"owner has {limit} unfinished jobs (ASYNCSTATE_MAX_JOBS_PER_OWNER)",
                translated()["quotaExceeded"].format(limit=limit),
            )
        return QueueFull(
            f"{settings.max_queued} jobs already wait for a worker (ASYNCSTATE_MAX_QUEUED)",
            translated()["busy"],
        )

    def _create_state(self, ctx: JobBuffer, job: TrackedJob) -> None:
        """The job's typed state entry (``state=``), cancelled with the job."""
        assert job.state_type is not None
        self.app_state.state.create(
            job.state_type(),
            name=ctx.id,
            cancel_event=ctx.cancelled,
            never_expires=job.never_expires,
        )
        ctx.state = BoundState(self.app_state.state, job.state_type, ctx.id)

    def _keep_arguments(
        self, ctx: JobBuffer, job: TrackedJob, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Keep what running the job again needs in its document (internal fields): the
        arguments, the URL root, the retry and resume budgets. Arguments larger than half
        an entry are not kept (the job then cannot be run again, unless it must: refused)."""
        call = {"args": list(args), "kwargs": kwargs}
        store = self.app_state.store
        if len(serialization.dumps(call)) > store.max_entry_size // 2:
            if job.retries or job.resumes:
                raise ValueError(
                    f"job {job.name!r}: arguments over {store.max_entry_size // 2} bytes"
                    " cannot be kept to run it again (retries=, resumable=); pass a reference"
                    " (an id, a path) instead"
                )
            return
        if (job.retries or job.resumes) and not store.ranks:
            raise ValueError(
                f"{type(store).__name__} keeps no ranked lists: no retries=/resumable="
            )
        with ctx.lock:
            ctx.doc.update(
                call=call,
                origin=ctx.origin,
                retries_left=job.retries,
                resumes_left=job.resumes,
            )

    def abandon(
        self, ctx: JobBuffer, job: TrackedJob, remote: bool = False, listed: bool = False
    ) -> None:
        """Undo a start that did not go through.

        Each step on its own; if the store refused one (it is away), the job is
        given a final ``failed`` document that the writer stores when it can, which
        also frees the owner's quota slot. Nothing stays ``queued`` for ever.
        """
        owner, state_type, unique = ctx.owner, job.state_type, ctx.unique_key
        parent = ctx.doc.get("parent")
        # A refused start that was ``listed`` among the newest jobs leaves that list, or a
        # flood of refused starts would push real jobs off the operator's page.
        steps: list[Callable[[], object]] = [lambda: self.records.remove(ctx.id, unlist=listed)]
        if listed and job.resumes and self.records.store.ranks:
            steps.append(lambda: self.records.unwatch([ctx.id]))
        if unique is not None:
            steps.append(lambda: self.records.release_unique(unique, ctx.id))
        if parent is not None:
            steps.append(lambda: self.records.count_child(parent, {"total": -1}, ended=ctx.id))
        elif owner is not None:
            steps.append(lambda: self.records.discharge(owner, ctx.id))
        if state_type is not None:
            steps.append(lambda: self.app_state.state.remove(state_type, name=ctx.id))
        if remote:
            steps.append(lambda: self.records.leave_queue(ctx.id))
        refused = 0
        for step in steps:
            try:
                step()
            except StoreError:
                refused += 1
        if not refused:
            return
        log.warning("job %s: a refused start could not be undone yet; recording it failed", ctx.id)
        with ctx.write_turn():
            final = ctx.seal(
                JobStatus.FAILED,
                error={
                    "type": "StartRefused",
                    "message": "the job could not be started",
                },
            )
        self.jobs.add(ctx, job)
        if final is not None:
            self.jobs.defer(ctx.id, final)

    # -- running -------------------------------------------------------------

    def run(
        self, ctx: JobBuffer, job: TrackedJob, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Run the job to its end; whatever happens, the job ends with a final status."""
        if not self.jobs.unqueue(ctx.id) and ctx.finished:
            return  # cancelled while it waited, and ended then (see end_cancelled_waiting)
        self.app_state.supervise()
        try:
            # What operators see of the run: its span, the running gauge, the job on log records.
            with logs.JobFields(ctx.id, ctx.name), tracing.run_span(ctx), metrics.running(ctx.name):
                self._run(ctx, job, args, kwargs)
        finally:
            if not ctx.finished:  # whatever went wrong above, nothing stays running
                self.finish(
                    ctx,
                    job,
                    JobStatus.FAILED,
                    error={
                        "type": "InternalError",
                        "message": "the job ended without a final status",
                    },
                )

    def _run(
        self, ctx: JobBuffer, job: TrackedJob, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if ctx.cancelled.is_set():  # cancelled while queued: never starts
            self.finish(ctx, job, JobStatus.CANCELLED)
            return
        taken = self.app_state.executor.remote  # a worker's take stored "running" already
        ctx.mark_running()
        if job.timeout is not None:
            ctx.deadline = time.monotonic() + job.timeout
        parent = ctx.doc.get("parent")
        if parent is not None:  # counted once, and said so in the stored document at once
            self._count_child(parent, {"running": 1})
            with ctx.lock:
                ctx.doc["counted"] = True
            taken = False
        if not taken:
            # The write answers with the stored cancel flag too: a cancel that the listener
            # missed while the job waited (a reconnect) is delivered here, without a read.
            self.flush_one(ctx, job, signal=False)
            if ctx.cancelled.is_set():
                self.finish(ctx, job, JobStatus.CANCELLED)
                return
        send(signals.job_started, self.app_state.app_ref(), job_id=ctx.id, document=ctx.snapshot())
        try:
            with job_context(self.app_state.flask_app, ctx.origin):
                result = job.fn(ctx.job(), *args, **kwargs)
        except JobCancelled:
            self._end_stopped(ctx, job)
            return
        except BaseException as exc:
            if ctx.timed_out and isinstance(exc, Exception):  # its own way of stopping
                self._end_stopped(ctx, job)
                return
            if not isinstance(exc, Exception) and self.app_state.executor.remote:
                # SystemExit, KeyboardInterrupt in a worker: its engine is stopping the process
                # (a cold shutdown, revoke(terminate=True)), not a failure of the job's own.
                if not self.resume_later(ctx, job):
                    self.finish(ctx, job, JobStatus.LOST, error=_STOPPED)
                raise
            if isinstance(exc, job.retry_on) and self._retry_later(ctx, job, exc):
                return
            log.error("job %s (%s) failed", ctx.id, job.name, exc_info=exc)
            self.finish(ctx, job, JobStatus.FAILED, error=error_of(exc))
            if not isinstance(exc, Exception):
                raise
            return
        if ctx.cancelled.is_set():  # honoured the request by returning early
            self._end_stopped(ctx, job)
            return
        try:
            serialization.check_value(result, "result", f"job {job.name!r}")
        except (TypeError, RecursionError) as exc:
            self.finish(ctx, job, JobStatus.FAILED, error=error_of(exc))
        else:
            self.finish(ctx, job, JobStatus.SUCCEEDED, result=result)

    def _end_stopped(self, ctx: JobBuffer, job: TrackedJob) -> None:
        """The job stopped on its Event: cancelled, or failed if its deadline set it."""
        if ctx.timed_out:
            self.finish(ctx, job, JobStatus.FAILED, error=timeout_error(job.timeout))
        elif ctx.stop_reason == "shutdown" and self.resume_later(ctx, job):
            return  # a deploy: it runs again elsewhere, from its cursor
        else:
            self.finish(ctx, job, JobStatus.CANCELLED)

    # -- running again ---------------------------------------------------------

    def _count_child(self, parent: str, changes: dict[str, int], ended: str | None = None) -> None:
        try:
            self.records.count_child(parent, changes, ended)
        except StoreError as exc:  # counters are a view: a lost change is logged, not fatal
            log.warning("job %s: a child's change was not counted (%s)", parent, exc)

    def _uncount_run(self, doc: dict[str, Any]) -> None:
        """A child's run ended without the child ending (a retry, a resume): not running."""
        if doc.get("parent") is not None and doc.get("counted"):
            self._count_child(doc["parent"], {"running": -1})

    def cancel_children(self, job_id: str, depth: int = 0) -> None:
        """Cancel every unfinished child of the job (and theirs), wherever they run."""
        if depth > 10:  # a family deeper than this is a loop in someone's code
            return
        for child in self.records.unfinished_children(job_id):
            self.app_state.cancel_job(child, depth=depth + 1)

    def _retry_later(self, ctx: JobBuffer, job: TrackedJob, exc: BaseException) -> bool:
        """The run raised one of ``retry_on``: if retries are left, queue the job again
        after its backoff (due in the store, so a deploy meanwhile loses nothing)."""
        left = ctx.doc.get("retries_left") or 0
        if left <= 0 or ctx.cancelled.is_set() or not isinstance(exc, Exception):
            return False
        # Nothing keeps a waiting job's entries alive but their expiry: wait at most half of it.
        delay = job.retry_delay(job.retries - left + 1, self.app_state.settings.expires / 2)
        log.warning(
            "job %s (%s) failed (%s); retrying in %.1f s", ctx.id, job.name, error_of(exc), delay
        )
        return self.reschedule(  # a retry starts over: no progress, not resumed, no cursor
            ctx, job, time.time() + delay, error=error_of(exc), retries_left=left - 1, **_AFRESH
        )

    def resume_later(self, ctx: JobBuffer, job: TrackedJob) -> bool:
        """Its process stops (a deploy, a worker's shutdown): a ``resumable`` job with
        resumes left goes back to the queue, due now, to go on from its cursor elsewhere."""
        left = ctx.doc.get("resumes_left") or 0
        if left <= 0:
            return False
        return self.reschedule(ctx, job, time.time(), resumed=True, resumes_left=left - 1)

    def reschedule(self, ctx: JobBuffer, job: TrackedJob, at: float, **change: Any) -> bool:
        """End this run without ending the job: its document goes back to ``queued``, due
        at ``at``, listed for any instance or worker to take; this process forgets it. The
        job keeps its token, owner's slot and unique place. False (nothing changed) if the
        job ended meanwhile or the store is away: the caller ends it as it would have."""
        with ctx.write_turn():
            if ctx.finished:
                return False
            doc = ctx.snapshot()
            ran = dict(doc)  # as it ran: counted among its parent's running children or not
            doc.update(again(doc, at, **change))
            try:
                # Listed first: a process that dies between the two leaves a listed job that
                # is not waiting (dropped from the list at the next look), never a waiting
                # job nobody lists.
                self.records.schedule(ctx.id, at)
                self.records.save(doc, ctx.cancelled, job.never_expires)
            except Exception as exc:  # noqa: BLE001 - not run again: it ends as it would have
                log.warning("job %s: could not queue it to run again: %s", ctx.id, exc)
                return False
            ctx.seal_again(doc)
        self._uncount_run(ran)
        self._forget_local(ctx)
        send(signals.job_progress, self.app_state.app_ref(), job_id=ctx.id, document=doc)
        return True

    def _forget_local(self, ctx: JobBuffer) -> None:
        if self.jobs.remove(ctx.id) is None:
            return
        store = self.app_state.store
        store.release(self.records.job_key(ctx.id))
        if ctx.state is not None:
            store.release(self.app_state.state.key(ctx.state.type, ctx.id))
        ctx.done.set()

    def dispatch(self) -> None:
        """Take the jobs due to run again (retries, resumes, re-runs) that this process can
        run: each is taken by exactly one process (a conditional update), then runs here
        (thread pool) or goes on the engine's queue (RQ, Celery)."""
        if self.app_state.closed:  # shutting down: what it rescheduled is for others
            return
        records = self.records
        ids = records.due(DUE_BATCH)
        if not ids:
            return
        now = time.time()
        docs = records.documents(ids)
        gone = [
            j
            for j, d in zip(ids, docs)
            if d is None or not _waiting(d) or d.get("retry_at") is None
        ]
        if gone:
            records.unschedule(gone)
        for doc in docs:
            if doc is None or not _due(now)(doc):
                continue
            if not self.take_due(doc["id"], now):
                break  # this process is full: leave the rest to others

    def take_due(self, job_id: str, now: float) -> bool:
        """Take one due job; False when this process has no room for it now."""
        app_state = self.app_state
        executor = app_state.executor
        remote = executor if isinstance(executor, RemoteExecutor) else None
        if not remote and self.jobs.reserve(job_id, app_state.settings.max_queued) is None:
            return False
        change: dict[str, Any] = {"retry_at": None}
        if not remote:
            change["instance"] = self.records.instance_id
        try:
            doc = self.records.transition(job_id, _due(now), change)
        except BaseException:
            self.jobs.unqueue(job_id)
            raise
        self.records.unschedule([job_id])
        if doc is None:  # another process took it, or it was cancelled meanwhile
            self.jobs.unqueue(job_id)
            return True
        job = app_state.extension.registered_job(doc["name"])
        if job is None:
            self.jobs.unqueue(job_id)
            self.end_abandoned(job_id, f"no job named {doc['name']!r} is registered here", "failed")
            return True
        call = doc.get("call") or {}
        args, kwargs = tuple(call.get("args") or ()), dict(call.get("kwargs") or {})
        if remote is not None:
            self._requeue(remote, job, doc, args, kwargs)
            return True
        self._run_here(job, doc, args, kwargs)
        return True

    def _run_here(
        self, job: TrackedJob, doc: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """A due job this instance took: run it in the pool, as a started one."""
        app_state = self.app_state
        ctx = JobBuffer.adopt(doc)
        ctx.origin = doc.get("origin")
        key = self.records.job_key(ctx.id)
        app_state.store.hold(key, ctx.cancelled)
        if job.state_type is not None:
            app_state.state.create(
                job.state_type(),
                name=ctx.id,
                cancel_event=ctx.cancelled,
                never_expires=job.never_expires,
            )
            ctx.state = BoundState(app_state.state, job.state_type, ctx.id)
        self.jobs.add(ctx, job)
        try:
            app_state.executor.submit(ctx.id, lambda: self.run(ctx, job, args, kwargs))
        except RuntimeError:  # shutting down: back to the list for another instance
            if not self.resume_later(ctx, job) and not self.reschedule(ctx, job, time.time()):
                self.finish(ctx, job, JobStatus.LOST, error=_STOPPED)

    def _requeue(
        self,
        executor: RemoteExecutor,
        job: TrackedJob,
        doc: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """A due job taken for a worker: on the engine's queue again (its place counted)."""
        job_id = doc["id"]
        payload = {"v": PAYLOAD_VERSION, "id": job_id, "name": job.name, "args": list(args)}
        payload["kwargs"], payload["origin"] = kwargs, doc.get("origin")
        try:
            self.records.enter_queue(job_id, 2**31)  # admitted at its start: no limit now
            executor.enqueue(job_id, payload, job.timeout, job.queue, again=True)
        except StoreError as exc:  # the engine is away: due again in a moment
            log.warning("job %s: could not queue it again (%s); will retry", job_id, exc)
            at = time.time() + self.app_state.settings.heartbeat_interval
            if self.records.transition(job_id, _waiting, {"retry_at": at}) is not None:
                self.records.schedule(job_id, at)

    def sweep(self) -> None:
        """Watched jobs (resumable ones, children) whose instance died: a resumable one goes
        back to the queue, due now; any other ends ``lost`` (through :meth:`ended`: its
        parent counts it). Exactly one process moves each (a conditional update on the dead
        instance's name). Other jobs of a dead instance read ``lost`` without a write."""
        records = self.records
        if not records.store.ranks:  # no watch list: no resumable job or child was admitted
            return
        ids = records.watched(WATCH_BATCH)
        if not ids:
            return
        docs = records.documents(ids)
        done = [j for j, d in zip(ids, docs) if d is None or d.get("status") in FINAL]
        if done:
            records.unwatch(done)
        running = [d for d in docs if d is not None and d.get("status") in UNFINISHED]
        named = [d for d in running if d.get("instance") is not None]
        dead = records.dead(named) if named else set()
        for doc in named:
            if doc["instance"] in dead and not self.resume_lost(doc["id"], doc["instance"]):
                self.end_lost(doc["id"], doc["instance"])

    def end_lost(self, job_id: str, instance: str) -> None:
        """A watched job whose instance died, with no resume left: store it ``lost``."""
        error = {"type": "WorkerLost", "message": "the process running it stopped beating"}
        change = {"status": JobStatus.LOST.value, "error": error, "result": None, "reason": "lost"}
        doc = self.records.transition(
            job_id, lambda d: _unfinished(d) and d.get("instance") == instance, change
        )
        if doc is not None:
            log.warning("job %s: its instance %s stopped beating; recorded lost", job_id, instance)
            self.ended(doc)

    def resume_lost(
        self,
        job_id: str,
        instance: str | None,
        why: str = "",
        reporter: str | None = None,
        unchanged_since: float | None = None,
    ) -> bool:
        """Put a job whose process is gone back in the queue if it may resume; True if so.
        ``instance``: the dead instance the job names; else the engine's report (from
        ``reporter``, see :func:`_reported`; ``unchanged_since``: see :meth:`end_abandoned`)."""
        now = time.time()

        def gone(doc: dict[str, Any]) -> bool:
            return (
                doc.get("status") in UNFINISHED
                and (
                    _reported(doc, reporter)
                    if instance is None
                    else doc.get("instance") == instance
                )
                and (doc.get("resumes_left") or 0) > 0
                and _unchanged(doc, unchanged_since)
            )

        if instance is None:  # the engine's word (a killed work horse): most jobs cannot resume
            probe = self.records.documents([job_id])[0]
            if probe is None or not gone(probe):
                return False
        self.records.schedule(job_id, now)  # first: see reschedule()
        ran: list[dict[str, Any]] = []

        def resumed(d: dict[str, Any]) -> dict[str, Any]:
            ran[:] = [d]  # the last call is the one applied
            return again(d, now, resumed=True, resumes_left=d["resumes_left"] - 1)

        doc = self.records.transition(job_id, gone, resumed)
        if doc is None:
            return False
        self._uncount_run(ran[0])
        log.warning("job %s: its process stopped%s; it resumes on the next taker", job_id, why)
        return True

    def rerun(self, job_id: str) -> dict[str, Any]:
        """ "Try again": a ``failed``, ``cancelled`` or ``lost`` job runs again with the same
        arguments and token; the owner's quota and ``unique=`` apply as at ``start()``.
        Whose job it is, the caller checked."""
        doc = self.records.documents([job_id])[0]
        if doc is None:
            raise JobNotRetryable(f"job {job_id} is unknown or expired", _cannot())
        # A job whose process died is stored unfinished and read ``lost``: it may run again,
        # still holding its owner's slot and unique place.
        dead = None
        if _unfinished(doc) and doc.get("instance") is not None:
            shown = self.records.status(job_id)
            if shown is not None and shown["status"] == JobStatus.LOST:
                dead = doc["instance"]
        if doc["status"] not in RETRYABLE and dead is None:
            raise JobNotRetryable(
                f"job {job_id} is {doc['status']}: only a failed, cancelled or lost job runs again",
                translated()["tryAgainUnfinished"],
            )
        job = self.app_state.extension.registered_job(doc["name"])
        if job is not None and not job.try_again:
            raise JobNotRetryable(f"job {doc['name']!r} is declared try_again=False", _cannot())
        if job is None or "call" not in doc:
            raise JobNotRetryable(
                f"job {job_id} ({doc['name']}) cannot be run again here", _cannot()
            )
        doc_owner, unique = doc.get("owner"), doc.get("unique")
        if doc.get("parent") is not None or dead is not None:
            doc_owner = unique = None  # no slot or place of its own to take (again)
        if unique is not None:
            holder = self.records.claim_unique(unique, job_id)
            if holder is not None:
                raise JobNotRetryable(
                    f"another {doc['name']} job ({holder}) is unfinished; wait for it to end",
                    translated()["duplicate"],
                )
        limit = self.app_state.settings.max_jobs_per_owner
        try:
            if doc_owner is not None and not self.records.admit(doc_owner, job_id, limit):
                raise QuotaExceeded(
                    f"owner has {limit} unfinished jobs (ASYNCSTATE_MAX_JOBS_PER_OWNER)",
                    translated()["quotaExceeded"].format(limit=limit),
                )
            now = time.time()
            self.records.schedule(job_id, now)  # first: see reschedule()
            # One "Try again" wins (two tabs, two instances): it marks the ended document,
            # then replaces the entry, which also clears the stored cancel flag of the run
            # that was cancelled. A mark older than RERUN_MARK s is a taker that died.
            marked = self.records.transition(
                job_id,
                lambda d: (
                    (d.get("status") in RETRYABLE or (dead and d.get("instance") == dead))
                    and d.get("_rerun", 0) < now - RERUN_MARK
                ),
                {"_rerun": now},
            )
        except BaseException:
            if doc_owner is not None:
                self.records.discharge(doc_owner, job_id)
            if unique is not None:
                self.records.release_unique(unique, job_id)
            raise
        if marked is None:  # another "Try again" won: the places it holds are its own now
            raise JobNotRetryable(
                f"job {job_id} changed meanwhile", translated()["tryAgainUnfinished"]
            )
        new = {k: v for k, v in marked.items() if k not in ("_rerun", "_t")}
        new.update(
            again(marked, now, error=None, max_attempts=(marked.get("max_attempts") or 1) + 1)
        )
        new.update(_AFRESH)
        tracing.carry(new)  # runs in the trace of the request that asked, if traced
        self.records.create(new, None, job.never_expires)
        metrics.started(job.name)
        if marked.get("parent") is not None:  # a child again: unfinished, not ended
            parent = marked["parent"]
            if dead is None:
                self._count_child(parent, {marked["status"]: -1})
            else:
                self._uncount_run(marked)
            self.records.store.claim(
                self.records.family_key(parent), job_id, limit=2**31, keep=0, score=now
            )
        if (new.get("resumes_left") or 0) > 0:
            self.records.watch(job_id, new["created_at"])
        try:
            taken = self.take_due(job_id, now)  # here and now if there is room
        except StoreError:
            taken = False
        if not taken:  # the next look of this process's writer takes it (or another's)
            self.app_state.extension.waiting_again = True
            self.app_state.supervise()
        return new

    def end_cancelled_waiting(self) -> None:
        """Jobs cancelled while they wait for a pool thread end ``cancelled`` now, not when a
        thread frees up (which may be hours behind long jobs): their quota slot and unique
        place are free at once."""
        for local in self.jobs.waiting_cancelled():
            if self.jobs.unqueue(local.ctx.id):  # the pool thread did not take it meanwhile
                self.finish(local.ctx, local.job, JobStatus.CANCELLED)

    # -- ending ----------------------------------------------------------------

    def finish(
        self,
        ctx: JobBuffer,
        job: TrackedJob,
        status: str,
        *,
        result: Any = None,
        error: dict[str, str] | None = None,
    ) -> bool:
        """Store the final document, once; False if the job had ended already."""
        with ctx.write_turn():
            try:
                final = ctx.seal(status, result, error)
                if final is None:
                    return False
                self._save_final(ctx, job, final)
            except StoreError as exc:
                log.warning(
                    "job %s: final status %r not written yet (%s); retrying", ctx.id, status, exc
                )
                self.jobs.defer(ctx.id, final)  # type: ignore[arg-type]
                return True
            except Exception:  # whatever it was, the job still ends final
                log.exception(
                    "job %s: final document could not be stored; storing a minimal one", ctx.id
                )
                final = ctx.last_resort(status)
                try:
                    self.save(ctx, job, final)
                except Exception:  # noqa: BLE001 - the store is away: the writer retries it
                    self.jobs.defer(ctx.id, final)
                    return True
        self._final_stored(ctx, final)
        return True

    def save(self, ctx: JobBuffer, job: TrackedJob, doc: dict[str, Any]) -> None:
        """Write the document; if the store had lost the job's entry, prove we are alive."""
        if not self.records.save(doc, ctx.cancelled, job.never_expires):
            self.app_state.writer.beat()  # before anyone reads "lost" of a job that runs here

    def _save_final(self, ctx: JobBuffer, job: TrackedJob, final: dict[str, Any]) -> None:
        try:
            self.save(ctx, job, final)
        except StoreError:
            raise  # the store is away: the caller keeps the document and retries
        except Exception as exc:  # noqa: BLE001 - too large, not JSON, too deep: fail, saying why
            log.warning("job %s: final document cannot be stored: %r", ctx.id, exc)
            final.update(
                status=JobStatus.FAILED.value, result=None, error=error_of(exc), message=None
            )
            ctx.replace_final(final)
            self.save(ctx, job, final)

    def retry_final(self, local: Local) -> None:
        """The writer's retry of a final document that met an outage."""
        final = local.final
        assert final is not None
        try:
            self._save_final(local.ctx, local.job, final)
        except StoreError:
            return
        except Exception:  # still unstorable: store the minimal one next time
            log.exception("job %s: final document could not be stored", local.ctx.id)
            self.jobs.defer(local.ctx.id, local.ctx.last_resort(final.get("status", "failed")))
            return
        self._final_stored(local.ctx, final)

    def _final_stored(self, ctx: JobBuffer, final: dict[str, Any]) -> None:
        """The final document of a job of this process is stored: forget it here, once,
        then end it as every job ends (:meth:`ended`)."""
        if self.jobs.remove(ctx.id) is None:
            return  # retired already (a deferred final retried by two threads)
        store = self.app_state.store
        store.release(self.records.job_key(ctx.id))  # no cancel can matter any more
        if ctx.state is not None:
            store.release(self.app_state.state.key(ctx.state.type, ctx.id))
        ctx.done.set()
        self.ended(final, queued=False)
        self.app_state.supervise()

    def ended(self, doc: dict[str, Any], *, queued: bool = True) -> None:
        """A job's final document is stored: give back what it held in the store (its
        owner's quota slot, its unique place, with ``queued`` its place in the engine's
        queue) and send ``job_finished``. The one path of every job's end."""
        job_id, owner, unique = doc["id"], doc.get("owner"), doc.get("unique")
        records = self.records
        parent = doc.get("parent")
        if parent is not None:  # its parent's counts, not a quota slot of its own
            running = -1 if doc.get("counted") else 0
            self._count_child(parent, {doc["status"]: 1, "running": running}, ended=job_id)
        try:
            if owner is not None and parent is None:
                records.discharge(owner, job_id)
            if unique is not None:
                records.release_unique(unique, job_id)
            if queued:
                records.leave_queue(job_id)
            if doc.get("resumes_left") or parent is not None:
                records.unwatch([job_id])
            if doc.get("retry_at") is not None:  # ended while due to run again (a cancel)
                records.unschedule([job_id])
        except StoreError:  # the next start that needs the place finds it stale and frees it
            log.debug("job %s: quota slot, unique or queue place not freed yet", job_id)
        send(signals.job_finished, self.app_state.app_ref(), job_id=job_id, document=doc)

    # -- progress ----------------------------------------------------------------

    def flush_one(self, ctx: JobBuffer, job: TrackedJob, signal: bool = True) -> None:
        """Write the job's buffered progress, if any; a failed write is retried next time."""
        with ctx.write_turn():
            doc = ctx.take_dirty()
            if doc is None:
                return
            try:
                self.save(ctx, job, doc)
            except StoreError as exc:
                log.debug("job %s: progress not written (%s); will retry", ctx.id, exc)
                ctx.mark_dirty()
                return
        if signal:
            send(signals.job_progress, self.app_state.app_ref(), job_id=ctx.id, document=doc)

    def flush(self) -> None:
        """End waiting jobs that were cancelled, write every running job's buffered
        progress, then retry deferred final documents.

        The writer's tick takes the write turn of every running job, takes each dirty
        document, and sends them together (:meth:`~flask_asyncstate.records.JobRecords.save_many`:
        one pipeline on Redis, chunked at 1,000). Holding the turns while the batch is in
        flight keeps a job's final document from being overtaken by an older progress
        document. A failed batch is marked dirty again and retried at the next tick;
        anything but a store error falls back to one job at a time, so one bad document
        cannot hold back the others.
        """
        self.end_cancelled_waiting()
        written = self._flush_running(self.jobs.running())
        app = self.app_state.app_ref()
        for local, doc in written:
            send(signals.job_progress, app, job_id=local.ctx.id, document=doc)
        for local in self.jobs.deferred():
            self.retry_final(local)

    def _flush_running(self, running: list[Local]) -> list[tuple[Local, dict[str, Any]]]:
        if not running:
            return []
        with contextlib.ExitStack() as turns:
            batch: list[tuple[Local, dict[str, Any]]] = []
            for local in running:
                turns.enter_context(local.ctx.write_turn())
                doc = local.ctx.take_dirty()
                if doc is not None:
                    batch.append((local, doc))
            if not batch:
                return []
            try:
                saved = self.records.save_many(
                    [(doc, local.ctx.cancelled, local.job.never_expires) for local, doc in batch]
                )
            except StoreError as exc:
                log.debug("progress of %d jobs not written (%s); will retry", len(batch), exc)
                for local, _doc in batch:
                    local.ctx.mark_dirty()
                return []
            except Exception:  # noqa: BLE001 - a document that cannot be written: find it, one at a time
                return self._one_by_one(batch)
        if not all(saved):  # the store had lost entries: prove we are alive before anyone reads
            self.app_state.writer.beat()
        return batch

    def _one_by_one(
        self, batch: list[tuple[Local, dict[str, Any]]]
    ) -> list[tuple[Local, dict[str, Any]]]:
        """Inside the turns still held: save each document on its own; log and skip bad ones."""
        written = []
        for local, doc in batch:
            try:
                self.save(local.ctx, local.job, doc)
            except StoreError:
                local.ctx.mark_dirty()
            except Exception:
                log.exception("job %s: progress could not be written", local.ctx.id)
            else:
                written.append((local, doc))
        return written

    # -- deadlines -------------------------------------------------------------------

    def check_deadlines(self) -> None:
        """Set the Event of jobs past their deadline; end those still running after the
        grace (the writer calls this once per flush interval)."""
        now = time.monotonic()
        grace = self.app_state.settings.tuning.timeout_grace
        for local in self.jobs.running():
            ctx = local.ctx
            if ctx.deadline is None or now < ctx.deadline:
                continue
            if not ctx.timed_out:
                ctx.timed_out = True
                ctx.cancelled.set()
            elif now >= ctx.deadline + grace and not ctx.finished:
                self.finish(
                    ctx, local.job, JobStatus.FAILED, error=timeout_error(local.job.timeout)
                )

    # -- jobs that run in a worker process (RQ, Celery) ----------------------------------

    def _enqueue(
        self,
        executor: RemoteExecutor,
        job: TrackedJob,
        job_id: str,
        owner: str | None,
        args: Any,
        kwargs: Any,
        parent: str | None = None,
    ) -> JobHandle:
        """In the web process (or a parent job): admit the job, put it on the engine's queue."""
        app_state = self.app_state
        try:
            ctx = self.admit(job, job_id, owner, True, args, kwargs, parent)
        except Duplicate as found:  # unique=: that job is still unfinished
            return JobHandle(app_state, found.job_id, is_new=False)
        payload = {"v": PAYLOAD_VERSION, "id": job_id, "name": job.name, "args": list(args)}
        payload["kwargs"], payload["origin"] = kwargs, ctx.origin
        queued = ctx.snapshot()  # what is stored now: the worker's take needs no read first
        if len(serialization.dumps(queued)) <= _PAYLOAD_DOCUMENT:
            payload["doc"] = queued
        try:
            executor.enqueue(job_id, payload, job.timeout, job.queue)
        except BaseException:
            self.abandon(ctx, job, remote=True, listed=True)
            raise
        return JobHandle(app_state, job_id)

    def run_taken(self, payload: dict[str, Any]) -> None:
        """In a worker: take the job the payload names and run it to a stored final document."""
        if not isinstance(payload, dict) or payload.get("v") != PAYLOAD_VERSION:
            raise ValueError(
                f"not a flask-asyncstate job payload this version can run: {payload!r}"
            )
        app_state = self.app_state
        job_id, name = str(payload["id"]), str(payload["name"])
        job = app_state.extension.registered_job(name)
        if job is None:
            self.end_abandoned(
                job_id, f"no job named {name!r} is registered in this worker", "failed"
            )
            return
        app_state.ensure_running()  # this process's writer and heartbeat, before it names itself
        records, store = self.records, app_state.store
        key = records.job_key(job_id)
        event = threading.Event()
        store.hold(key, event)  # the take below sets it if a cancel is already stored
        queued = payload.get("doc")
        try:
            doc = records.transition(
                job_id,
                _waiting,
                {
                    "instance": app_state.instance_id,
                    "status": JobStatus.RUNNING.value,
                    "started_at": time.time(),
                },
                expect=queued if isinstance(queued, dict) else None,
                leave_queue=True,  # taken, or cancelled, taken or gone: it waits no more
            )
        except BaseException:
            store.release(key)
            raise
        if doc is None:
            store.release(key)
            log.info("job %s (%s): not run: it was cancelled, taken or is gone", job_id, name)
            return
        ctx = JobBuffer.adopt(doc)
        ctx.cancelled = event
        ctx.unique_key = doc.get("unique")  # given back at the end
        ctx.origin = payload.get("origin")
        if job.state_type is not None:  # created here, not at start: a long wait cannot expire it
            app_state.state.create(
                job.state_type(), name=job_id, cancel_event=event, never_expires=job.never_expires
            )
            ctx.state = BoundState(app_state.state, job.state_type, job_id)
        self.jobs.add(ctx, job)
        executor = app_state.executor
        if job.cancel_grace is not None and getattr(executor, "own_process", False):
            threading.Thread(
                target=self._force_after_grace,
                args=(ctx, job, job.cancel_grace),
                name=f"asyncstate-grace-{job_id[:8]}",
                daemon=True,
            ).start()
        self.run(ctx, job, tuple(payload["args"]), dict(payload["kwargs"]))
        self._await_final(ctx)

    def _force_after_grace(self, ctx: JobBuffer, job: TrackedJob, grace: float) -> None:
        """``cancel_grace=``: in a process that runs this job alone (an RQ work horse, a
        Celery prefork child), a job still running ``grace`` s after a cancel is ended: its
        final document (``cancelled``, ``reason: "forced"``) is stored, then the process
        exits, which stops the job's code where nothing else can. The engine replaces
        the process; its failure hooks find the document final and leave it."""
        try:
            while not ctx.done.is_set():
                if ctx.cancelled.wait(0.2):
                    break
            if ctx.done.wait(grace) or ctx.timed_out:  # stopped, or the deadline path has it
                return
            ctx.stop_reason = "forced"
            log.warning(
                "job %s (%s): still running %g s after its cancel; ending its process",
                ctx.id,
                job.name,
                grace,
            )
            if not self.finish(ctx, job, JobStatus.CANCELLED):
                return  # it ended by itself just now
            deadline = time.monotonic() + self.app_state.settings.tuning.shutdown_timeout
            while not ctx.done.is_set() and time.monotonic() < deadline:  # an outage: retry
                self.flush()
                ctx.done.wait(self.app_state.settings.flush_interval)
        except Exception:
            log.exception("job %s: forced cancel", ctx.id)
            return
        logging.shutdown()
        os._exit(1)  # the job's code cannot be stopped otherwise; the engine replaces us

    def _await_final(self, ctx: JobBuffer) -> None:
        """A final document that met an outage is retried here: a work horse exits right after."""
        settings = self.app_state.settings
        deadline = time.monotonic() + settings.tuning.shutdown_timeout
        while not ctx.done.is_set() and time.monotonic() < deadline:
            self.flush()
            ctx.done.wait(settings.flush_interval)
        if not ctx.done.is_set():
            log.error("job %s: final document not stored (the store is away)", ctx.id)

    def settle(self) -> bool:
        """Before a work horse exits: retry what the store has not taken (kept engine
        reports; final documents are :meth:`_await_final`'s) for up to the shutdown
        timeout. True if nothing is left, else the horse exits unclean and its worker
        ends the job."""
        settings = self.app_state.settings
        deadline = time.monotonic() + settings.tuning.shutdown_timeout
        while self._abandoned and time.monotonic() < deadline:
            if not self.retry_abandoned():
                time.sleep(settings.flush_interval)
        return not self.pending_ends()

    def cancel_queued(self, job_id: str) -> None:
        """After a cancel request: if the job still waits for a worker, end it ``cancelled``
        now and take it off the engine's queue; a worker that receives it anyway does not
        run it."""
        doc = self.records.transition(
            job_id,
            _waiting,
            {"status": JobStatus.CANCELLED.value, "instance": None, "reason": "user"},
        )
        if doc is None:
            return  # a worker has it (its Event is set) or it ended
        self.ended(doc)
        executor = self.app_state.executor
        if isinstance(executor, RemoteExecutor):
            executor.dequeue(job_id)

    def end_abandoned(
        self,
        job_id: str,
        why: str,
        status: str = JobStatus.LOST.value,
        reporter: str | None = None,
        unchanged_since: float | None = None,
    ) -> bool:
        """The engine gave up on a job without its code ending it (a killed worker, a hard
        time limit, a revoke): store a final document, unless one is stored already.
        ``reporter``: the instance id of the process reporting, when the job ran under it
        (see :func:`_reported`). A report that meets an outage is kept, with the time it
        was made, and a thread of its own tries it again (:meth:`retry_abandoned`): it
        then applies only to a document untouched since (``unchanged_since``). False if
        it was kept."""
        kinds = {"lost": "WorkerLost", "failed": "JobFailed", "cancelled": None}
        error = None if kinds[status] is None else {"type": kinds[status], "message": why[:2000]}
        if "time limit" in why:
            error = {"type": "JobTimeout", "message": why[:2000]}
        change = {
            "status": status,
            "error": error,
            "result": None,
            "reason": reason_of(status, error, None),
        }

        def ended(doc: dict[str, Any]) -> bool:
            return (
                _unfinished(doc)
                and (status != "lost" or _reported(doc, reporter))
                and _unchanged(doc, unchanged_since)
            )

        try:
            if status == JobStatus.LOST and self.resume_lost(
                job_id, None, f" ({why})", reporter, unchanged_since
            ):
                return True
            doc = self.records.transition(job_id, ended, change)
        except StoreError as exc:
            # Kept and tried again: nobody else may (a work horse runs under its worker's
            # live id, so no sweep would ever find the job lost).
            log.warning("job %s: could not record that it ended (%s): %s", job_id, why, exc)
            self._keep_abandoned(job_id, (why, status, reporter, unchanged_since or time.time()))
            return False
        if doc is not None:
            log.warning("job %s ended %s: %s", job_id, status, why)
            self.ended(doc)
        return True

    def _keep_abandoned(self, job_id: str, report: _Report) -> None:
        with self._abandoned_lock:
            self._abandoned.pop(job_id, None)
            self._abandoned[job_id] = report
            while len(self._abandoned) > ABANDONED_KEPT:  # the oldest report goes
                dropped = next(iter(self._abandoned))
                del self._abandoned[dropped]
                log.error("job %s: its end was not recorded (too many kept reports)", dropped)
            if self._retrier is None or not self._retrier.is_alive():
                self._retrier = threading.Thread(
                    target=self._retry_loop, name="asyncstate-abandoned", daemon=True
                )
                self._retrier.start()

    def _retry_loop(self) -> None:
        """Try the kept reports again until none is left, waiting longer while Redis is away
        (the thread ends when they are all stored, and starts again with the next one)."""
        wait = self.app_state.settings.flush_interval
        while True:
            time.sleep(wait)
            try:
                if self.retry_abandoned():
                    wait = self.app_state.settings.flush_interval
                else:
                    wait = min(wait * 2, 5.0)
            except Exception:  # the thread lives on; the next try may pass
                log.exception("flask-asyncstate: kept job ends not retried")
            with self._abandoned_lock:
                if not self._abandoned:
                    self._retrier = None
                    return

    def pending_ends(self) -> bool:
        """Whether this process holds ends the store has not taken yet (final documents that
        met an outage, kept engine reports)."""
        return bool(self.jobs.deferred() or self._abandoned)

    def retry_abandoned(self) -> bool:
        """Store the kept reports, oldest first; at the first outage the rest stay kept, in
        their order. True if all of them were stored."""
        with self._abandoned_lock:
            reports = list(self._abandoned.items())
        for job_id, (why, status, reporter, at) in reports:
            with self._abandoned_lock:
                if self._abandoned.get(job_id) != (why, status, reporter, at):
                    continue  # stored meanwhile, or replaced by a newer report
                del self._abandoned[job_id]
            try:
                if not self.end_abandoned(job_id, why, status, reporter, at):
                    with self._abandoned_lock:  # kept again: back in its place, the oldest
                        kept = self._abandoned.pop(job_id, None)
                        if kept is not None:
                            self._abandoned = {job_id: kept, **self._abandoned}
                    return False  # Redis is still away
            except Exception:  # one bad report does not hold back the others
                log.exception("job %s: its kept end could not be recorded", job_id)
        return True

    def after_fork(self) -> None:
        """A forked child keeps none of its parent's reports: they are the parent's to store."""
        self._abandoned = {}
        self._abandoned_lock = threading.Lock()
        self._retrier = None

    def end_vanished(self, job_id: str) -> None:
        """A job still waiting whose entry the engine no longer has (``rq empty``, a purged
        broker, a Redis restart without persistence) can never run: it ends ``lost``, and
        its quota slot, unique place and queue place are free again."""
        error = {"type": "WorkerLost", "message": "its entry vanished from the engine's queue"}
        change = {"status": JobStatus.LOST.value, "error": error, "result": None, "reason": "lost"}
        try:
            doc = self.records.transition(job_id, _waiting, change)
        except StoreError:
            return  # the next check tries again
        if doc is not None:
            log.warning("job %s: %s; recorded lost", job_id, error["message"])
            self.ended(doc)
