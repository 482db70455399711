"""Run jobs on RQ workers: the queue lives in the store's Redis, entries are JSON, never pickle.

The web side enqueues :func:`perform` with one JSON payload (job id, name,
arguments) under the job's own id; ``flask asyncstate worker`` runs an
:class:`AsyncStateWorker` (RQ's forking worker) or, with ``--simple``, an
:class:`AsyncStateSimpleWorker` inside the app, so :func:`perform` finds the
extension and its registered jobs. RQ's own failure paths (a killed work
horse, a cold shutdown) end our document too.

Those workers run nothing but :data:`PERFORM`: an entry naming any other
function (someone who can write to Redis queued ``os.system``, say) is refused,
logged and left in RQ's failed registry. A job cancelled while it waits leaves
the queue only if no worker has taken its entry yet (``LREM``); a worker that
has finds the job cancelled and ends the RQ job as usual, never as a failure.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis
from flask import current_app, has_request_context
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from ..stores.redis import translate
from .remote import RemoteExecutor

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("flask_asyncstate")

#: The function every queue entry names (what the worker imports and calls).
PERFORM = f"{__name__}.perform"

#: The app a ``flask asyncstate worker`` process serves; forked work horses inherit it.
_worker_app: Runtime | None = None


def perform(payload: dict[str, Any]) -> None:
    """What an RQ worker calls for each entry: run the tracked job the payload names."""
    from .. import remote

    # The worker command sets _worker_app; otherwise (a custom worker) the current app's.
    app_state = _worker_app if _worker_app is not None else current_app.extensions["asyncstate"]
    remote.run(app_state, payload)


class RQExecutor(RemoteExecutor):
    """Enqueues jobs on ``ASYNCSTATE_RQ_QUEUE`` in the store's Redis."""

    engine = "rq"

    def __init__(
        self,
        client: redis.Redis,
        fast_client: redis.Redis,
        queue: str,
        expires: float,
        grace: float,
    ) -> None:
        self._grace = grace
        self.queue_name = queue
        self._queue = Queue(queue, connection=client, serializer=JSONSerializer)
        # ``start()`` in a request waits at most ASYNCSTATE_REDIS_TIMEOUT, like the store.
        self._fast_queue = Queue(queue, connection=fast_client, serializer=JSONSerializer)
        self._expires = int(expires)

    def enqueue(self, job_id: str, payload: dict[str, Any], timeout: float | None) -> None:
        with translate():
            self._queue_now().enqueue_call(
                PERFORM,
                args=[payload],
                job_id=job_id,
                # RQ's limit (-1: none): it raises JobTimeoutException in the job (SIGALRM),
                # and kills the work horse 60 s later if that does not end it. Our deadline
                # sets the Event first, at ``timeout``.
                timeout=-1 if timeout is None else int(timeout + 2 * self._grace) + 1,
                result_ttl=0,  # the result is in our document
                failure_ttl=self._expires,
                description=f"flask-asyncstate job {payload['name']}",
            )

    def _queue_now(self) -> Queue:
        """The short-timeout queue while serving a request (ASYNCSTATE_REDIS_TIMEOUT)."""
        return self._fast_queue if has_request_context() else self._queue

    def missing(self, job_ids: list[str]) -> set[str]:
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
        try:
            with translate():
                queue = self._queue_now()
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


def _function_of(job: Job) -> str | None:
    """The function an RQ entry names, or None when that cannot be read (or it names a
    method of some instance): the check that lets our workers run only :data:`PERFORM`."""
    try:
        return None if job.instance is not None else job.func_name
    except Exception:  # noqa: BLE001 - a DeserializationError, or anything a bad entry raises
        return None


