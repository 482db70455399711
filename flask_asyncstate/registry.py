"""The jobs of this process: admitted and waiting, running, or done but with a final document
still to store. The lifecycle adds and retires them; the writer flushes and beats for them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .context import JobContext


class JobSpec(Protocol):
    """What running a job needs to know of its definition (a ``TrackedJob``)."""

    name: str
    fn: Callable[..., Any]
    never_expires: bool
    state_type: type | None
    timeout: float | None
    unique: bool | str
    label: Any


@dataclass
class Local:
    """One job of this process."""

    ctx: JobContext
    job: JobSpec
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

    def add(self, ctx: JobContext, job: JobSpec) -> None:
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

    def retire(self, job_id: str) -> Local | None:
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
