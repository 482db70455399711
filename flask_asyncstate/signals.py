"""Blinker signals, sent with the Flask app as sender (like Flask's own signals).

Receivers get ``job_id`` and ``document`` (the progress document) as keyword
arguments. ``job_progress`` is coalesced: it fires when buffered progress is
written, not on every ``progress()`` call.
"""

import logging
from typing import Any

from blinker import Namespace

log = logging.getLogger("flask_asyncstate")

_signals = Namespace()

#: A job left the queue and its function is about to run.
job_started = _signals.signal("asyncstate-job-started")
#: Buffered progress of a job was written to the store.
job_progress = _signals.signal("asyncstate-job-progress")
#: A job reached a final status (``document["status"]`` says which).
job_finished = _signals.signal("asyncstate-job-finished")
#: The request-path circuit breaker in front of Redis changed state; receivers get ``old``
#: and ``new`` (``"closed"``, ``"open"``, ``"half-open"``). Alert on ``new == "open"``.
store_circuit_changed = _signals.signal("asyncstate-store-circuit-changed")


def send(signal: Any, app: Any, **kwargs: Any) -> None:
    """Send a signal; a failing receiver is logged, and never stops a job, the writer or a request."""
    if app is None:
        return
    try:
        signal.send(app, **kwargs)
    except Exception:
        log.exception("a receiver of flask-asyncstate's %r signal failed", signal.name)
