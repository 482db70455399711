"""Jobs that run in a worker process (RQ, Celery): taking one from the queue, running it,
cancelling it while it waits, and ending it when the engine gave up on it.

A queued job names no ``instance``. The worker that takes it, and a web
instance cancelling it while it waits, both change its document with one
conditional update (:meth:`~flask_asyncstate.records.JobRecords.transition`),
so exactly one of them wins: a cancelled job never runs, a taken one is
cancelled through its Event like any running job. From then on the worker runs
it with the same lifecycle as the thread pool: its writer flushes progress and
beats a heartbeat for that process, its store listener sets the Event.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from . import signals
from .context import BoundState, JobContext
from .errors import Duplicate, StoreError
from .executors.remote import PAYLOAD_VERSION
from .jobs import JobHandle
from .records import reason_of
from .signals import send
from .status import UNFINISHED, JobStatus

if TYPE_CHECKING:
    from .registry import JobSpec
    from .runtime import Runtime

log = logging.getLogger("flask_asyncstate")


def _waiting(doc: dict[str, Any]) -> bool:
    return doc.get("status") == JobStatus.QUEUED and doc.get("instance") is None


def _unfinished(doc: dict[str, Any]) -> bool:
    return doc.get("status") in UNFINISHED


def start(
    app_state: Runtime, job: JobSpec, job_id: str, owner: str | None, args: Any, kwargs: Any
) -> JobHandle:
    """In the web process: admit the job and put it on the engine's queue."""
    lifecycle = app_state.lifecycle
    try:
        ctx = lifecycle.admit(job, job_id, owner, remote=True)  # type: ignore[attr-defined]
    except Duplicate as found:  # unique=: that job is still unfinished
        return JobHandle(app_state, found.job_id, is_new=False)
    payload = {"v": PAYLOAD_VERSION, "id": job_id, "name": job.name, "args": list(args)}
    payload["kwargs"], payload["origin"] = kwargs, ctx.origin
    try:
        app_state.executor.enqueue(job_id, payload, job.timeout)  # type: ignore[attr-defined]
    except BaseException:
        lifecycle.abandon(ctx, job, remote=True)  # type: ignore[attr-defined]
        raise
    return JobHandle(app_state, job_id)


def run(app_state: Runtime, payload: dict[str, Any]) -> None:
    """In a worker: take the job the payload names and run it to a stored final document."""
    if not isinstance(payload, dict) or payload.get("v") != PAYLOAD_VERSION:
        raise ValueError(f"not a flask-asyncstate job payload this version can run: {payload!r}")
    job_id, name = str(payload["id"]), str(payload["name"])
    job = app_state.extension.registered_job(name)  # type: ignore[attr-defined]
    if job is None:
        end_abandoned(
            app_state, job_id, f"no job named {name!r} is registered in this worker", "failed"
        )
        return
    app_state.ensure_running()  # this process's writer and heartbeat, before it names itself
    records, store = app_state.records, app_state.store
    key = records.job_key(job_id)
    event = threading.Event()
    store.hold(key, event)  # the take below sets it if a cancel is already stored
    try:
        doc = records.transition(
            job_id,
            _waiting,
            {
                "instance": app_state.instance_id,
                "status": JobStatus.RUNNING.value,
                "started_at": time.time(),
            },
        )
    except BaseException:
        store.release(key)
        raise
    if doc is None:
        store.release(key)
        log.info("job %s (%s): not run: it was cancelled, taken or is gone", job_id, name)
        return
    ctx = JobContext.adopt(doc)
    ctx.cancelled = event
    ctx.unique_key = records.unique_key(name, job.unique, ctx.owner)  # given back at the end
    ctx.origin = payload.get("origin")
    try:
        records.leave_queue(job_id)
    except StoreError:
        pass  # the next full queue finds it taken and frees its place
    if job.state_type is not None:  # created here, not at start: a long wait cannot expire it
        app_state.state.create(
            job.state_type(), name=job_id, cancel_event=event, never_expires=job.never_expires
        )
        ctx.state = BoundState(app_state.state, job.state_type, job_id)
    app_state.registry.add(ctx, job)
    app_state.lifecycle.run(ctx, job, tuple(payload["args"]), dict(payload["kwargs"]))  # type: ignore[attr-defined]
    _await_final(app_state, ctx)


