"""Runs tracked jobs for one app: the thread pool, the writer thread, heartbeats and shutdown.

Path of a job: ``start()`` writes the ``queued`` document and submits
``_run`` to the pool; ``_run`` writes ``running``, calls the function in an
app context, and ``_finish`` writes the final document synchronously under
the job's write lock, so no buffered progress can land after it. The writer
thread flushes dirty progress every ``FLUSH_INTERVAL``, retries final writes
that met a store outage, and beats this instance's heartbeat.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING, Any

from flask import Flask, has_request_context, session

from . import serialization, signals, tokens
from .config import Settings
from .errors import JobCancelled, QuotaExceeded, StoreError
from .jobs import BoundState, JobContext, JobHandle
from .records import (
    CANCELLED,
    FAILED,
    LOST,
    RUNNING,
    SUCCEEDED,
    UNFINISHED,
    JobRecords,
    new_document,
)
from .state import StateAPI
from .stores.base import Store

if TYPE_CHECKING:
    from .jobs import TrackedJob

log = logging.getLogger("flask_asyncstate")

_MAX_ERROR_MESSAGE = 2000


def _error(exc: BaseException) -> dict[str, str]:
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a failing __str__ must still give a final document
        message = f"<{type(exc).__name__} whose message could not be read>"
    return {"type": type(exc).__name__, "message": message[:_MAX_ERROR_MESSAGE]}


class JobRunner:
    """Everything flask-asyncstate keeps per app: settings, store, state API, pool, threads."""

    def __init__(self, app: Flask, settings: Settings, store: Store) -> None:
        self._app_ref = weakref.ref(app)
        self.settings = settings
        self.store = store
        self.state = StateAPI(store)
        self.records = JobRecords(store, _new_instance_id(), settings.heartbeat_interval)
        self.signer = tokens.TokenSigner(app.config, settings.token_max_age)
        self._active: dict[str, tuple[JobContext, TrackedJob]] = {}
        self._pending: dict[str, tuple[JobContext, TrackedJob, dict[str, Any]]] = {}
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._writer: threading.Thread | None = None
        self._pid = os.getpid()  # a forked child sees another pid and renews its instance id
        self._threads_lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._started_at = time.time()
        _register_exit(self)

    @property
    def instance_id(self) -> str:
        """This process's id in heartbeats and job documents (renewed in a forked child)."""
        return self.records.instance_id

    @property
    def app(self) -> Flask:
        app = self._app_ref()
        if app is None:
            raise RuntimeError("the Flask app of this job runner was garbage-collected")
        return app

    # -- starting ------------------------------------------------------------

    def start(self, job: TrackedJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> JobHandle:
        self._ensure_threads()
        in_request = has_request_context()
        known: list[tuple[str, dict[str, Any] | None]] = []
        if in_request:
            ids = tokens.session_job_ids(session)
            known = list(zip(ids, self.records.statuses(ids))) if ids else []
            unfinished = sum(1 for _, d in known if d is not None and d["status"] in UNFINISHED)
            if unfinished >= self.settings.max_jobs_per_session:
                raise QuotaExceeded(
                    f"this session already has {unfinished} unfinished jobs"
                    f" (ASYNCSTATE_MAX_JOBS_PER_SESSION={self.settings.max_jobs_per_session});"
                    " wait for one to finish or cancel one"
                )
        job_id = secrets.token_hex(16)
        ctx = JobContext(job_id, job.name, new_document(job_id, job.name, self.instance_id))
        if job.state_type is not None:
            self.state.create(
                job.state_type(), name=job_id, cancel_event=ctx.cancelled,
                never_expires=job.never_expires,
            )
            ctx.state = BoundState(self.state, job.state_type, job_id)
        self.records.create(ctx.snapshot(), ctx.cancelled, job.never_expires)
        with self._lock:
            self._active[job_id] = (ctx, job)
        if in_request:
            tokens.bind(session, job_id, known, self.settings.max_jobs_per_session)
        if self.settings.eager:
            self._run(ctx, job, args, kwargs)
        else:
            assert self._pool is not None
            try:
                future = self._pool.submit(self._run, ctx, job, args, kwargs)
            except RuntimeError:  # shut down between our check and the submit
                self._finish(ctx, job, CANCELLED)
                raise RuntimeError("flask-asyncstate was shut down; no new jobs can start") from None
            with self._lock:
                if job_id in self._active:
                    self._futures[job_id] = future
        return self.handle(job_id)  # the token is signed when first asked for

    def handle(self, job_id: str) -> JobHandle:
        return JobHandle(self, job_id)

    def cancel(self, job_id: str) -> bool:
        """Store the cancel request; the holder's Event is set via pub/sub (or its next write)."""
        return self.store.cancel(self.records.job_key(job_id))

    def local_context(self, job_id: str) -> JobContext | None:
        with self._lock:
            found = self._active.get(job_id) or self._pending.get(job_id)
        return found[0] if found else None

    # -- running -----------------------------------------------------------

    def _run(self, ctx: JobContext, job: TrackedJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            self._run_job(ctx, job, args, kwargs)
        finally:
            if not ctx._finished:  # whatever went wrong above, nothing stays running
                self._finish(ctx, job, FAILED, error={
                    "type": "InternalError", "message": "the job ended without a final status",
                })

    def _run_job(
        self, ctx: JobContext, job: TrackedJob, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if not ctx.cancelled.is_set():
            self._deliver_stored_cancel(ctx)
        if ctx.cancelled.is_set():  # cancelled while queued: never starts
            self._finish(ctx, job, CANCELLED)
            return
        with ctx._lock:
            ctx._doc["status"] = RUNNING
            ctx._doc["updated_at"] = time.time()
            ctx._dirty = True
        self._flush_one(ctx, job, signal=False)
        _send(signals.job_started, self._app_ref(), job_id=ctx.id, document=ctx.snapshot())
        try:
            with self.app.app_context():
                result = job.fn(ctx, *args, **kwargs)
        except JobCancelled:
            self._finish(ctx, job, CANCELLED)
            return
        except BaseException as exc:
            log.error("job %s (%s) failed", ctx.id, job.name, exc_info=exc)
            self._finish(ctx, job, FAILED, error=_error(exc))
            if not isinstance(exc, Exception):
                raise
            return
        if ctx.cancelled.is_set():  # honoured the request by returning early
            self._finish(ctx, job, CANCELLED)
            return
        try:
            serialization.check_value(result, "result", f"job {job.name!r}")
        except (TypeError, RecursionError) as exc:
            self._finish(ctx, job, FAILED, error=_error(exc))
        else:
            self._finish(ctx, job, SUCCEEDED, result=result)

    def _deliver_stored_cancel(self, ctx: JobContext) -> None:
        try:
            self.store.read(self.records.job_key(ctx.id))  # sets the Event if the flag is set
        except StoreError:
            pass  # the Event still works; the writer will catch up

    def _finish(
        self, ctx: JobContext, job: TrackedJob, status: str, *,
        result: Any = None, error: dict[str, str] | None = None,
    ) -> bool:
        """Write the final document, once; later flushes of this job are skipped."""
        with ctx._write_lock:
            if ctx._finished:
                return False
            ctx._finished = True
            with ctx._lock:
                ctx._doc.update(status=status, result=result, error=error, updated_at=time.time())
                final = ctx._snapshot_locked()
            try:
                self._save_final(ctx, job, final)
            except StoreError as exc:
                log.warning("job %s: final status %r not written yet (%s); retrying", ctx.id, status, exc)
                with self._lock:
                    self._pending[ctx.id] = (ctx, job, final)
                    self._active.pop(ctx.id, None)
                return True
        self._retire(ctx, final)
        return True

    def _save(self, ctx: JobContext, job: TrackedJob, doc: dict[str, Any]) -> None:
        if not self.records.save(doc, ctx.cancelled, job.never_expires):
            self._beat()  # the store lost its data: prove we are alive before anyone reads "lost"

    def _save_final(self, ctx: JobContext, job: TrackedJob, final: dict[str, Any]) -> None:
        try:
            self._save(ctx, job, final)
        except StoreError:
            raise  # the store is away: the caller keeps the document and retries
        except Exception as exc:  # noqa: BLE001 - too large, not JSON, too deep: fail, saying why
            log.warning("job %s: final document cannot be stored: %r", ctx.id, exc)
            final.update(status=FAILED, result=None, error=_error(exc), message=None)
            with ctx._lock:
                ctx._doc.update(final)
            self._save(ctx, job, final)

    def _retire(self, ctx: JobContext, final: dict[str, Any]) -> None:
        """The final document is stored: forget the job here, once."""
        with self._lock:
            found = self._active.pop(ctx.id, None) or self._pending.pop(ctx.id, None)
            self._futures.pop(ctx.id, None)
        if found is None:
            return  # retired already (a pending final retried by two threads)
        self.store.release(self.records.job_key(ctx.id))  # no cancel can matter any more
        if ctx.state is not None:
            self.store.release(self.state.key(ctx.state.type, ctx.id))
        ctx._done.set()
        _send(signals.job_finished, self._app_ref(), job_id=ctx.id, document=final)

    # -- the writer thread -----------------------------------------------------

    def _ensure_threads(self) -> None:
        """Start the pool and writer on first use, and again in a forked child."""
        with self._threads_lock:
            if self._closed:
                raise RuntimeError("flask-asyncstate was shut down; no new jobs can start")
            if self._pid == os.getpid() and self._writer is not None and self._writer.is_alive():
                return
            if self._pid != os.getpid():
                # a forked child (gunicorn --preload): its own id, so its death is its own
                self.records.instance_id = _new_instance_id()
                self._lock = threading.Lock()
                self._active.clear()
                self._futures.clear()
                self._pending.clear()
                self._pid = os.getpid()
            self._stop.clear()
            self._pool = ThreadPoolExecutor(
                max_workers=self.settings.max_workers, thread_name_prefix="asyncstate-job"
            )
            self._beat()  # before any job exists, so no reader sees it as lost
            self._writer = threading.Thread(
                target=self._write_loop, name="asyncstate-writer", daemon=True
            )
            self._writer.start()

    def _write_loop(self) -> None:
        # Beats also keep running jobs' entries alive (polls of running jobs do not restart
        # their expiry), so beat at least three times per ASYNCSTATE_EXPIRES.
        beat_every = min(self.settings.heartbeat_interval, self.settings.expires / 3)
        next_beat = time.monotonic() + beat_every
        while not self._stop.wait(self.settings.flush_interval):
            if self._app_ref() is None:  # the app is gone (a test, a factory): so are we
                self.shutdown(0)
                return
            try:
                self.flush()
            except Exception:  # the writer must outlive any single failure
                log.exception("flask-asyncstate writer: flush failed")
            if time.monotonic() >= next_beat:
                try:
                    self._beat()
                except StoreError as exc:
                    log.warning("asyncstate heartbeat failed: %s", exc)
                    continue  # try again at the next tick: Redis may be back any moment
                next_beat = time.monotonic() + beat_every

    def flush(self) -> None:
        """Write buffered progress and retry pending final documents now."""
        with self._lock:
            active = list(self._active.values())
            pending = list(self._pending.values())
        for ctx, job in active:
            try:
                self._flush_one(ctx, job)
            except Exception:  # one job's bad document must not stop the others' progress
                log.exception("job %s: progress could not be written", ctx.id)
        for ctx, job, final in pending:
            try:
                self._save_final(ctx, job, final)
            except StoreError:
                continue
            self._retire(ctx, final)

    def _flush_one(self, ctx: JobContext, job: TrackedJob, signal: bool = True) -> None:
        with ctx._write_lock:
            if ctx._finished:
                return
            with ctx._lock:
                if not ctx._dirty:
                    return
                doc = ctx._snapshot_locked()
                ctx._dirty = False
            try:
                self._save(ctx, job, doc)
            except StoreError as exc:
                log.debug("job %s: progress not written (%s); will retry", ctx.id, exc)
                with ctx._lock:
                    ctx._dirty = True
                return
        if signal:
            _send(signals.job_progress, self._app_ref(), job_id=ctx.id, document=doc)

    def _beat(self) -> None:
        with self._lock:
            running = list(self._active)
            states = [
                self.state.key(ctx.state.type, ctx.id)
                for ctx, _job in self._active.values() if ctx.state is not None
            ]
        info = {
            "id": self.instance_id, "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": self._started_at, "beat_at": time.time(), "jobs": running,
        }
        if not self.records.beat(info, self.settings.heartbeat_interval, running, states):
            with self._lock:
                active = [ctx for ctx, _job in self._active.values()]
            for ctx in active:  # the store lost our entries: write them again on the next flush
                with ctx._lock:
                    ctx._dirty = True

    # -- shutdown ----------------------------------------------------------------

    def shutdown(self, timeout: float | None = None) -> None:
        """Cancel running jobs, wait up to ``timeout`` s, write ``lost`` for any still running."""
        with self._threads_lock:
            if self._closed:
                return
            self._closed = True
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        with self._lock:
            active = list(self._active.values())
            futures = dict(self._futures)
        for ctx, _job in active:
            ctx.cancelled.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for job_id, future in futures.items():
            if future.cancelled():  # never started: honour the cancel now
                found = self._active.get(job_id)
                if found:
                    self._finish(found[0], found[1], CANCELLED)
        running = [f for f in futures.values() if not f.cancelled()]
        if running:
            wait_futures(running, timeout=timeout)
        with self._lock:
            leftover = list(self._active.values())
        for ctx, job in leftover:
            self._finish(ctx, job, LOST, error={
                "type": "Shutdown", "message": "the instance running this job shut down",
            })
        self._stop.set()
        self.flush()  # last chance for final documents that met an outage
        if self._writer is not None and self._writer is not threading.current_thread():
            self._writer.join(timeout=2)
        try:
            self.records.retire()
        except StoreError:
            pass
        self.store.close()  # stops its listener; a client passed to init_app stays open


def _new_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _send(signal: Any, app: Flask | None, **kwargs: Any) -> None:
    """Send a signal; a failing receiver is logged, and never stops a job or the writer."""
    if app is None:
        return
    try:
        signal.send(app, **kwargs)
    except Exception:
        log.exception("a receiver of flask-asyncstate's %r signal failed", signal.name)


def _register_exit(runner: JobRunner) -> None:
    """Shut down before the interpreter joins pool threads (which would wait for jobs forever).

    ``threading._register_atexit`` hooks run before concurrent.futures' own
    exit hook, whereas ``atexit`` hooks run after it.
    """
    ref = weakref.ref(runner)

    def on_exit() -> None:
        alive = ref()
        if alive is not None:
            alive.shutdown()

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(on_exit)
            return
    except RuntimeError:
        return  # the interpreter is already shutting down
    import atexit

    atexit.register(on_exit)