class _Hooks:
    """RQ's failure paths that never reach the job's own code end its document too."""

    asyncstate: Runtime

    def execute_job(self, job: Job, queue: Queue) -> None:
        # Before anything runs (and before a forking worker forks): only our entry point.
        if _function_of(job) != PERFORM:
            self._refuse(job, queue)
            return
        super().execute_job(job, queue)  # type: ignore[misc]

    def _refuse(self, job: Job, queue: Queue) -> None:
        """Do not run an entry that names another function: log it, and leave it in RQ's
        failed registry (for ``ASYNCSTATE_EXPIRES``) where an operator can see it."""
        try:
            named = repr(job.func_name)
        except Exception:  # noqa: BLE001 - it cannot even be read
            named = "something unreadable"
        why = f"refused: this worker runs only {PERFORM}, the entry names {named}"
        log.error("RQ job %s on queue %r %s; not run", job.id, queue.name, why)
        try:
            with self.connection.pipeline() as pipe:  # type: ignore[attr-defined]
                pipe.lrem(queue.intermediate_queue_key, 1, job.id)  # where the worker took it
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                ttl = int(self.asyncstate.settings.expires)
                queue.failed_job_registry.add(job, ttl=ttl, exc_string=why, pipeline=pipe)
                pipe.execute()
        except Exception:
            log.exception("RQ job %s: could not record the refusal; deleting the entry", job.id)
            try:
                job.delete(remove_from_queue=False)
                self.connection.lrem(queue.intermediate_queue_key, 1, job.id)  # type: ignore[attr-defined]
            except Exception:
                log.exception("RQ job %s: could not delete the refused entry", job.id)

    def handle_job_failure(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        super().handle_job_failure(job, queue, *args, **kwargs)  # type: ignore[misc]
        # In the parent: the work horse died. In a horse or simple worker: our own code
        # raised before the job could start (its take failed). Either way, unless the job
        # already has a final document, it gets one.
        if _function_of(job) == PERFORM:
            from .. import remote

            why = str(kwargs.get("exc_string") or "the worker gave up on the job").strip()
            why = why.splitlines()[0] if why else "the worker gave up on the job"
            status = "lost" if why.startswith("Work-horse terminated") else "failed"
            remote.end_abandoned(self.asyncstate, job.id, why, status)

    def request_force_stop(self, signum: int, frame: Any) -> None:
        # Only a forking worker's parent, and only once RQ really killed the work horse (it
        # ignores a second signal within a second); a simple worker's job records its own end.
        horse = getattr(self, "horse_pid", 0) if not self._is_horse else 0  # type: ignore[attr-defined]
        job_id = self.get_current_job_id() if horse else None  # type: ignore[attr-defined]
        try:
            super().request_force_stop(signum, frame)  # type: ignore[misc]
        except SystemExit:
            if job_id:
                from .. import remote

                remote.end_abandoned(self.asyncstate, job_id, "the worker was shut down cold")
            raise

    def unsubscribe(self) -> None:
        # RQ's teardown unsubscribes, then stops its pubsub thread. That thread waits up to
        # 60 s for a message; the UNSUBSCRIBE reply can wake it before the stop flag is set,
        # and redis-py >= 8.2's stop() then waits out the next 60 s. Set the flag first.
        thread = getattr(self, "pubsub_thread", None)
        if thread is not None:
            try:
                thread.stop(timeout=0)  # redis-py >= 8.2: clear the flag, do not wait here
            except TypeError:
                thread.stop()  # older redis-py: stop() only clears the flag
        super().unsubscribe()  # type: ignore[misc]

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        try:
            return super().perform_job(job, queue, *args, **kwargs)  # type: ignore[misc, no-any-return]
        finally:
            if self._is_horse:  # type: ignore[attr-defined]
                # A work horse ends with os._exit right after (no atexit, threads just stop):
                # retire its heartbeat now, without waiting for threads to wind down.
                self.asyncstate.retire_process()


class AsyncStateWorker(_Hooks, Worker):
    """RQ's forking worker: each job in a fresh work horse with its own heartbeat and listener."""


class AsyncStateSimpleWorker(_Hooks, SimpleWorker):
    """RQ's worker without fork: jobs run one after another in the worker process itself."""


def run_worker(
    app_state: Runtime, queues: list[str], *, burst: bool, simple: bool, name: str | None = None
) -> bool:
    """Run an RQ worker for ``app_state``'s app until it is stopped (or, with ``burst``, idle)."""
    global _worker_app
    store = app_state.store
    client = getattr(store, "client", None)
    if not isinstance(client, redis.Redis):
        raise TypeError("the RQ worker needs the Redis store (set ASYNCSTATE_REDIS_URL)")
    _worker_app = app_state
    cls = AsyncStateSimpleWorker if simple else AsyncStateWorker
    worker = cls(
        [Queue(q, connection=client, serializer=JSONSerializer) for q in queues],
        connection=client,
        serializer=JSONSerializer,
        name=name,
    )
    worker.asyncstate = app_state
    app_state.ensure_running()  # this process beats too: "instances" lists the worker
    return bool(worker.work(burst=burst, with_scheduler=False))
