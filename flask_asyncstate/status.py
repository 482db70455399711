"""The statuses of a job, one enum: ``queued -> running -> succeeded | failed | cancelled``, or ``lost``."""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    """A job's status. Members are strings, so ``doc["status"] == JobStatus.RUNNING`` holds."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: The instance running it stopped heartbeating.
    LOST = "lost"

    __str__ = str.__str__  # "running", not "JobStatus.RUNNING", in messages

    @property
    def is_final(self) -> bool:
        """Nothing changes any more after this status."""
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


#: Statuses after which nothing changes any more.
FINAL = frozenset(s for s in JobStatus if s.is_final)
#: Statuses of a job still waiting or running.
UNFINISHED = frozenset(JobStatus) - FINAL
