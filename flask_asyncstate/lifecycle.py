"""The life of one job, whatever executor runs it: admit and record it, run it, end it final.

Path of a job: :meth:`Lifecycle.start` admits it (queue place, owner's quota slot),
writes the ``queued`` document and hands :meth:`Lifecycle.run` to the executor;
``run`` writes ``running``, calls the function in an app context, and
:meth:`Lifecycle.finish` stores the final document in the context's write turn,
so no buffered progress can land after it. A final document that meets an
outage is kept in the registry and retried by the writer; one that cannot be
stored at all is replaced by a minimal ``failed`` one. Every job ends final.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from flask import has_request_context

from . import flushing, origins, remote, serialization, signals
from .admitting import Admitting
from .context import JobContext
from .errors import Duplicate, JobCancelled, QueueFull, StoreError, error_of
from .jobs import JobHandle
from .signals import send
from .status import JobStatus
from .templating import translated
from .timeouts import timeout_error

if TYPE_CHECKING:
    from .registry import JobSpec, Local
    from .runtime import Runtime

log = logging.getLogger("flask_asyncstate")

_STOPPED = {"type": "WorkerStopped", "message": "the worker process was stopped while the job ran"}


class Lifecycle(Admitting):
    """Starts, runs and ends the jobs of one app (see the module docstring)."""

    def __init__(self, app_state: Runtime) -> None:
        self.app_state = app_state
        self.records = app_state.records
        self.jobs = app_state.registry

    # -- starting ------------------------------------------------------------

    def start(self, job: JobSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> JobHandle:
        """Admit, record and submit a job; nothing is left behind when it is refused."""
        app = self.app_state
        serialization.check_arguments(args, kwargs, f"job {job.name!r}")  # JSON, for every executor
        app.ensure_running()
        owner = None
        if has_request_context() and not origins.in_job():  # a job's context serves no user
            app.signer.require_key()  # a job nobody could be given a token for is never made
            owner = app.request_owner(create=True)
        job_id = secrets.token_hex(16)
        if app.executor.remote:
            return remote.start(app, job, job_id, owner, args, kwargs)
        waiting = self.jobs.reserve(job_id, app.settings.max_queued)
        if waiting is None:
            raise QueueFull(
                f"{app.settings.max_queued} jobs are already waiting on this server"
                " (ASYNCSTATE_MAX_QUEUED)",
                translated()["busy"],
            )
        try:
            ctx = self.admit(job, job_id, owner)
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

    # -- running -------------------------------------------------------------

    def run(
        self, ctx: JobContext, job: JobSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Run the job to its end; whatever happens, the job ends with a final status."""
        if not self.jobs.unqueue(ctx.id) and ctx.finished:
            return  # cancelled while it waited, and ended then (see end_cancelled_waiting)
        self.app_state.supervise()
        try:
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
        self, ctx: JobContext, job: JobSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if ctx.cancelled.is_set():  # cancelled while queued: never starts
            self.finish(ctx, job, JobStatus.CANCELLED)
            return
        taken = self.app_state.executor.remote  # a worker's take stored "running" already
        ctx.mark_running()
        if job.timeout is not None:
            ctx.deadline = time.monotonic() + job.timeout
        if not taken:
            # The write answers with the stored cancel flag too: a cancel that the listener
            # missed while the job waited (a reconnect) is delivered here, without a read.
            self.flush_one(ctx, job, signal=False)
            if ctx.cancelled.is_set():
                self.finish(ctx, job, JobStatus.CANCELLED)
                return
        send(signals.job_started, self.app_state.app_ref(), job_id=ctx.id, document=ctx.snapshot())
        try:
            with origins.job_context(self.app_state.flask_app, ctx.origin):
                result = job.fn(ctx, *args, **kwargs)
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
                self.finish(ctx, job, JobStatus.LOST, error=_STOPPED)
                raise
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

    def _end_stopped(self, ctx: JobContext, job: JobSpec) -> None:
        """The job stopped on its Event: cancelled, or failed if its deadline set it."""
        if ctx.timed_out:
            self.finish(ctx, job, JobStatus.FAILED, error=timeout_error(job.timeout))
        else:
            self.finish(ctx, job, JobStatus.CANCELLED)

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
        ctx: JobContext,
        job: JobSpec,
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
        self._retire(ctx, final)
        return True

    def save(self, ctx: JobContext, job: JobSpec, doc: dict[str, Any]) -> None:
        """Write the document; if the store had lost the job's entry, prove we are alive."""
        if not self.records.save(doc, ctx.cancelled, job.never_expires):
            self.app_state.writer.beat()  # before anyone reads "lost" of a job that runs here

    def _save_final(self, ctx: JobContext, job: JobSpec, final: dict[str, Any]) -> None:
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
        self._retire(local.ctx, final)

    def _retire(self, ctx: JobContext, final: dict[str, Any]) -> None:
        """The final document is stored: forget the job here, once."""
        if self.jobs.retire(ctx.id) is None:
            return  # retired already (a deferred final retried by two threads)
        try:
            if ctx.owner is not None:
                self.records.discharge(ctx.owner, ctx.id)
            if ctx.unique_key is not None:
                self.records.release_unique(ctx.unique_key, ctx.id)
        except StoreError:  # the next start that needs the place finds it stale and frees it
            log.debug("job %s: quota slot or unique place not freed yet", ctx.id)
        store = self.app_state.store
        store.release(self.records.job_key(ctx.id))  # no cancel can matter any more
        if ctx.state is not None:
            store.release(self.app_state.state.key(ctx.state.type, ctx.id))
        ctx.done.set()
        send(signals.job_finished, self.app_state.app_ref(), job_id=ctx.id, document=final)
        self.app_state.supervise()

    # -- progress ----------------------------------------------------------------

    def flush_one(self, ctx: JobContext, job: JobSpec, signal: bool = True) -> None:
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
        """Write buffered progress (one round trip for all jobs) and retry deferred finals."""
        flushing.flush(self)
