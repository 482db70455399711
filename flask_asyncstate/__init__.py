"""flask-asyncstate: tracked, cancellable long-running jobs for Flask, shared across instances."""

from .errors import (
    AsyncStateError,
    InvalidToken,
    JobCancelled,
    QuotaExceeded,
    StateTooLarge,
    StoreError,
    StoreUnavailable,
    UnserializableState,
)
from .extension import AsyncState
from .jobs import JobContext, JobHandle, TrackedJob
from .signals import job_finished, job_progress, job_started
from .state import StateAPI

__all__ = [
    "AsyncState",
    "AsyncStateError",
    "InvalidToken",
    "JobCancelled",
    "JobContext",
    "JobHandle",
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
]
