"""flask-asyncstate: tracked, cancellable long-running jobs for Flask, shared across instances."""

from .errors import (
    AsyncStateError,
    InvalidToken,
    JobCancelled,
    JobNotRetryable,
    QueueFull,
    QuotaExceeded,
    StateTooLarge,
    StoreError,
    StoreUnavailable,
    UnserializableState,
)
from .extension import AsyncState
from .jobs import Job, JobContext, JobHandle, TrackedJob
from .signals import job_finished, job_progress, job_started, store_circuit_changed
from .state import StateAPI
from .status import JobStatus

__all__ = [
    "AsyncState",
    "AsyncStateError",
    "InvalidToken",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobHandle",
    "JobNotRetryable",
    "JobStatus",
    "QueueFull",
    "QuotaExceeded",
    "StateAPI",
    "StateTooLarge",
    "StoreError",
    "StoreUnavailable",
    "TrackedJob",
    "UnserializableState",
    "job_finished",
    "job_progress",
    "job_started",
    "store_circuit_changed",
]
