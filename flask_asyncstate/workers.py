"""The worker side of RQ and Celery: what a worker process runs for each queue entry.

``flask asyncstate worker`` runs an :class:`AsyncStateWorker` (RQ's forking
worker) or, with ``--simple``, an :class:`AsyncStateSimpleWorker` inside the
app, so :func:`perform` finds the extension and its registered jobs. Those
workers run nothing but :data:`PERFORM`: an entry naming any other function
(someone who can write to Redis queued ``os.system``, say) is refused, logged
and left in RQ's failed registry. A job cancelled while it waits leaves the
queue only if no worker has taken its entry yet (``LREM``); a worker that has
finds the job cancelled and ends the RQ job as usual, never as a failure.

``AsyncState(app, celery=celery_app)`` registers the task :data:`TASK_NAME` on
the user's Celery app; ``celery -A MODULE worker`` runs it as any other task.
Each pool process gets its own heartbeat and cancel listener when it starts
(``worker_process_init``).

Both engines' failure paths that never reach the job's own code (a killed work
horse or pool process, a cold shutdown, a hard time limit, a revoke) end the
job's document too (:meth:`~flask_asyncstate.lifecycle.Lifecycle.end_abandoned`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import weakref
from typing import TYPE_CHECKING, Any

import redis
from flask import current_app
from rq import Queue, SimpleWorker, Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from .executors import PERFORM

if TYPE_CHECKING:
    from celery import Celery

    from .appstate import AppState

log = logging.getLogger("flask_asyncstate")

#: The name of the Celery task that runs tracked jobs.
TASK_NAME = "flask_asyncstate.run"

#: The app a ``flask asyncstate worker`` process serves; forked work horses inherit it.
_worker_app: AppState | None = None

#: What a forking worker sends its work horse when the horse's job is cancelled: the worker
#: hears cancels for it, and the horse runs under the worker's instance id, so a horse
#: opens no subscription and beats no heartbeat of its own before its job runs. Blocked
#: in the worker (and so in every horse, which takes it in a thread with ``sigwait``): it
#: never interrupts anything, and one sent before the horse waits for it stays pending.
CANCEL_SIGNAL = signal.SIGUSR1

#: Celery apps that run a Flask app's jobs, and that app's state (the latest registered).
_registered: weakref.WeakKeyDictionary[Any, weakref.ref[Any]] = weakref.WeakKeyDictionary()
#: The task registered on each Celery app (its receivers are connected once, with it).
_tasks: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


# -- RQ ---------------------------------------------------------------------------------


def perform(payload: dict[str, Any]) -> None:
    """What an RQ worker calls for each entry: run the tracked job the payload names."""
    # The worker command sets _worker_app; otherwise (a custom worker) the current app's.
    app_state = _worker_app if _worker_app is not None else current_app.extensions["asyncstate"]
    app_state.lifecycle.run_taken(payload)


def _function_of(job: Job) -> str | None:
    """The function an RQ entry names, or None when that cannot be read (or it names a
    method of some instance): the check that lets our workers run only :data:`PERFORM`."""
    try:
        return None if job.instance is not None else job.func_name
    except Exception:  # noqa: BLE001 - a DeserializationError, or anything a bad entry raises
        return None


class _Hooks:
    """RQ's failure paths that never reach the job's own code end its document too."""

    asyncstate: AppState
    #: The job whose end this worker reported to the lifecycle last (see AsyncStateWorker).
    _reported: str | None = None

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
            why = str(kwargs.get("exc_string") or "the worker gave up on the job").strip()
            why = why.splitlines()[0] if why else "the worker gave up on the job"
            status = "lost" if why.startswith("Work-horse terminated") else "failed"
            app_state = self.asyncstate  # its instance id names the horse's run too
            self._reported = job.id  # once per run: a second report would resume it again
            app_state.lifecycle.end_abandoned(job.id, why, status, app_state.instance_id)

    def request_force_stop(self, signum: int, frame: Any) -> None:
        # Only a forking worker's parent, and only once RQ really killed the work horse (it
        # ignores a second signal within a second); a simple worker's job records its own end.
        horse = getattr(self, "horse_pid", 0) if not self._is_horse else 0  # type: ignore[attr-defined]
        job_id = self.get_current_job_id() if horse else None  # type: ignore[attr-defined]
        try:
            super().request_force_stop(signum, frame)  # type: ignore[misc]
        except SystemExit:
            if job_id:
                app_state = self.asyncstate
                self._reported = job_id
                app_state.lifecycle.end_abandoned(
                    job_id, "the worker was shut down cold", reporter=app_state.instance_id
                )
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
        if self._is_horse:  # type: ignore[attr-defined]
            # this process runs this one job and exits after it: cancel_grace may end it
            self.asyncstate.executor.own_process = True  # type: ignore[attr-defined]
            parent = getattr(self, "_worker_instance", None)
            if parent is not None:  # (a horse of AsyncStateWorker: see CANCEL_SIGNAL)
                _borrow_worker(self.asyncstate, parent, self._worker_pid)  # type: ignore[attr-defined]
        try:
            return super().perform_job(job, queue, *args, **kwargs)  # type: ignore[misc]
        finally:
            if self._is_horse:  # type: ignore[attr-defined]
                # A work horse ends with os._exit right after (no atexit, threads just stop):
                # retire its heartbeat now, without waiting for threads to wind down.
                app_state = self.asyncstate
                settled = app_state.lifecycle.settle()  # kept ends, while the store is away
                app_state.retire_process()
                if not settled:  # an end never stored (a final document, an engine report):
                    logging.shutdown()  # exit unclean, so the worker, which lives on, ends it
                    os._exit(1)


class AsyncStateWorker(_Hooks, Worker):
    """RQ's forking worker: each job in a fresh work horse. The worker keeps the heartbeat
    and the cancel listener; a cancel of the horse's job reaches the horse as
    :data:`CANCEL_SIGNAL`. A horse that exits without a stored final document (killed,
    or its final write met an outage longer than the shutdown timeout) has its job ended
    ``lost`` by the worker, which outlives it."""

    _worker_instance: str | None = None
    _worker_pid = 0
    _held_for_horse: tuple[str, _HorseCancel] | None = None
    _horse_status: int | None = None

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        app_state = self.asyncstate
        # The horse borrows the worker's id only with the signal blocked (whoever started
        # this worker): an unblocked SIGUSR1 would end the horse.
        signal.pthread_sigmask(signal.SIG_BLOCK, {CANCEL_SIGNAL})
        self._worker_instance = app_state.instance_id  # what the horse runs under
        self._worker_pid = os.getpid()  # what its beats name (getppid() once we are gone: 1)
        self._horse_status = None
        self._reported = None
        cancel = None
        if _function_of(job) == PERFORM:  # held from before the fork: no cancel falls between
            key = app_state.records.job_key(job.id)
            cancel = _HorseCancel()
            app_state.store.hold(key, cancel)
            self._held_for_horse = (key, cancel)
            app_state.writer.lent = 1
        super().fork_work_horse(job, queue)  # returns in this process only
        if cancel is not None:
            cancel.attach(self._horse_pid)

    def wait_for_horse(self) -> tuple[int | None, int | None, Any]:
        pid, status, rusage = super().wait_for_horse()
        held = self._held_for_horse
        if pid is not None and held is not None:
            self._horse_status = status
            held[1].detach()  # reaped: its pid may name another process from now on
        return pid, status, rusage

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        finally:
            held, self._held_for_horse = self._held_for_horse, None
            if held is not None:
                app_state = self.asyncstate
                app_state.store.release(held[0])
                held[1].detach()
                app_state.writer.lent = 0
                status = self._horse_status
                # Unclean, or its status never came back to us (RQ's monitor timed out between
                # the reaping and us), and RQ said nothing of it: a final document stays.
                if status != 0 and self._reported != job.id:
                    if status is None:
                        how = "ended, its exit status unknown,"
                    else:
                        code = os.waitstatus_to_exitcode(status)
                        how = (
                            f"killed by signal {-code}"
                            if code < 0
                            else f"exited with status {code}"
                        )
                    app_state.lifecycle.end_abandoned(
                        job.id,
                        f"the work horse {how} without storing the job's final document",
                        reporter=app_state.instance_id,
                    )


class _HorseCancel(threading.Event):
    """What a forking worker holds for its horse's job: set by a cancel, it signals the
    horse (through a pidfd where Linux has them, so never a process that took its pid)."""

    def __init__(self) -> None:
        super().__init__()
        # Reentrant: a cold shutdown's signal handler may detach while attach holds it.
        self._lock = threading.RLock()
        self._pid = 0
        self._pidfd: int | None = None

    def attach(self, pid: int) -> None:
        """The horse is forked: signal it from now on (at once, if a cancel came already)."""
        with self._lock:
            self._pid = pid
            with contextlib.suppress(AttributeError, OSError):  # no pidfd: the pid, until reaped
                self._pidfd = os.pidfd_open(pid)
        if self.is_set():
            self._signal()

    def detach(self) -> None:
        """The horse is reaped: signal nothing any more."""
        with self._lock:
            self._pid = 0
            fd, self._pidfd = self._pidfd, None
        if fd is not None:
            os.close(fd)

    def set(self) -> None:
        super().set()
        self._signal()

    def _signal(self) -> None:
        with self._lock, contextlib.suppress(ProcessLookupError, PermissionError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, CANCEL_SIGNAL)
            elif self._pid:
                os.kill(self._pid, CANCEL_SIGNAL)


def _borrow_worker(app_state: AppState, instance_id: str, pid: int) -> None:
    """In a work horse, before its job is taken: run under the worker's instance id (and
    beat as its process ``pid``), with no listener of its own; a thread hands
    :data:`CANCEL_SIGNAL` to the job's Event."""
    app_state.records.instance_id = instance_id
    app_state.writer.pid = pid  # (and so the writer is borrowed)
    # (The worker's hold of this job did not come along: a forked store holds nothing.)
    app_state.store.listens = False  # type: ignore[attr-defined]  # (RQ: a RedisStore)

    def hear_worker() -> None:
        while True:
            store = app_state.store
            try:
                signal.sigwait({CANCEL_SIGNAL})
                for key in store.held_keys():  # the horse holds its one job's (and its state's)
                    store.events.deliver(key)
            except Exception:  # the next signal, or the stored flag, gets through
                log.exception("asyncstate: a cancel from the worker was not delivered")

    threading.Thread(target=hear_worker, name="asyncstate-horse-cancels", daemon=True).start()


