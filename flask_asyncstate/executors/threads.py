"""The default executor: a pool of daemon threads in the web process.

Daemon threads, unlike ``concurrent.futures``' pool, do not hold up the
interpreter's exit: the app's ``atexit`` shutdown runs first, cancels running
jobs, waits ``shutdown_timeout`` and writes ``lost`` for what is
left. The queue is bounded by admission (``ASYNCSTATE_MAX_QUEUED``) before
anything reaches it. Every change of state (submit, take, finish, shutdown)
happens under one lock, so a job is always either waiting, running or done.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

from .base import Executor

log = logging.getLogger("flask_asyncstate")


class ThreadExecutor(Executor):
    """``max_workers`` daemon threads taking jobs from one queue, started on first use."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._reset()
        self._closed = False

    def _reset(self) -> None:
        """Fresh queue, lock and counters: at creation, and in a forked child."""
        self._queue: queue.SimpleQueue[tuple[str, Callable[[], None]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._pid = os.getpid()
        self._unfinished = 0  # submitted and not yet done (waiting or running)

    def after_fork(self) -> None:
        """In a forked child: the parent's threads and locks are not ours."""
        self._reset()

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("executor is shut down")
            if self._pid != os.getpid():
                raise RuntimeError("ThreadExecutor used in a forked child without after_fork()")
            self._threads = [t for t in self._threads if t.is_alive()]
            while len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"asyncstate-job-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def submit(self, job_id: str, run: Callable[[], None]) -> None:
        with self._lock:  # with shutdown()'s drain: no job can land behind the stop sentinel
            if self._closed:
                raise RuntimeError("executor is shut down")
            self._unfinished += 1
            self._queue.put((job_id, run))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:  # shutdown: pass it on to the next thread
                self._queue.put(None)
                return
            try:
                item[1]()
            except BaseException:  # the lifecycle records the job's failure; keep the thread
                log.exception("flask-asyncstate job thread: a job escaped its lifecycle")
            finally:
                del item  # an idle thread must not keep its last job's arguments alive
                with self._lock:
                    self._unfinished -= 1
                    self._idle.notify_all()

    def shutdown(self) -> list[str]:
        never: list[str] = []
        with self._lock:
            self._closed = True
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    never.append(item[0])
                    self._unfinished -= 1
            self._queue.put(None)
            self._idle.notify_all()
        return never

    def wait(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished <= 0, timeout)
