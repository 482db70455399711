"""Code that runs in separate OS processes (spawned by multiprocessing) for cross-process tests."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from flask_asyncstate.state import StateAPI
from flask_asyncstate.stores.redis import RedisStore, client_from_url
from support.apps import define_jobs, make_app


@dataclass
class Counter:
    n: int = 0


def state_api(url: str) -> StateAPI:
    return StateAPI(RedisStore(client_from_url(url), key_prefix="test:", sweep_interval=0.2))


def hold_event(url: str, name: str, ready: Any, result: Any, wait: float) -> None:
    """Create an entry with a cancel Event, then report whether the Event got set."""
    state = state_api(url)
    event = threading.Event()
    state.create(Counter(), name=name, cancel_event=event)
    state.store.subscribed.wait(5)  # type: ignore[attr-defined]
    ready.set()
    result.put(event.wait(wait))
    state.store.close()


def increment(url: str, name: str, threads: int, times: int) -> None:
    state = state_api(url)

    def work() -> None:
        for _ in range(times):
            state.update(Counter, lambda c: setattr(c, "n", c.n + 1), name=name)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    state.store.close()


def run_job(url: str, job_name: str, args: tuple[Any, ...], out: Any) -> None:
    """Instance A: start one job, report its token, then report how it ended."""
    app, ext = make_app(url)
    jobs = define_jobs(ext)
    with app.app_context():
        handle = jobs[job_name].start(*args)
        out.put(("started", handle.token))
        ctx = ext.app_state().local_context(handle.id)
        assert ctx is not None
        ctx.done.wait(60)
        out.put(("event_set", ctx.cancelled.is_set()))
        out.put(("final", handle.status()))
    ext.shutdown()


def start_unique(url: str, rounds: int, go: Any, out: Any) -> None:
    """An instance that starts the app-unique job ``nightly`` when ``go`` is set, ``rounds``
    times, reporting ``(job id, is_new)`` each time; the test ends each round's job."""
    from flask_asyncstate import JobContext

    app, ext = make_app(url)

    @ext.job(name="nightly", unique="app")
    def nightly(job: JobContext) -> None:
        job.cancelled.wait(30)
        job.check_cancelled()

    with app.app_context():
        for i in range(rounds):
            go[i].wait(30)
            handle = nightly.start()
            out.put((handle.id, handle.is_new))
        out.put(("done", None))
        go[rounds].wait(30)
    ext.shutdown(2)