class AsyncStateSimpleWorker(_Hooks, SimpleWorker):
    """RQ's worker without fork: jobs run one after another in the worker process itself."""


def run_worker(
    app_state: AppState, queues: list[str], *, burst: bool, simple: bool, name: str | None = None
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
    mask = None
    if not simple:  # before any thread starts: every thread of the worker and horse blocks it
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {CANCEL_SIGNAL})
    try:
        app_state.ensure_running()  # this process beats too: "instances" lists the worker
        return bool(worker.work(burst=burst, with_scheduler=False))
    finally:
        if mask is not None and CANCEL_SIGNAL not in mask:  # (a caller that goes on: tests)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {CANCEL_SIGNAL})


# -- Celery -------------------------------------------------------------------------------


def register_celery_task(celery: Celery, app_state: AppState) -> Any:
    """Make ``celery`` run ``app_state``'s jobs: the task :data:`TASK_NAME` (registered once
    per Celery app) and the receivers of its failure paths."""
    known = _registered.get(celery)  # (celery.tasks would finalize the user's app too early)
    if known is not None and known() is not None:
        raise RuntimeError(
            f"the Celery app {celery.main!r} already runs flask-asyncstate jobs for another"
            " Flask app; give each Flask app its own Celery app"
        )
    _registered[celery] = weakref.ref(app_state)  # what the task and receivers serve
    if celery not in _tasks:  # once per Celery app: a later Flask app reuses them
        _tasks[celery] = _register(celery)
    return _tasks[celery]


