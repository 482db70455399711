"""The default executor: a pool of daemon threads in the web process.

Daemon threads, unlike ``concurrent.futures``' pool, do not hold up the
interpreter's exit: the app's ``atexit`` shutdown runs first, cancels running
jobs, waits ``ASYNCSTATE_SHUTDOWN_TIMEOUT`` and writes ``lost`` for what is
left. The queue is bounded by admission (``ASYNCSTATE_MAX_QUEUED``) before
anything reaches it.
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
        self._queue: queue.SimpleQueue[tuple[str, Callable[[], None]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._pid = 0
        self._closed = False
        self._running = 0
        self._idle = threading.Condition(self._lock)

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("executor is shut down")
            if self._pid != os.getpid():  # first use, or a forked child: the threads are gone
                self._pid = os.getpid()
                self._queue = queue.SimpleQueue()
                self._threads = []
                self._running = 0
            self._threads = [t for t in self._threads if t.is_alive()]
            while len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"asyncstate-job-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def submit(self, job_id: str, run: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("executor is shut down")
        self._queue.put((job_id, run))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:  # shutdown: pass it on to the next thread
                self._queue.put(None)
                return
            with self._lock:
                self._running += 1
            try:
                item[1]()
            except BaseException:  # the lifecycle records the job's failure; keep the thread
                log.exception("flask-asyncstate job thread: a job escaped its lifecycle")
            finally:
                with self._lock:
                    self._running -= 1
                    self._idle.notify_all()

    def shutdown(self) -> list[str]:
        with self._lock:
            self._closed = True
        never: list[str] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                never.append(item[0])
        self._queue.put(None)
        return never

    def wait(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)
