"""Admitting a job: its queued document, its owner's quota slot, a unique job's place, a
place in the engine's queue, its typed state; and undoing all of that when a start is
refused half-way, so nothing is left behind."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import origins
from .context import BoundState, JobContext
from .errors import Duplicate, QueueFull, QuotaExceeded, StoreError
from .labels import translated
from .status import JobStatus

if TYPE_CHECKING:
    from .records import JobRecords
    from .registry import JobSpec, LocalJobs

log = logging.getLogger("flask_asyncstate")


class Admitting:
    """Mixed into :class:`~flask_asyncstate.lifecycle.Lifecycle`."""

    app_state: Any
    records: JobRecords
    jobs: LocalJobs

    def admit(
        self, job: JobSpec, job_id: str, owner: str | None, remote: bool = False
    ) -> JobContext:
        """Write the queued document, claim the owner's quota slot (and, for a worker, a
        place in the engine's queue), create the job's state.

        A job queued for a worker names no instance until one takes it, and no cancel
        Event is held here: the worker holds it.
        """
        # A lazy label becomes text here, in the starting request's locale: workers and
        # other instances have no such request.
        label = job.name if job.label is None else str(job.label) or job.name
        ctx = JobContext.new(
            job_id, job.name, None if remote else self.records.instance_id, owner, label
        )
        ctx.origin = origins.capture()
        event = None if remote else ctx.cancelled
        ctx.unique_key = self.records.unique_key(job.name, job.unique, owner)
        first = ctx.snapshot()
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
            if owner is not None and not self.records.admit(owner, job_id, limit):
                raise QuotaExceeded(
                    f"owner has {limit} unfinished jobs (ASYNCSTATE_MAX_JOBS_PER_OWNER)",
                    translated()["quotaExceeded"].format(limit=limit),
                )
            limit = self.app_state.settings.max_queued
            if remote and not self.records.enter_queue(job_id, limit):
                raise QueueFull(
                    f"{limit} jobs already wait for a worker (ASYNCSTATE_MAX_QUEUED)",
                    translated()["busy"],
                )
            if job.state_type is not None and not remote:  # a worker creates it when it takes
                self.app_state.state.create(
                    job.state_type(),
                    name=job_id,
                    cancel_event=event,
                    never_expires=job.never_expires,
                )
                ctx.state = BoundState(self.app_state.state, job.state_type, job_id)
            if ctx.unique_key is not None:  # admitted: a duplicate start may now return it
                self.records.store.write(self.records.job_key(job_id), ctx.snapshot())
            # Last: a refused start never reaches the newest jobs the admin page reads.
            self.records.list_job(job_id, first["created_at"])
        except BaseException:
            self.abandon(ctx, job, remote)
            raise
        return ctx

    def abandon(self, ctx: JobContext, job: JobSpec, remote: bool = False) -> None:
        """Undo a start that did not go through.

        Each step on its own; if the store refused one (it is away), the job is
        given a final ``failed`` document that the writer stores when it can, which
        also frees the owner's quota slot. Nothing stays ``queued`` for ever.
        """
        owner, state_type, unique = ctx.owner, job.state_type, ctx.unique_key
        # Not listed among the newest jobs (admit lists last): the flood path of refused
        # starts costs no round trip for it. (An id listed before an enqueue failed stays
        # there, skipped by readers, until newer jobs push it out.)
        steps: list[Callable[[], object]] = [lambda: self.records.remove(ctx.id, unlist=False)]
        if unique is not None:
            steps.append(lambda: self.records.release_unique(unique, ctx.id))
        if owner is not None:
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
