"""What executors that hand jobs to another process (RQ, Celery workers) have in common.

The web side only enqueues a small JSON payload (job id, job name, arguments);
the worker that takes it runs the job with the same lifecycle as the thread
pool (see :mod:`flask_asyncstate.remote`). Nothing runs here, so ``submit``,
``shutdown`` and ``wait`` have nothing to do.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from .base import Executor

#: Version of the queue payload; a worker refuses payloads it does not know.
PAYLOAD_VERSION = 1


class RemoteExecutor(Executor):
    """Queues jobs on an engine whose workers run them; see the module docstring."""

    remote = True
    #: The engine's name (``"rq"``, ``"celery"``), shown in ``flask asyncstate instances``.
    engine = "remote"

    def start(self) -> None:
        pass

    def submit(self, job_id: str, run: Callable[[], None]) -> None:
        raise RuntimeError(f"{type(self).__name__} queues jobs for workers; use enqueue()")

    def shutdown(self) -> list[str]:
        return []  # the engine's queue outlives this process

    def wait(self, timeout: float) -> bool:
        return True

    @abstractmethod
    def enqueue(self, job_id: str, payload: dict[str, Any], timeout: float | None) -> None:
        """Put the job on the engine's queue; ``StoreUnavailable`` if the engine is away.

        ``timeout`` is the job's own (seconds, or None); the engine's hard limit, if it
        has one, leaves room for the ``timeout_grace`` tuning keyword after it.
        """

    def missing(self, job_ids: list[str]) -> set[str]:
        """Of these waiting jobs, those the engine no longer has (a purged queue): they can
        never run. An engine that cannot tell (Celery's broker) answers none."""
        return set()

    @abstractmethod
    def dequeue(self, job_id: str) -> None:
        """Best effort: take a job that was cancelled while queued off the engine's queue."""
