"""Deadlines of jobs declared with ``@asyncstate.job(timeout=SECONDS)``, whatever runs them.

At the deadline the job's cancel Event is set (a job that checks it stops
there, and ends ``failed`` with a ``JobTimeout`` error, not ``cancelled``);
``timeout_grace`` seconds (a tuning keyword) later a job that still runs is recorded
``failed`` anyway. The writer thread of the process running the job checks
once per flush interval. A thread cannot be killed, so a pool thread that
ignores its Event keeps running until it returns (its writes no longer count);
RQ raises ``JobTimeoutException`` in the job at its limit (and kills the work
horse a minute later), Celery's prefork pool kills the process at its hard limit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .status import JobStatus

if TYPE_CHECKING:
    from .runtime import Runtime


def timeout_error(timeout: float | None) -> dict[str, str]:
    """The ``error`` field of a job that ran past its deadline."""
    return {
        "type": "JobTimeout",
        "message": f"the job ran longer than its timeout of {timeout:g} s",
    }


def check(app_state: Runtime) -> None:
    """Set the Event of jobs past their deadline; end those still running after the grace."""
    now = time.monotonic()
    grace = app_state.settings.tuning.timeout_grace
    for local in app_state.registry.running():
        ctx = local.ctx
        if ctx.deadline is None or now < ctx.deadline:
            continue
        if not ctx.timed_out:
            ctx.timed_out = True
            ctx.cancelled.set()
        elif now >= ctx.deadline + grace and not ctx.finished:
            app_state.lifecycle.finish(  # type: ignore[attr-defined]
                ctx, local.job, JobStatus.FAILED, error=timeout_error(local.job.timeout)
            )
