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
import math
import os
import secrets
import socket
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING, Any

from flask import Flask, has_request_context

from . import serialization, signals, tokens
from .config import Settings
from .errors import JobCancelled, QueueFull, QuotaExceeded, StoreError
from .jobs import BoundState, JobContext, JobHandle
from .records import (
    CANCELLED,
    FAILED,
    LOST,
    RUNNING,
    SUCCEEDED,
    JobRecords,
    new_document,
)
from .state import StateAPI
from .stores.base import Store
from .streams import StreamSlots

if TYPE_CHECKING:
    from .jobs import TrackedJob

log = logging.getLogger("flask_asyncstate")

_MAX_ERROR_MESSAGE = 2000


def _error(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, StoreError):  # host, port, command: for the log, not for the user
        return {"type": type(exc).__name__,
                "message": "the job store failed while the job ran; the server log has details"}
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a failing __str__ must still give a final document
        message = f"<{type(exc).__name__} whose message could not be read>"
    return {"type": type(exc).__name__, "message": message[:_MAX_ERROR_MESSAGE]}


def _last_resort(ctx: JobContext, status: str) -> dict[str, Any]:
    """A final document built only from values known to encode, for when the real one cannot."""
    now = time.time()
    doc = ctx._doc
    created = doc.get("created_at")
    return {
        "id": ctx.id, "name": str(ctx.name)[:200].encode("utf-8", "replace").decode("utf-8"), "status": FAILED if status != LOST else LOST,
        "current": 0, "total": None, "percent": None, "message": None, "result": None,
        "error": {"type": "InternalError",
                  "message": "the job's final document could not be stored"},
        "created_at": created if isinstance(created, float) else now, "updated_at": now,
        "instance": str(doc.get("instance")), "owner": ctx.owner,
    }


