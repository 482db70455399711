"""The atomic places a job claims in the store: its owner's quota slot, a unique job's
place, and a place in the engine's queue.

Each is a bounded index (:meth:`Store.claim <flask_asyncstate.stores.base.Store.claim>`):
a guarded add that any number of threads and processes agree on. A place whose job
ended without giving it back (its instance died, Redis lost it) is found stale and
freed when the index is full, so nothing holds a place for ever.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .errors import StoreError
from .status import FINAL, JobStatus
from .stores.base import Store

log = logging.getLogger("flask_asyncstate")

QUEUE_KIND = "flask_asyncstate.queue"
UNIQUE_KIND = "flask_asyncstate.unique"
#: Tries of a unique claim whose holder keeps ending under it before start() gives up.
_UNIQUE_TRIES = 5
#: Longest wait, in seconds, for a unique place's holder that is still being admitted.
_PENDING_WAIT = 2.0


class Admission:
    """Mixed into :class:`~flask_asyncstate.records.JobRecords` (which gives ``statuses``)."""

    store: Store
    _queue_scanned_at: float

    def owner_key(self, owner: str) -> str:
        raise NotImplementedError

    def job_key(self, job_id: str) -> str:
        raise NotImplementedError

    def statuses(self, job_ids: list[str], internal: bool = False) -> list[dict[str, Any] | None]:
        raise NotImplementedError

    def queue_key(self) -> str:
        return self.store.key(QUEUE_KIND, "remote")

    # -- an owner's jobs -----------------------------------------------------

    def admit(self, owner: str, job_id: str, limit: int) -> bool:
        """Claim one of the owner's ``limit`` slots for an unfinished job, atomically.

        When the slots are full, ids whose jobs ended without releasing theirs
        (their instance died, or Redis lost them) are released and the claim is
        tried once more. The job's document must exist before this is called, so
        a concurrent cleanup never mistakes a new job for a vanished one.
        """
        return self._claim(self.owner_key(owner), job_id, limit, limit, _ended)

    def _claim(
        self, key: str, job_id: str, limit: int, keep: int, stale: Any, scan: bool = True
    ) -> bool:
        now = time.time()
        if self.store.claim(key, job_id, limit=limit, keep=keep, score=now):
            return True
        if not scan:
            return False
        active = sorted(self.store.claims(key).active)
        docs = self.statuses(active, internal=True) if active else []
        gone = [j for j, d in zip(active, docs) if stale(d)]
        if not gone:
            return False
        self.store.unclaim(key, gone)
        return self.store.claim(key, job_id, limit=limit, keep=keep, score=now)

    # -- unique jobs ---------------------------------------------------------

    def unique_key(self, name: str, unique: bool | str, owner: str | None) -> str | None:
        """The claim key of a job declared ``unique=``: one per owner, or one per app."""
        if not unique:
            return None
        scope = "app" if unique == "app" else f"owner|{owner or ''}"
        return self.store.key(UNIQUE_KIND, f"{scope}|{name}")

    def claim_unique(self, key: str, job_id: str) -> str | None:
        """Take the one place at ``key`` for ``job_id`` (whose document exists already);
        None when taken, else the id of the unfinished job holding it.

        A holder that ended (or vanished) without giving the place back is dropped and
        the claim tried again, so simultaneous starts anywhere agree on one job. A holder
        still being admitted (its document says ``_pending``: its quota may yet refuse it)
        is waited for, up to :data:`_PENDING_WAIT` s, so no start is handed a job that
        then never existed.
        """
        stale_rounds, deadline = 0, time.monotonic() + _PENDING_WAIT
        while stale_rounds < _UNIQUE_TRIES:
            if self.store.claim(key, job_id, limit=1, keep=0, score=time.time()):
                return None
            active = sorted(self.store.claims(key).active)
            docs = self.statuses(active, internal=True) if active else []
            live = [j for j, d in zip(active, docs) if not _ended(d)]
            if live:
                entry = self.store.read(self.job_key(live[0]), refresh=False)
                if entry is None:  # it ended (and went) just now: try again
                    continue
                if entry.data.get("_pending") and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                return live[0]
            if active:
                self.store.unclaim(key, active)
            stale_rounds += 1
        raise StoreError(f"the unique job place {key} kept changing hands; try again")

    def restore_unique(self, key: str, job_id: str) -> None:
        """Hold a running job's unique place again (after Redis lost its data)."""
        if not self.store.claim(key, job_id, limit=1, keep=0, score=time.time()):
            log.warning(
                "job %s: another job took its unique place while the store had lost it", job_id
            )

    def release_unique(self, key: str, job_id: str) -> None:
        """The job ended: the next start of that name (and owner) makes a new job."""
        self.store.unclaim(key, [job_id])

    # -- the engine's queue (jobs run by RQ or Celery workers) ----------------

    def enter_queue(self, job_id: str, limit: int) -> bool:
        """Count a job waiting for a worker against ``limit`` (app-wide, atomic); False if full.

        Ids of jobs a worker took, or that ended, are released when the queue is full.
        """
        now = time.monotonic()
        scan = now - self._queue_scanned_at >= 1.0
        if scan:
            self._queue_scanned_at = now
        return self._claim(self.queue_key(), job_id, limit, 0, _not_waiting, scan)

    def leave_queue(self, job_id: str) -> None:
        """A worker took the job, or it ended while queued."""
        self.store.unclaim(self.queue_key(), [job_id])

    def queued_ids(self) -> set[str]:
        """Ids of jobs waiting for a worker (reading restarts the index's expiry)."""
        return self.store.claims(self.queue_key()).active

    def restore(self, owner: str, job_id: str, keep: int) -> None:
        """List a running job in its owner's index again (after Redis lost its data)."""
        self.store.claim(self.owner_key(owner), job_id, limit=2**31, keep=keep, score=time.time())

    def discharge(self, owner: str, job_id: str) -> None:
        """The job ended: its slot is free; it stays among the owner's recent jobs."""
        self.store.unclaim(self.owner_key(owner), [job_id])

    def owner_jobs(self, owner: str) -> list[str]:
        """The owner's job ids, newest first: unfinished ones and the latest finished ones."""
        return self.store.claims(self.owner_key(owner)).recent


def _ended(doc: dict[str, Any] | None) -> bool:
    return doc is None or doc["status"] in FINAL


def _not_waiting(doc: dict[str, Any] | None) -> bool:
    return doc is None or doc["status"] != JobStatus.QUEUED or doc.get("instance") is not None
