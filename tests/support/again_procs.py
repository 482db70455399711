"""Processes of the tests of jobs that run again (``tests/test_again_procs.py``): gunicorn
serving the worker tests' app on the thread pool, and one of ten instances racing for a
lost job, run in a process of its own (spawned by multiprocessing)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import redis
import requests

from support.gunicorn_server import GunicornServer

#: What a ten-instance child needs of its parent's environment.
_PASSED = ("WT_", "PYTHONPATH")


class AppGunicorn(GunicornServer):
    """gunicorn serving ``support.worker_app`` (``env``: the ``WT_*`` settings and the path)
    instead of the example app; ready once ``GET /asyncstate/jobs`` answers."""

    def __init__(self, log_dir: Path, env: dict[str, str], **kwargs: Any) -> None:
        passed = {k: v for k, v in env.items() if k.startswith(_PASSED)}
        super().__init__(log_dir, env=passed, **kwargs)

    def command(self) -> list[str]:
        return [*super().command()[:-1], "support.worker_app:create_app()"]

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {self.proc.returncode}")
        try:
            answer = requests.get(self.url + "/asyncstate/jobs", timeout=2)
        except requests.RequestException:
            return False
        return answer.status_code == 200 and len(self.current_workers()) >= self.workers


def racing_instance(env: dict[str, str], ready: Any, go: Any, stop: Any, out: Any) -> None:
    """One of the instances that see the same lost job: ``support.worker_app`` on the thread
    pool, its writer running (it sweeps and dispatches by itself). At ``go`` it also sweeps
    and dispatches at once from its main thread, as all the others do at that moment.

    Its lifecycle's ``resume_lost``, ``take_due`` and ``_run_here`` are wrapped to list, in
    Redis, every call for a job: ``<prefix>mark:resume-tries:<id>`` (each with whether it
    moved the job back to the queue), ``...:take-tries:<id>`` and ``...:taken-by:<id>``
    (it won the take and runs the job here), with this pid and the thread that called."""
    os.environ.update(env)
    from support import worker_app

    app = worker_app.create_app()
    ext = app.extensions["asyncstate"].extension
    marks = redis.Redis.from_url(env["WT_REDIS_URL"])
    prefix = env["WT_PREFIX"]

    def note(what: str, job_id: str, *more: Any) -> None:
        who = json.dumps([os.getpid(), threading.current_thread().name, *more])
        marks.rpush(f"{prefix}mark:{what}:{job_id}", who)

    with app.app_context():
        state = ext.app_state()
        lifecycle = state.lifecycle
        resume_lost, take_due = lifecycle.resume_lost, lifecycle.take_due
        run_here = lifecycle._run_here

        def resume_noted(job_id: str, instance: str | None, why: str = "") -> bool:
            moved = resume_lost(job_id, instance, why)
            note("resume-tries", job_id, moved)
            return moved

        def take_noted(job_id: str, now: float) -> bool:
            note("take-tries", job_id)
            return take_due(job_id, now)

        def run_noted(job: Any, doc: dict[str, Any], args: Any, kwargs: Any) -> None:
            note("taken-by", doc["id"])
            run_here(job, doc, args, kwargs)

        lifecycle.resume_lost = resume_noted  # type: ignore[method-assign]
        lifecycle.take_due = take_noted  # type: ignore[method-assign]
        lifecycle._run_here = run_noted  # type: ignore[method-assign]
        state.ensure_running()  # a serving instance: its writer looks for due and lost jobs
    ready.put(os.getpid())
    try:
        if go.wait(120):
            with app.app_context():
                lifecycle.sweep()
                lifecycle.dispatch()
            out.put(("looked", os.getpid()))
        stop.wait(120)
    finally:
        ext.shutdown(2)
