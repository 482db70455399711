"""Writing buffered progress: every dirty document of this process in one round trip per tick.

The writer's tick takes the write turn of every running job, takes each dirty
document, and sends them together (:meth:`~flask_asyncstate.records.JobRecords.save_many`:
one pipeline on Redis, chunked at 1,000). Holding the turns while the batch is
in flight keeps the guarantee of :mod:`flask_asyncstate.lifecycle`: a job's
final document is written in its turn, so it can never be overtaken by an
older progress document. A failed batch is marked dirty again and retried at
the next tick; anything but a store error falls back to one job at a time, so
one bad document cannot hold back the others.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from . import signals
from .errors import StoreError
from .signals import send

if TYPE_CHECKING:
    from .registry import Local

#: A :class:`~flask_asyncstate.lifecycle.Lifecycle` (not imported: it imports this module).
Lifecycle = Any

log = logging.getLogger("flask_asyncstate")


def flush(lifecycle: Lifecycle) -> None:
    """End waiting jobs that were cancelled, write every running job's buffered progress,
    then retry deferred final documents."""
    lifecycle.end_cancelled_waiting()
    written = _flush_running(lifecycle, lifecycle.jobs.running())
    app = lifecycle.app_state.app_ref()
    for local, doc in written:
        send(signals.job_progress, app, job_id=local.ctx.id, document=doc)
    for local in lifecycle.jobs.deferred():
        lifecycle.retry_final(local)


def _flush_running(
    lifecycle: Lifecycle, running: list[Local]
) -> list[tuple[Local, dict[str, Any]]]:
    if not running:
        return []
    with contextlib.ExitStack() as turns:
        batch: list[tuple[Local, dict[str, Any]]] = []
        for local in running:
            turns.enter_context(local.ctx.write_turn())
            doc = local.ctx.take_dirty()
            if doc is not None:
                batch.append((local, doc))
        if not batch:
            return []
        try:
            saved = lifecycle.records.save_many(
                [(doc, local.ctx.cancelled, local.job.never_expires) for local, doc in batch]
            )
        except StoreError as exc:
            log.debug("progress of %d jobs not written (%s); will retry", len(batch), exc)
            for local, _doc in batch:
                local.ctx.mark_dirty()
            return []
        except Exception:  # noqa: BLE001 - a document that cannot be written: find it, one at a time
            return _one_by_one(lifecycle, batch)
    if not all(saved):  # the store had lost entries: prove we are alive before anyone reads
        lifecycle.app_state.writer.beat()
    return batch


def _one_by_one(
    lifecycle: Lifecycle, batch: list[tuple[Local, dict[str, Any]]]
) -> list[tuple[Local, dict[str, Any]]]:
    """Inside the turns still held: save each document on its own; log and skip bad ones."""
    written = []
    for local, doc in batch:
        try:
            lifecycle.save(local.ctx, local.job, doc)
        except StoreError:
            local.ctx.mark_dirty()
        except Exception:
            log.exception("job %s: progress could not be written", local.ctx.id)
        else:
            written.append((local, doc))
    return written