def _await_final(app_state: Runtime, ctx: JobContext) -> None:
    """A final document that met an outage is retried here: a work horse exits right after."""
    settings = app_state.settings
    deadline = time.monotonic() + settings.tuning.shutdown_timeout
    while not ctx.done.is_set() and time.monotonic() < deadline:
        app_state.lifecycle.flush()
        ctx.done.wait(settings.flush_interval)
    if not ctx.done.is_set():
        log.error("job %s: final document not stored; readers will see it lost", ctx.id)


def cancel_queued(app_state: Runtime, job_id: str) -> None:
    """After a cancel request: if the job still waits for a worker, end it ``cancelled`` now
    and take it off the engine's queue; a worker that receives it anyway does not run it."""
    doc = app_state.records.transition(
        job_id, _waiting, {"status": JobStatus.CANCELLED.value, "instance": None, "reason": "user"}
    )
    if doc is None:
        return  # a worker has it (its Event is set) or it ended
    _ended(app_state, doc)
    app_state.executor.dequeue(job_id)  # type: ignore[attr-defined]


def end_abandoned(
    app_state: Runtime, job_id: str, why: str, status: str = JobStatus.LOST.value
) -> None:
    """The engine gave up on a job without its code ending it (a killed worker, a hard time
    limit, a revoke): store a final document, unless one is stored already."""
    kinds = {"lost": "WorkerLost", "failed": "JobFailed", "cancelled": None}
    error = None if kinds[status] is None else {"type": kinds[status], "message": why[:2000]}
    if "time limit" in why:
        error = {"type": "JobTimeout", "message": why[:2000]}
    try:
        doc = app_state.records.transition(
            job_id,
            _unfinished,
            {
                "status": status,
                "error": error,
                "result": None,
                "reason": reason_of(status, error, None),
            },
        )
    except StoreError as exc:
        log.warning("job %s: could not record that it ended (%s): %s", job_id, why, exc)
        return
    if doc is not None:
        log.warning("job %s ended %s: %s", job_id, status, why)
        _ended(app_state, doc)


def end_vanished(app_state: Runtime, job_id: str) -> None:
    """A job still waiting whose entry the engine no longer has (``rq empty``, a purged
    broker, a Redis restart without persistence) can never run: it ends ``lost``, and its
    quota slot, unique place and queue place are free again."""
    error = {"type": "WorkerLost", "message": "its entry vanished from the engine's queue"}
    change = {"status": JobStatus.LOST.value, "error": error, "result": None, "reason": "lost"}
    try:
        doc = app_state.records.transition(job_id, _waiting, change)
    except StoreError:
        return  # the next check tries again
    if doc is not None:
        log.warning("job %s: %s; recorded lost", job_id, error["message"])
        _ended(app_state, doc)


def _ended(app_state: Runtime, doc: dict[str, Any]) -> None:
    """A final document stored outside the lifecycle: free the owner's slot and the queue place."""
    job_id, owner = doc["id"], doc.get("owner")
    records = app_state.records
    job = app_state.extension.registered_job(doc.get("name"))  # type: ignore[attr-defined]
    unique = records.unique_key(doc.get("name"), job.unique, owner) if job else None
    try:
        if owner is not None:
            records.discharge(owner, job_id)
        if unique is not None:
            records.release_unique(unique, job_id)
        records.leave_queue(job_id)
    except StoreError:  # stale entries are freed when their owner or the queue is full
        log.debug("job %s: quota slot or queue place not freed yet", job_id)
    send(signals.job_finished, app_state.app_ref(), job_id=job_id, document=doc)