class JobRunner:
    """Everything flask-asyncstate keeps per app: settings, store, state API, pool, threads."""

    def __init__(self, app: Flask, settings: Settings, store: Store) -> None:
        self._app_ref = weakref.ref(app)
        self.settings = settings
        self.store = store
        self.state = StateAPI(store)
        self.records = JobRecords(store, _new_instance_id(), settings.heartbeat_interval)
        self.signer = tokens.TokenSigner(app.config, settings.token_max_age)
        #: Open event streams of this process, bounded in all and per owner.
        self.streams = StreamSlots(
            settings.max_streams, settings.max_streams_per_session,
            lifetime=settings.sse_max_age + 2 * settings.sse_ping_interval + 5,
        )
        self._active: dict[str, tuple[JobContext, TrackedJob]] = {}
        self._queued: set[str] = set()  # admitted, not yet taken by a pool thread
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
    def retry_after(self) -> int:
        """Seconds a client should wait after a 503 of the store: when the circuit probes again."""
        return max(1, math.ceil(self.settings.circuit_reset))

    @property
    def app(self) -> Flask:
        app = self._app_ref()
        if app is None:
            raise RuntimeError("the Flask app of this job runner was garbage-collected")
        return app

    # -- starting ------------------------------------------------------------

    def start(self, job: TrackedJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> JobHandle:
        """Admit, record and submit a job; nothing is left behind when it is refused."""
        self._ensure_threads()
        owner = None
        if has_request_context():
            self.signer.require_key()  # a job nobody could be given a token for is never made
            owner = tokens.request_owner(create=True)
        job_id = secrets.token_hex(16)
        with self._lock:
            if len(self._queued) >= self.settings.max_queued:
                raise QueueFull(
                    f"{len(self._queued)} jobs are already waiting on this server; try again shortly"
                )
            self._queued.add(job_id)
        try:
            ctx = self._admit(job, job_id, owner)
        except BaseException:
            with self._lock:
                self._queued.discard(job_id)
            raise
        with self._lock:
            self._active[job_id] = (ctx, job)
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

    def _admit(self, job: TrackedJob, job_id: str, owner: str | None) -> JobContext:
        """Write the queued document, claim the owner's quota slot, create the job's state."""
        ctx = JobContext(job_id, job.name, new_document(job_id, job.name, self.instance_id, owner))
        ctx.owner = owner
        self.records.create(ctx.snapshot(), ctx.cancelled, job.never_expires)
        try:
            limit = self.settings.max_jobs_per_session
            if owner is not None and not self.records.admit(owner, job_id, limit):
                raise QuotaExceeded(
                    f"You already have {limit} jobs in progress. Wait for one to finish,"
                    " or cancel one, then try again."
                )
            if job.state_type is not None:
                self.state.create(
                    job.state_type(), name=job_id, cancel_event=ctx.cancelled,
                    never_expires=job.never_expires,
                )
                ctx.state = BoundState(self.state, job.state_type, job_id)
        except BaseException:
            self._abandon(ctx, job)
            raise
        return ctx

    def _abandon(self, ctx: JobContext, job: TrackedJob) -> None:
        """Undo a start that did not go through (best effort: what stays behind expires)."""
        try:
            self.records.remove(ctx.id)
            if ctx.owner is not None:
                self.records.discharge(ctx.owner, ctx.id)
            if job.state_type is not None:
                self.state.remove(job.state_type, name=ctx.id)
        except StoreError as exc:
            log.warning("job %s: a refused start left entries behind until they expire (%s)",
                        ctx.id, exc)

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
        with self._lock:
            self._queued.discard(ctx.id)
        self._supervise()
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
            try:
                with ctx._lock:
                    ctx._doc.update(status=status, result=result, error=error, updated_at=time.time())
                    final = ctx._snapshot_locked()
                self._save_final(ctx, job, final)
            except StoreError as exc:
                log.warning("job %s: final status %r not written yet (%s); retrying", ctx.id, status, exc)
                with self._lock:
                    self._pending[ctx.id] = (ctx, job, final)
                    self._active.pop(ctx.id, None)
                return True
            except Exception:
                log.exception("job %s: final document could not be stored; storing a minimal one",
                              ctx.id)
                final = _last_resort(ctx, status)
                try:
                    self._save(ctx, job, final)
                except Exception:  # noqa: BLE001 - the store is away: the writer retries it
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
        if ctx.owner is not None:
            try:
                self.records.discharge(ctx.owner, ctx.id)
            except StoreError:  # the owner's next start finds the slot stale and frees it
                log.debug("job %s: quota slot not freed yet", ctx.id)
        self.store.release(self.records.job_key(ctx.id))  # no cancel can matter any more
        if ctx.state is not None:
            self.store.release(self.state.key(ctx.state.type, ctx.id))
        ctx._done.set()
        _send(signals.job_finished, self._app_ref(), job_id=ctx.id, document=final)
        self._supervise()

    # -- the writer thread -----------------------------------------------------

    def _ensure_threads(self) -> None:
        """Start the pool and writer on first use, and again in a forked child."""
        with self._threads_lock:
            if self._closed:
                raise RuntimeError("flask-asyncstate was shut down; no new jobs can start")
            if self._pid == os.getpid() and self._writer is not None and self._writer.is_alive():
                return
            forked = self._pid != os.getpid()
            if forked:
                # a forked child (gunicorn --preload): its own id, so its death is its own
                self.records.instance_id = _new_instance_id()
                self._lock = threading.Lock()
                self._active.clear()
                self._futures.clear()
                self._pending.clear()
                self._queued.clear()
                self._pid = os.getpid()
            self._stop.clear()
            if self._pool is None or forked:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.max_workers, thread_name_prefix="asyncstate-job"
                )
            self._beat()  # before any job exists, so no reader sees it as lost
            self._writer = threading.Thread(
                target=self._write_loop, name="asyncstate-writer", daemon=True
            )
            self._writer.start()

    def _supervise(self) -> None:
        """Restart the writer (and through it the store's listener) if it ended anyway.

        Called where jobs start and end, so running jobs keep their heartbeat even
        if nothing new is started.
        """
        writer = self._writer
        dead = writer is None or not writer.is_alive()
        if dead and not self._closed and not self._stop.is_set():
            log.error("flask-asyncstate writer thread had stopped; restarting it")
            try:
                self._ensure_threads()
            except Exception:  # a job must run even if the restart fails
                log.exception("flask-asyncstate: writer restart failed")

    def _write_loop(self) -> None:
        # Beats also keep running jobs' entries alive (polls of running jobs do not restart
        # their expiry), so beat at least three times per ASYNCSTATE_EXPIRES.
        beat_every = min(self.settings.heartbeat_interval, self.settings.expires / 3)
        next_beat = time.monotonic() + beat_every
        while not self._stop.wait(self.settings.flush_interval):
            if self._app_ref() is None:  # the app is gone (a test, a factory): so are we
                self.shutdown(0)
                return
            try:  # every step on its own: no failure of one may stop the others, or the loop
                self.flush()
            except Exception:
                log.exception("flask-asyncstate writer: flush failed")
            try:
                self.store.ensure_threads()
            except Exception:
                log.exception("flask-asyncstate writer: listener restart failed")
            if time.monotonic() >= next_beat:
                try:
                    self._beat()
                except StoreError as exc:
                    log.warning("asyncstate heartbeat failed: %s", exc)
                    continue  # try again at the next tick: Redis may be back any moment
                except Exception:
                    log.exception("asyncstate heartbeat failed")
                    continue
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
            except Exception:
                log.exception("job %s: final document could not be stored", ctx.id)
                final = _last_resort(ctx, final.get("status", FAILED))
                with self._lock:
                    if ctx.id in self._pending:
                        self._pending[ctx.id] = (ctx, job, final)
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
            contexts = [ctx for ctx, _job in self._active.values()]
        states = [self.state.key(c.state.type, c.id) for c in contexts if c.state is not None]
        owners = list({c.owner for c in contexts if c.owner is not None})
        info = {  # a fixed size, whatever the number of jobs: they name their instance
            "id": self.instance_id, "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": self._started_at, "beat_at": time.time(), "jobs": len(running),
        }
        if not self.records.beat(
            info, self.settings.heartbeat_interval, running, states, owners
        ):
            with self._lock:
                active = [ctx for ctx, _job in self._active.values()]
            for ctx in active:  # the store lost our entries: write them again on the next flush
                with ctx._lock:
                    ctx._dirty = True
                if ctx.owner is not None:  # and list them in their owners' indexes again
                    self.records.restore(ctx.owner, ctx.id)

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
