"""The executor interface: run the callables it is handed, and stop when asked."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar


class Executor(ABC):
    """Runs each submitted job's ``run`` callable once, somewhere.

    ``run`` never raises for the job's own failures (the lifecycle records them),
    so an executor only has to call it, and to say which jobs it never started
    when it is shut down.
    """

    #: Jobs run in another process (a :class:`~.remote.RemoteExecutor`): the web side
    #: only queues them.
    remote: ClassVar[bool] = False
    #: The engine's name, shown in ``flask asyncstate instances``.
    engine: ClassVar[str] = "threads"

    def after_fork(self) -> None:
        """In a forked child, before anything else: drop the parent's threads and locks."""

    @abstractmethod
    def start(self) -> None:
        """Be ready to run work (again in a forked child, whose threads did not survive)."""

    @abstractmethod
    def submit(self, job_id: str, run: Callable[[], None]) -> None:
        """Run ``run`` soon; ``RuntimeError`` once shut down."""

    @abstractmethod
    def shutdown(self) -> list[str]:
        """Take no more work; return the ids of submitted jobs that never started."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for running jobs to end; True if none still runs."""
