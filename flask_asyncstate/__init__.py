"""flask-asyncstate: tracked, cancellable long-running jobs for Flask, shared across instances."""

from .errors import (
    AsyncStateError,
    InvalidToken,
    JobCancelled,
    QueueFull,
    QuotaExceeded,
    StateTooLarge,
    StoreError,
    StoreUnavailable,
    UnserializableState,
)
from .extension import AsyncState
from .jobs import JobContext, JobHandle, TrackedJob
from .signals import job_finished, job_progress, job_started, store_circuit_changed
from .state import StateAPI

__all__ = [
    "AsyncState",
    "AsyncStateError",
    "InvalidToken",
    "JobCancelled",
    "JobContext",
    "JobHandle",
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
