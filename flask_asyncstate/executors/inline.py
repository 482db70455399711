"""Run each job inside ``start()`` itself (``ASYNCSTATE_EXECUTOR = "inline"``): for tests, like Celery's eager mode."""

from __future__ import annotations

from collections.abc import Callable

from .base import Executor


class InlineExecutor(Executor):
    """Calls ``run`` at once, in the caller's thread; ``start()`` returns after the job ended."""

    def __init__(self) -> None:
        self._closed = False

    def start(self) -> None:
        pass

    def submit(self, job_id: str, run: Callable[[], None]) -> None:
        if self._closed:
            raise RuntimeError("executor is shut down")
        run()

    def shutdown(self) -> list[str]:
        self._closed = True
        return []

    def wait(self, timeout: float) -> bool:
        return True
