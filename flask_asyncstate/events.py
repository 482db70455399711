"""Server-Sent Events: push a job's progress document to the browser as it changes.

The stream waits on the store's change notifications (Redis pub/sub, or local
for the memory store) and re-reads the document at least once a second in case
a notification was missed. It sends the document whenever it differs, a
``: ping`` comment every ``ASYNCSTATE_SSE_PING_INTERVAL`` seconds (which also
finds a closed page, freeing the server thread), an ``end`` event after a
final status, and after ``ASYNCSTATE_SSE_MAX_AGE`` seconds a ``reconnect``
event (the widget opens a new stream) before it closes, so no stream holds a
server thread for long, nor delays a graceful shutdown.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .status import FINAL

if TYPE_CHECKING:
    from .runtime import Runtime

#: How long the stream waits for a notification before it reads anyway.
_FALLBACK_READ = 1.0


def _event(data: Any, name: str | None = None) -> str:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def progress_stream(app_state: Runtime, job_id: str) -> Iterator[str]:
    """Yield SSE frames for one job until it ends, vanishes, or the stream grows too old."""
    settings = app_state.settings
    now = time.monotonic()
    deadline = now + settings.sse_max_age
    next_ping = now + settings.sse_ping_interval
    last: dict[str, Any] | None = None
    with app_state.store.watch(app_state.records.job_key(job_id)) as changed:
        yield "retry: 2000\n\n"
        while True:
            changed.clear()
            try:
                doc = app_state.records.status(job_id)
            except StoreError:  # the store is away: keep the stream open, read again shortly
                yield _event({"error": "the job store is unavailable, retrying"}, "unavailable")
            else:
                if doc is None:
                    yield _event({"error": "no such job in this session"}, "end")
                    return
                if doc != last:
                    yield _event(doc)
                    last = doc
                if doc["status"] in FINAL:
                    yield _event(doc, "end")
                    return
            now = time.monotonic()
            if now >= deadline:  # free this server thread; the browser opens a new stream
                yield _event({"reason": "stream lifetime reached"}, "reconnect")
                return
            if now >= next_ping:
                yield ": ping\n\n"
                next_ping = now + settings.sse_ping_interval
            changed.wait(min(_FALLBACK_READ, deadline - now, next_ping - now))
