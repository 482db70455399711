"""The second instance of the operator's-page tests: a separate OS process (spawned by
multiprocessing) sharing the test's redis-server."""

from __future__ import annotations

from typing import Any

from flask_asyncstate.status import FINAL
from support.apps import define_jobs, make_app


def run_instance(url: str, out: Any, stop: Any) -> None:
    """Start a job that runs until cancelled and one that ends at once; report
    ``("started", {...ids})``, then ``("ended", doc)`` when the running one ends; stop when
    ``stop`` is set."""
    app, ext = make_app(url)
    jobs = define_jobs(ext)
    with app.app_context():
        running = jobs["until_cancelled"].start(120.0)
        done = jobs["count"].start(2)
        done.wait(10)
        out.put(
            (
                "started",
                {
                    "instance": ext.app_state().records.instance_id,
                    "running": running.id,
                    "done": done.id,
                },
            )
        )
        reported = False
        while not stop.wait(0.05):
            doc = running.status()
            if not reported and doc is not None and doc["status"] in FINAL:
                out.put(("ended", doc))
                reported = True
    ext.shutdown(2)
