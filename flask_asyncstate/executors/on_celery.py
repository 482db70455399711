"""Run jobs on Celery workers: one registered task runs any tracked job from a JSON payload.

``AsyncState(app, celery=celery_app)`` registers the task :data:`TASK_NAME` on
the user's Celery app; ``celery -A MODULE worker`` runs it as any other task.
Each pool process gets its own heartbeat and cancel listener when it starts
(``worker_process_init``). Celery's failure paths that never reach the job's
code (a lost pool process, the hard time limit, a revoke) end our document
from the worker's main process.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from celery import signals

from ..errors import StoreUnavailable
from .remote import RemoteExecutor

if TYPE_CHECKING:
    from celery import Celery

    from ..runtime import Runtime

log = logging.getLogger("flask_asyncstate")

#: The name of the task that runs tracked jobs.
TASK_NAME = "flask_asyncstate.run"

#: Celery apps that run a Flask app's jobs, and that app's state (the latest registered).
_registered: weakref.WeakKeyDictionary[Any, weakref.ref[Any]] = weakref.WeakKeyDictionary()
#: The task registered on each Celery app (its receivers are connected once, with it).
_tasks: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

# One quick retry of a publish to an unreachable broker; the broker's own connect and socket
# timeouts (Celery's broker_connection_timeout, broker_transport_options) bound each attempt.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


class CeleryExecutor(RemoteExecutor):
    """Sends jobs to the Celery app's workers as :data:`TASK_NAME` tasks (JSON)."""

    engine = "celery"

    def __init__(self, celery: Celery, app_state: Runtime, grace: float) -> None:
        self.celery = celery
        self._grace = grace
        known = _registered.get(celery)  # (celery.tasks would finalize the user's app too early)
        if known is not None and known() is not None:
            raise RuntimeError(
                f"the Celery app {celery.main!r} already runs flask-asyncstate jobs for another"
                " Flask app; give each Flask app its own Celery app"
            )
        _registered[celery] = weakref.ref(app_state)  # what the task and receivers serve
        if celery not in _tasks:  # once per Celery app: a later Flask app reuses them
            _tasks[celery] = _register(celery)
        self.task = _tasks[celery]

    def enqueue(self, job_id: str, payload: dict[str, Any], timeout: float | None) -> None:
        limits = {}
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
                **limits,
            )
        except Exception as exc:  # kombu's OperationalError and friends: the broker is away
            raise StoreUnavailable(f"the Celery broker is unreachable: {exc}") from exc

    def dequeue(self, job_id: str) -> None:
        try:
            self.celery.control.revoke(job_id)
        except Exception as exc:  # noqa: BLE001 - the stored flag still stops it
            log.warning("job %s: could not revoke its Celery task: %s", job_id, exc)


def _register(celery: Celery) -> Any:
    from .. import remote

    def ref() -> Runtime | None:  # receivers live for ever; the app state they serve need not
        found = _registered.get(celery)
        return None if found is None else found()

    def ours(sender: Any) -> Runtime | None:
        """The app state, if ``sender`` is our task on this Celery app."""
        if getattr(sender, "name", None) != TASK_NAME or getattr(sender, "app", None) is not celery:
            return None
        return ref()

    # shared=False: a shared task would be added to every Celery app made later, too.
    @celery.task(name=TASK_NAME, serializer="json", ignore_result=True, shared=False)  # type: ignore[misc]
    def run_tracked_job(payload: dict[str, Any]) -> None:
        found = ref()
        if found is None:
            raise RuntimeError("the Flask app of this flask-asyncstate task is gone")
        if found.role == "web":  # a pool without worker_process_init (threads, solo)
            found.role = "celery worker"
        remote.run(found, payload)

    def on_failure(sender: Any = None, task_id: str = "", exception: Any = None, **kw: Any) -> None:
        from billiard.exceptions import TimeLimitExceeded, WorkerLostError

        app_state = ours(sender)
        if app_state is None:
            return
        if isinstance(exception, WorkerLostError):
            remote.end_abandoned(app_state, task_id, str(exception))
        elif isinstance(exception, TimeLimitExceeded):
            remote.end_abandoned(
                app_state, task_id, "the job ran past its hard time limit", "failed"
            )
        else:
            why = f"{type(exception).__name__}: {exception}"
            remote.end_abandoned(app_state, task_id, why, "failed")

    def on_revoked(sender: Any = None, request: Any = None, **kw: Any) -> None:
        app_state = ours(sender)
        task_id = getattr(request, "id", None)
        if app_state is not None and task_id:
            remote.end_abandoned(app_state, task_id, "the Celery task was revoked", "cancelled")

    def on_process_init(**kw: Any) -> None:
        app_state = ref()
        if app_state is None:
            return
        app_state.role = "celery worker"
        try:
            app_state.ensure_running()  # beat now: the pool process is listed among instances
        except Exception:
            log.exception("flask-asyncstate: could not start in a Celery pool process")

    signals.task_failure.connect(on_failure, weak=False)
    signals.task_revoked.connect(on_revoked, weak=False)
    signals.worker_process_init.connect(on_process_init, weak=False)
    return run_tracked_job
