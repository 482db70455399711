"""Where jobs run: the seam between a job's life and the threads or workers running it.

An :class:`Executor` only runs the callables it is handed; admission, documents,
cancel and final states live in :mod:`flask_asyncstate.lifecycle`, the same
whichever executor runs the job:

- :class:`ThreadExecutor` (``ASYNCSTATE_EXECUTOR = "threads"``, the default): a
  pool of daemon threads in the web process. Daemon threads, unlike
  ``concurrent.futures``' pool, do not hold up the interpreter's exit: the app's
  ``atexit`` shutdown runs first, cancels running jobs, waits and writes
  ``lost`` for what is left. The queue is bounded by admission
  (``ASYNCSTATE_MAX_QUEUED``) before anything reaches it, and every change of
  state (submit, take, finish, shutdown) happens under one lock, so a job is
  always either waiting, running or done.
- :class:`InlineExecutor` (``"inline"``): runs the job inside ``start()``, for
  tests, like Celery's eager mode.
- :class:`RQExecutor` and :class:`CeleryExecutor` (``"rq"``, ``"celery"``): the
  web side only enqueues a small JSON payload (job id, name, arguments, the
  starting request's URL root); the worker that takes it runs the job with the
  same lifecycle as the pool (see :mod:`flask_asyncstate.workers`). RQ's queue
  lives in the store's Redis, entries are JSON, never pickle. Each engine's own
  queue checks (an entry that vanished) belong to its executor here.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from flask import has_request_context

from .errors import StoreError, StoreUnavailable
from .stores.redis import translate

if TYPE_CHECKING:
    import redis
    from celery import Celery
    from rq import Queue

    from .appstate import AppState

log = logging.getLogger("flask_asyncstate")

#: Version of the queue payload; a worker refuses payloads it does not know.
PAYLOAD_VERSION = 1
#: Seconds after its admission before a waiting job is checked for in the engine's queue
#: (it is enqueued right after it is admitted).
SETTLED = 60.0
#: The function every RQ queue entry names: what our workers import and call, and all
#: they run (see :mod:`flask_asyncstate.workers`).
PERFORM = "flask_asyncstate.workers.perform"

# One quick retry of a publish to an unreachable broker; the broker's own connect and socket
# timeouts (Celery's broker_connection_timeout, broker_transport_options) bound each attempt.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


#: How long RQ keeps a succeeded entry (see enqueue).
_RQ_RESULT_TTL = 60


class Executor(ABC):
    """Runs each submitted job's ``run`` callable once, somewhere.

    ``run`` never raises for the job's own failures (the lifecycle records them),
    so an executor only has to call it, and to say which jobs it never started
    when it is shut down.
    """

    #: Jobs run in another process (a :class:`RemoteExecutor`): the web side
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


class RemoteExecutor(Executor):
    """Queues jobs on an engine whose workers run them; see the module docstring."""

    remote = True
    #: The engine's name (``"rq"``, ``"celery"``), shown in ``flask asyncstate instances``.
    engine = "remote"

    def __init__(self, app_state: AppState) -> None:
        self.app_state = app_state
        self._waiting_due = 0.0
        #: This process runs one job at a time and may end with it (an RQ work horse, a
        #: Celery prefork child): ``cancel_grace=`` can end a job by ending the process.
        self.own_process = False

    def start(self) -> None:
        pass

    def submit(self, job_id: str, run: Callable[[], None]) -> None:
        raise RuntimeError(f"{type(self).__name__} queues jobs for workers; use enqueue()")

    def shutdown(self) -> list[str]:
        return []  # the engine's queue outlives this process

    def wait(self, timeout: float) -> bool:
        return True

    @abstractmethod
    def enqueue(
        self,
        job_id: str,
        payload: dict[str, Any],
        timeout: float | None,
        queue: str | None = None,
        again: bool = False,
    ) -> None:
        """Put the job on the engine's queue (``queue``, or the default one);
        ``StoreUnavailable`` if the engine is away.

        ``timeout`` is the job's own (seconds, or None); the engine's hard limit, if it
        has one, leaves room for the ``timeout_grace`` tuning keyword after it. ``again``:
        the job ran before (a retry, a resume, "Try again"), under the same id.
        """

    def missing(self, job_ids: list[str]) -> set[str]:
        """Of these waiting jobs, those the engine no longer has (a purged queue): they can
        never run. An engine that cannot tell (Celery's broker) answers none."""
        return set()

    def waiting(self) -> tuple[list[str], list[str]]:
        """Ids of the jobs waiting for a worker, and the keys of their owners' indexes and
        unique places, for a web instance's heartbeat to keep alive (nobody else does), a
        few times per ``ASYNCSTATE_EXPIRES``: a long queue must not cost every beat.

        A waiting job (admitted a while ago: enqueueing follows admission) whose entry
        the engine no longer has ends ``lost`` here instead of holding its places for ever.
        """
        now = time.monotonic()
        if now < self._waiting_due:
            return [], []
        app_state = self.app_state
        self._waiting_due = now + app_state.settings.expires / 4
        records = app_state.records
        ids = sorted(records.queued_ids())
        docs = [d for d in (records.statuses(ids, internal=True) if ids else []) if d]
        settled = time.time() - SETTLED
        stale = [
            d["id"]
            for d in docs
            if d["status"] == "queued" and d.get("instance") is None and d["created_at"] < settled
        ]
        try:
            gone = self.missing(stale) if stale else set()
        except StoreError:
            gone = set()
        for job_id in sorted(gone):
            app_state.lifecycle.end_vanished(job_id)
        keys: list[str] = []
        for doc in docs:
            if doc.get("owner") is not None:
                keys.append(records.owner_key(doc["owner"]))
            if doc.get("unique") is not None:
                keys.append(doc["unique"])
        return ids, keys

    @abstractmethod
    def dequeue(self, job_id: str) -> None:
        """Best effort: take a job that was cancelled while queued off the engine's queue."""


class RQExecutor(RemoteExecutor):
    """Enqueues jobs on ``ASYNCSTATE_RQ_QUEUE`` in the store's Redis."""

    engine = "rq"

    def __init__(
        self,
        app_state: AppState,
        client: redis.Redis,
        fast_client: redis.Redis,
        queue: str,
        expires: float,
        grace: float,
    ) -> None:
        from rq import Queue
        from rq.serializers import JSONSerializer

        super().__init__(app_state)
        self._grace = grace
        self.queue_name = queue
        self._queue = Queue(queue, connection=client, serializer=JSONSerializer)
        # ``start()`` in a request waits at most ASYNCSTATE_REDIS_TIMEOUT, like the store.
        self._fast_queue = Queue(queue, connection=fast_client, serializer=JSONSerializer)
        self._expires = int(expires)

    def enqueue(
        self,
        job_id: str,
        payload: dict[str, Any],
        timeout: float | None,
        queue: str | None = None,
        again: bool = False,
    ) -> None:
        from rq.job import Job

        with translate():
            found = self._queue_now(queue)
            if again:  # the last run's entry (and its expiry: a new one would keep it) goes
                found.connection.delete(Job.key_for(job_id))
            found.enqueue_call(
                PERFORM,
                args=[payload],
                job_id=job_id,
                # RQ's limit (-1: none): it raises JobTimeoutException in the job (SIGALRM),
                # and kills the work horse 60 s later if that does not end it. Our deadline
                # sets the Event first, at ``timeout``.
                timeout=-1 if timeout is None else int(timeout + 2 * self._grace) + 1,
                # The result is in our document; RQ's entry (payload, None result) is kept a
                # minute: result_ttl=0 makes RQ delete it at once, a path that reads back the
                # job's executions (7 more commands and ~1 ms a job on a busy worker).
                result_ttl=_RQ_RESULT_TTL,
                failure_ttl=self._expires,
                description=f"flask-asyncstate job {payload['name']}",
            )

    def _queue_now(self, name: str | None = None) -> Queue:
        """The short-timeout queue while serving a request (ASYNCSTATE_REDIS_TIMEOUT); with
        ``name``, that queue (a job's ``queue=``) on the same connection."""
        found = self._fast_queue if has_request_context() else self._queue
        if name is None or name == self.queue_name:
            return found
        from rq import Queue
        from rq.serializers import JSONSerializer

        return Queue(name, connection=found.connection, serializer=JSONSerializer)

    def _queue_of(self, job_id: str) -> str | None:
        """The RQ queue the job was put on (its job's ``queue=``), read from its entry."""
        try:
            with translate():
                name = self._queue_now().connection.hget(f"rq:job:{job_id}", "origin")
        except StoreError:
            return None
        return None if name is None else name.decode() if isinstance(name, bytes) else str(name)

    def missing(self, job_ids: list[str]) -> set[str]:
        from rq.job import Job

        with translate():
            pipe = self._queue.connection.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.exists(Job.key_for(job_id))
            found = pipe.execute()
        return {job_id for job_id, there in zip(job_ids, found) if not there}

    def dequeue(self, job_id: str) -> None:
        # Only an entry still in the queue list is ours to delete: once a worker popped it
        # (RQ moves it to its intermediate list, then prepares the run), deleting the RQ job
        # under that worker fails its bookkeeping (InvalidJobOperation, a failed-registry
        # entry). That worker finds the job cancelled, does not run it, and ends the RQ job.
        from rq.exceptions import NoSuchJobError
        from rq.job import Job
        from rq.serializers import JSONSerializer

        try:
            with translate():
                queue = self._queue_now(self._queue_of(job_id))
                if not queue.remove(job_id):  # LREM: 0 when a worker has it, or it is gone
                    return
                # Out of the list, no worker can take it any more: its RQ job goes too.
                Job.fetch(job_id, connection=queue.connection, serializer=JSONSerializer).delete(
                    remove_from_queue=False
                )
        except NoSuchJobError:
            pass  # gone already
        except Exception as exc:  # noqa: BLE001 - the stored flag still stops it
            log.warning("job %s: could not remove it from the RQ queue: %s", job_id, exc)


class CeleryExecutor(RemoteExecutor):
    """Sends jobs to the Celery app's workers as :data:`TASK_NAME` tasks (JSON)."""

    engine = "celery"

    def __init__(self, celery: Celery, app_state: AppState, grace: float) -> None:
        from .workers import register_celery_task

        super().__init__(app_state)
        self.celery = celery
        self._grace = grace
        self.task = register_celery_task(celery, app_state)

    def enqueue(
        self,
        job_id: str,
        payload: dict[str, Any],
        timeout: float | None,
        queue: str | None = None,
        again: bool = False,
    ) -> None:
        limits: dict[str, Any] = {}
        if timeout is not None:  # the job's Event is set at the deadline; these are backstops
            limits = {
                "soft_time_limit": timeout + self._grace,
                "time_limit": timeout + 2 * self._grace,
            }
        try:
            self.task.apply_async(
                args=[payload],
                task_id=job_id,
                serializer="json",
                retry=True,
                retry_policy=_PUBLISH_RETRY,
                **({} if queue is None else {"queue": queue}),
                **limits,
            )
        except Exception as exc:  # kombu's OperationalError and friends: the broker is away
            raise StoreUnavailable(f"the Celery broker is unreachable: {exc}") from exc

    def dequeue(self, job_id: str) -> None:
        try:
            self.celery.control.revoke(job_id)
        except Exception as exc:  # noqa: BLE001 - the stored flag still stops it
            log.warning("job %s: could not revoke its Celery task: %s", job_id, exc)