def _register(celery: Celery) -> Any:
    from celery import signals

    def ref() -> AppState | None:  # receivers live for ever; the app state they serve need not
        found = _registered.get(celery)
        return None if found is None else found()

    def ours(sender: Any) -> AppState | None:
        """The app state, if ``sender`` is our task on this Celery app."""
        if getattr(sender, "name", None) != TASK_NAME or getattr(sender, "app", None) is not celery:
            return None
        return ref()

    # shared=False: a shared task would be added to every Celery app made later, too.
    @celery.task(name=TASK_NAME, serializer="json", ignore_result=True, shared=False)
    def run_tracked_job(payload: dict[str, Any]) -> None:
        found = ref()
        if found is None:
            raise RuntimeError("the Flask app of this flask-asyncstate task is gone")
        if found.role == "web":  # a pool without worker_process_init (threads, solo)
            found.role = "celery worker"
        found.lifecycle.run_taken(payload)

    def on_failure(sender: Any = None, task_id: str = "", exception: Any = None, **kw: Any) -> None:
        from billiard.exceptions import TimeLimitExceeded, WorkerLostError

        app_state = ours(sender)
        if app_state is None:
            return
        if isinstance(exception, WorkerLostError):
            app_state.lifecycle.end_abandoned(task_id, str(exception))
        elif isinstance(exception, TimeLimitExceeded):
            app_state.lifecycle.end_abandoned(
                task_id, "the job ran past its hard time limit", "failed"
            )
        else:
            why = f"{type(exception).__name__}: {exception}"
            app_state.lifecycle.end_abandoned(task_id, why, "failed")

    def on_revoked(sender: Any = None, request: Any = None, **kw: Any) -> None:
        app_state = ours(sender)
        task_id = getattr(request, "id", None)
        if app_state is not None and task_id:
            app_state.lifecycle.end_abandoned(task_id, "the Celery task was revoked", "cancelled")

    def on_process_init(**kw: Any) -> None:
        app_state = ref()
        if app_state is None:
            return
        app_state.role = "celery worker"
        # A prefork pool child: the pool replaces it if it exits, so cancel_grace may end it.
        app_state.executor.own_process = True  # type: ignore[attr-defined]
        try:
            app_state.ensure_running()  # beat now: the pool process is listed among instances
        except Exception:
            log.exception("flask-asyncstate: could not start in a Celery pool process")

    signals.task_failure.connect(on_failure, weak=False)
    signals.task_revoked.connect(on_revoked, weak=False)
    signals.worker_process_init.connect(on_process_init, weak=False)
    return run_tracked_job
