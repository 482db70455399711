"""Job and instance documents in the store: what is written, and how a reader sees it.

A job is a store entry of kind ``flask_asyncstate.job`` named by the job id.
Its document holds the public progress fields plus ``instance`` (which
process runs it); ``cancel_requested`` comes from the store's separate cancel
flag. Each running instance keeps a heartbeat entry of kind
``flask_asyncstate.instance`` that expires 2.75 intervals after its last beat; a reader
that finds an unfinished job whose instance entry is gone reports ``lost``.
The heartbeat carries no list of jobs (jobs name their instance), so its size
stays the same however many jobs an instance holds.

A job started in a request also names its ``owner`` (the session, or the user
in it) and is listed in that owner's index (kind ``flask_asyncstate.owner``):
the unfinished ids, claimed atomically against the quota, and the recent ones.

The operator's page reads two ranked lists (kind ``flask_asyncstate.index``), so that
its poll costs the same however many jobs the store holds: ``jobs``, the ids of the
newest :data:`RECENT_JOBS` jobs by ``created_at`` (each admitted job is added, the oldest
drop off), and ``instances``, the instances that beat lately (each adds itself at its
first beat and again every :data:`_RELIST_EVERY` s). Nothing in them is a count: the page
counts statuses over the documents it reads, ``lost`` included as readers see it, so no
counter can drift across transitions, expiries or a Redis restart. A job re-created after
Redis lost it is listed again; an id whose entry is gone is skipped.

The atomic places a job claims: its owner's quota slot, a unique job's place (its key is
named once at admission and kept in the document as ``unique``), and a place in the
engine's queue. Each is a bounded index (:meth:`Store.claim
<flask_asyncstate.stores.base.Store.claim>`): a guarded add that any number of threads and
processes agree on. A place whose job ended without giving it back (its instance died,
Redis lost it) is found stale and freed when the index is full, so nothing holds a place
for ever.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from .errors import StoreError
from .status import FINAL, UNFINISHED, JobStatus
from .stores.base import Entry, Store

log = logging.getLogger("flask_asyncstate")

JOB_KIND = "flask_asyncstate.job"
INSTANCE_KIND = "flask_asyncstate.instance"
OWNER_KIND = "flask_asyncstate.owner"
QUEUE_KIND = "flask_asyncstate.queue"
UNIQUE_KIND = "flask_asyncstate.unique"
#: A parent job's counters of its children, and the index of its unfinished ones.
CHILDREN_KIND = "flask_asyncstate.children"
FAMILY_KIND = "flask_asyncstate.family"
#: Most children one parent job may spawn.
MAX_CHILDREN = 10_000
#: The counts of a parent's ``children`` (``queued`` is what the others leave of ``total``).
CHILD_COUNTS = ("total", "queued", "running", "succeeded", "failed", "cancelled", "lost")
#: Tries of a unique claim whose holder keeps ending under it before start() gives up.
_UNIQUE_TRIES = 5
#: Longest wait, in seconds, for a unique place's holder that is still being admitted.
_PENDING_WAIT = 2.0
#: ``owner=`` of :meth:`JobRecords.statuses` when any owner's job may be read.
ANYONE: Any = object()
#: The ranked lists the operator's page reads: names ``jobs`` and ``instances``.
INDEX_KIND = "flask_asyncstate.index"
#: How many of the newest jobs the ``jobs`` list keeps (what one admin poll reads at most).
RECENT_JOBS = 1000
#: How many instances the ``instances`` list keeps (the most recently beating).
LISTED_INSTANCES = 1000
#: Most jobs listed as due to run again, or as resumable (a bound, never reached in practice:
#: every such job holds one of its owner's ASYNCSTATE_MAX_JOBS_PER_OWNER slots).
MAX_SCHEDULED = 100_000
#: Seconds between an instance's additions of itself to the ``instances`` list.
_RELIST_EVERY = 60.0


class _Unchanged(Exception):
    """Raised inside a conditional update whose condition does not hold: nothing is written."""


#: The fields of the progress document, in the order they are shown.
PUBLIC_FIELDS = (
    "id",
    "name",
    "label",
    "status",
    "current",
    "total",
    "percent",
    "message",
    "result",
    "error",
    "cancel_requested",
    "created_at",
    "updated_at",
    "started_at",
    "rate",
    "eta",
    "reason",
    "attempt",
    "max_attempts",
    "retry_at",
    "resumed",
    "children",
    "stage",
    "stages",
    "log",
)
#: What the operator's page shows of a job (``<prefix>/admin/jobs``): the progress document
#: but its result (derived, so a field added to the document is never forgotten there).
ADMIN_FIELDS = tuple(f for f in PUBLIC_FIELDS if f != "result")

#: Why a job ended (the document's ``reason``; None while it runs and when it succeeded).
REASONS = ("user", "shutdown", "timeout", "lost", "error", "forced")
#: Error types that mean the process running the job was stopped, not that the job failed.
_STOPPED_TYPES = ("Shutdown", "WorkerStopped")


def reason_of(status: str, error: dict[str, Any] | None, stop_reason: str | None) -> str | None:
    """The ``reason`` of a final document: who or what ended the job."""
    kind = (error or {}).get("type")
    if status == JobStatus.CANCELLED:
        return stop_reason or "user"
    if status == JobStatus.FAILED:
        return "timeout" if kind == "JobTimeout" else "error"
    if status == JobStatus.LOST:
        return "shutdown" if kind in _STOPPED_TYPES or stop_reason == "shutdown" else "lost"
    return None


def new_document(
    job_id: str,
    name: str,
    instance: str | None,
    owner: str | None = None,
    label: str | None = None,
    unique: str | None = None,
    max_attempts: int = 1,
) -> dict[str, Any]:
    """A queued job's document. ``label`` (what users see) defaults to the name; ``unique``
    is the place a ``unique=`` job holds (see :meth:`JobRecords.unique_key`)."""
    now = time.time()
    doc = {
        "id": job_id,
        "name": name,
        "label": label or name,
        "status": JobStatus.QUEUED.value,
        "current": 0,
        "total": None,
        "percent": None,
        "message": None,
        "result": None,
        "error": None,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "rate": None,
        "eta": None,
        "reason": None,
        "attempt": 1,
        "max_attempts": max_attempts,
        "retry_at": None,
        "resumed": False,
        "instance": instance,
        "owner": owner,
    }
    if unique is not None:
        doc["unique"] = unique
    return doc


def percent_of(current: float, total: float | None) -> float | None:
    if not total:
        return None
    try:
        return round(min(100.0, max(0.0, current * 100.0 / total)), 2)
    except OverflowError:  # numbers beyond float range: no percentage rather than no document
        return None


def process_ended(instance_id: Any) -> bool:
    """Whether ``instance_id`` names a process of this host that has ended.

    An engine reports that the process running a job died from that process's parent, on
    its host: RQ's worker for its work horse, Celery's main process for a pool process
    (both reaped it first). A report that arrives after the job was taken again (Celery
    may deliver a ``WorkerLostError`` seconds late, after a sweep) names a live process,
    or one of another host: it is about an earlier run, and changes nothing.
    """
    parts = instance_id.rsplit("-", 2) if isinstance(instance_id, str) else []
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: alive
        return False
    try:  # a zombie (ended, not reaped yet) has ended too
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


class JobRecords:
    """Reads and writes job and instance entries for one app's store, and the places a job
    claims (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        instance_id: str,
        heartbeat_interval: float = 5.0,
        keep_finished: float | None = None,
    ) -> None:
        self.store = store
        #: Seconds a finished job's entry lives after its last read (None: the store's).
        self.keep_finished = keep_finished
        if keep_finished is not None:
            store.index_expires = max(store.expires, keep_finished)
        self.instance_id = instance_id
        self.heartbeat_interval = heartbeat_interval
        # Another instance seen alive is trusted for a quarter interval, sparing a poll its
        # EXISTS; its entry lives 2.75 intervals, so a dead one still reads lost within 3.
        self._alive_for = heartbeat_interval / 4
        self._alive_until: dict[str, float] = {}
        # A full engine queue is scanned for stale places at most once a second: under a
        # flood of refused starts each would otherwise read up to ASYNCSTATE_MAX_QUEUED docs.
        self._queue_scanned_at = 0.0
        #: How many of the newest jobs :meth:`recent_jobs` reads (the ``jobs`` list's size).
        self.recent_kept = RECENT_JOBS
        self._relist_at = 0.0  # when this instance next adds itself to the instances list

    def job_key(self, job_id: str) -> str:
        return self.store.key(JOB_KIND, job_id)

    def instance_key(self, instance_id: str) -> str:
        return self.store.key(INSTANCE_KIND, instance_id)

    def owner_key(self, owner: str) -> str:
        return self.store.key(OWNER_KIND, owner)

    def jobs_list_key(self) -> str:
        """The ranked list of the newest jobs (see the module docstring)."""
        return self.store.key(INDEX_KIND, "jobs")

    def due_list_key(self) -> str:
        """The ranked list of jobs waiting to run again (a retry, a resume), soonest first."""
        return self.store.key(INDEX_KIND, "due")

    def resumable_list_key(self) -> str:
        """The ranked list of unfinished ``resumable`` jobs, watched for a dead instance."""
        return self.store.key(INDEX_KIND, "resumable")

    def children_key(self, parent: str) -> str:
        return self.store.key(CHILDREN_KIND, parent)

    def family_key(self, parent: str) -> str:
        return self.store.key(FAMILY_KIND, parent)

    # -- a parent's children ------------------------------------------------------

    def adopt_child(self, parent: str, child: str) -> bool:
        """Count a new child of ``parent``; False (nothing counted) past :data:`MAX_CHILDREN`."""
        if not self.store.claim(
            self.family_key(parent), child, limit=MAX_CHILDREN, keep=0, score=time.time()
        ):
            return False
        if self.child_counts(parent)["total"] >= MAX_CHILDREN:
            self.store.forget(self.family_key(parent), [child])
            return False
        self.store.tally(self.children_key(parent), {"total": 1})
        return True

    def count_child(self, parent: str, changes: dict[str, int], ended: str | None = None) -> None:
        """A child changed state: ``changes`` to the parent's counters; with ``ended``, the
        child (that id) is no longer among the parent's unfinished ones."""
        self.store.tally(self.children_key(parent), changes)
        if ended is not None:  # gone from the index altogether: a claim never steps over it
            self.store.forget(self.family_key(parent), [ended])

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a cancel of the job is stored (read without restarting its expiry)."""
        entry = self.store.read(self.job_key(job_id), refresh=False)
        return entry is not None and entry.cancel_requested

    def unfinished_children(self, parent: str) -> list[str]:
        return sorted(self.store.claims(self.family_key(parent)).active)

    def child_counts(self, parent: str) -> dict[str, int]:
        return _counts(self.store.tallies([self.children_key(parent)])[0])

    def instances_list_key(self) -> str:
        """The ranked list of the instances that beat lately."""
        return self.store.key(INDEX_KIND, "instances")

    def transition(
        self,
        job_id: str,
        when: Any,
        change: Any,
        *,
        expect: dict[str, Any] | None = None,
        leave_queue: bool = False,
    ) -> dict[str, Any] | None:
        """Apply ``change`` (a dict, or a function of the document giving one) to the job's
        document if ``when(document)`` holds, atomically against every other writer; the
        new document, or None (no such job, or no match).

        What lets a worker's take and a web instance's cancel of a queued job, or two
        processes ending one job, never both win. A worker's take passes the queued
        document its payload carried (``expect``: no read first while it is still the
        stored one) and leaves the queue index in the same round trip (``leave_queue``).
        """
        done: list[dict[str, Any]] = []
        # A nonce of this transition: if the client resends a swap whose reply was lost, the
        # second attempt finds its own change already there and still counts as the winner.
        nonce = secrets.token_hex(8)

        def apply(doc: dict[str, Any]) -> dict[str, Any]:
            done.clear()
            if doc.get("_t") == nonce:
                done.append(doc)
                return doc
            if not when(doc):
                raise _Unchanged
            fields = change(doc) if callable(change) else change
            new = {**doc, **fields, "_t": nonce, "updated_at": time.time()}
            done.append(new)
            return new

        forget = (self.queue_key(), job_id) if leave_queue else None
        try:
            found = self.store.update(self.job_key(job_id), apply, expect=expect, forget=forget)
        except _Unchanged:
            return None
        return done[0] if found and done else None

    # -- running again (retries, resumes, "Try again") ----------------------------

    def schedule(self, job_id: str, at: float) -> None:
        """List the job as due to run again at ``at`` (a time.time()); soonest first."""
        self.store.rank(self.due_list_key(), job_id, -at, keep=MAX_SCHEDULED)

    def due(self, count: int) -> list[str]:
        """Up to ``count`` ids of jobs listed to run again, the soonest due first."""
        return self.store.ranked(self.due_list_key(), count)

    def unschedule(self, job_ids: list[str]) -> None:
        self.store.unrank(self.due_list_key(), job_ids)

    def watch(self, job_id: str, created_at: float) -> None:
        """A ``resumable`` job: checked for a dead instance until it ends."""
        self.store.rank(self.resumable_list_key(), job_id, created_at, keep=MAX_SCHEDULED)

    def watched(self, count: int) -> list[str]:
        return self.store.ranked(self.resumable_list_key(), count)

    def unwatch(self, job_ids: list[str]) -> None:
        self.store.unrank(self.resumable_list_key(), job_ids)

    def documents(self, job_ids: list[str]) -> list[dict[str, Any] | None]:
        """The stored documents, internal fields too (arguments, cursor), as they are:
        for running a job again. No expiry restarted, no lost check."""
        entries = self.store.read_many([self.job_key(j) for j in job_ids], refresh=False)
        return [None if e is None else dict(e.data) for e in entries]

    def dead(self, docs: list[dict[str, Any]]) -> set[str]:
        """Instances named by these unfinished documents whose heartbeat is gone."""
        return self._dead_instances([Entry(d, False) for d in docs])

    # -- writing (the instance that runs the job) ---------------------------

    def create(
        self, doc: dict[str, Any], event: threading.Event | None, never_expires: bool
    ) -> None:
        # While it runs, writes and beats keep the entry alive; its own expiry is what a
        # finished job gets after its last read (ASYNCSTATE_KEEP_FINISHED).
        self.store.create(
            self.job_key(doc["id"]),
            doc,
            cancel_event=event,
            never_expires=never_expires,
            ttl=self.keep_finished,
        )

    def create_admitted(
        self,
        doc: dict[str, Any],
        event: threading.Event | None,
        never_expires: bool,
        owner_limit: tuple[str, int] | None,
        queue_limit: int | None,
        watch: bool,
    ) -> list[str]:
        """Write a new job's document, claim its owner's quota slot (``owner_limit``: owner,
        limit) and, for a worker, a place in the engine's queue (``queue_limit``), and list
        it (newest jobs; watched if resumable): one round trip on Redis.

        The places found full, ``"owner"`` and/or ``"queue"``: :meth:`claim_again` looks
        at their holders; a start that still finds one full is undone, listing included.
        """
        job_id = doc["id"]
        places, claims = [], []
        if owner_limit is not None:
            owner, limit = owner_limit
            places.append("owner")
            claims.append((self.owner_key(owner), limit, limit))
        if queue_limit is not None:
            places.append("queue")
            claims.append((self.queue_key(), queue_limit, 0))
        ranks = []
        if self.store.ranks:
            ranks.append((self.jobs_list_key(), doc["created_at"], self.recent_kept))
            if watch:
                ranks.append((self.resumable_list_key(), doc["created_at"], MAX_SCHEDULED))
        taken = self.store.create(
            self.job_key(job_id),
            doc,
            cancel_event=event,
            never_expires=never_expires,
            ttl=self.keep_finished,
            member=job_id,
            claims=claims,
            ranks=ranks,
        )
        return [place for place, ok in zip(places, taken) if not ok]

    def claim_again(self, place: str, job_id: str, owner: str | None, limit: int) -> bool:
        """A place :meth:`create_admitted` found full, claimed once more after releasing
        holders whose jobs ended without giving theirs back."""
        if place == "owner" and owner is not None:
            return self._claim(self.owner_key(owner), job_id, limit, limit, _ended, tried=True)
        return self.enter_queue(job_id, limit, tried=True)

    def list_job(self, job_id: str, created_at: float) -> None:
        """Add an admitted job to the newest jobs the operator's page reads."""
        if self.store.ranks:
            self.store.rank(self.jobs_list_key(), job_id, created_at, keep=self.recent_kept)

    def forget(self, job_id: str, owner: str | None) -> None:
        """Dismiss a finished job: its document goes, and its owner's list no longer names it."""
        if owner is not None:
            self.store.forget(self.owner_key(owner), [job_id])
        self.remove(job_id)

    def save(self, doc: dict[str, Any], event: threading.Event, never_expires: bool) -> bool:
        """Write the document; re-create the entry if it vanished (a Redis restart): then False."""
        if self.store.write(self.job_key(doc["id"]), doc):
            return True
        self.create(doc, event, never_expires)
        self.list_job(doc["id"], doc["created_at"])  # the list may have gone with it
        return False

    def save_many(self, items: list[tuple[dict[str, Any], threading.Event, bool]]) -> list[bool]:
        """:meth:`save` for several jobs in one round trip; False where an entry was re-created."""
        found = self.store.write_many([(self.job_key(doc["id"]), doc) for doc, _, _ in items])
        for ok, (doc, event, never_expires) in zip(found, items):
            if not ok:
                self.create(doc, event, never_expires)
                self.list_job(doc["id"], doc["created_at"])  # the list may have gone with it
        return found

    def beat(
        self,
        info: dict[str, Any],
        interval: float,
        running: list[str],
        extra: list[str],
        owners: Iterable[str] = (),
        claims: Iterable[str] = (),
    ) -> set[str] | None:
        """Refresh this instance's liveness entry; keep its silent jobs (and ``extra`` keys,
        their state entries, and their ``owners``' indexes) from expiring.

        Returns None when the entry had vanished (first beat, or Redis lost its data
        in a restart), else the ids of ``running`` jobs whose entries are gone (lost in
        a failover before they reached the replica): the caller rewrites those documents.
        """
        key = self.instance_key(self.instance_id)
        found = self.store.write(key, info)
        if not found:
            self.store.create(key, info, ttl=2.75 * interval)
        keys = [self.job_key(j) for j in running]
        missing = set(self.store.touch([*keys, *extra]))
        self.store.touch_claims([*(self.owner_key(o) for o in owners), *claims])
        now = time.monotonic()
        if self.store.ranks and (not found or now >= self._relist_at):
            # At the first beat (or after Redis lost us), then once a minute: the list of
            # instances stays right after it was lost, and drops instances that stopped
            # beating (their entries are gone already: readers skip them meanwhile).
            at = time.time()
            floor = at - max(10 * _RELIST_EVERY, 10 * interval)
            key = self.instances_list_key()
            self.store.rank(key, self.instance_id, at, keep=LISTED_INSTANCES, floor=floor)
            self._relist_at = now + _RELIST_EVERY
        if not found:
            return None
        return {j for j, k in zip(running, keys) if k in missing}

    def remove(self, job_id: str, unlist: bool = True) -> bool:
        """Delete the job's entry (and, with ``unlist``, its place among the newest jobs)."""
        removed = self.store.remove(self.job_key(job_id))
        if unlist and self.store.ranks:
            self.store.unrank(self.jobs_list_key(), [job_id])
        return removed

    def retire_instance(self) -> None:
        """This process stops: its heartbeat entry goes, and it leaves the instances list."""
        self.store.remove(self.instance_key(self.instance_id))
        if self.store.ranks:
            self.store.unrank(self.instances_list_key(), [self.instance_id])

    # -- reading (any instance) ----------------------------------------------

    def status(
        self, job_id: str, internal: bool = False, *, owner: object = ANYONE
    ) -> dict[str, Any] | None:
        """The public progress document of a job, or None if it is unknown or expired (or,
        with ``owner``, another owner's)."""
        return self.statuses([job_id], internal, owner=owner)[0]

    def statuses(
        self,
        job_ids: list[str],
        internal: bool = False,
        *,
        owner: object = ANYONE,
        touch: bool = True,
    ) -> list[dict[str, Any] | None]:
        """Public documents (with ``internal``, also ``instance`` and ``owner``); reading
        restarts the expiry of jobs that ended (unless ``touch`` is False: then
        :meth:`touch_ended` does it for the documents the caller keeps).

        An unfinished job's entry is kept alive by its instance (writes and
        heartbeats), so a poll reads it without the extra expiry work; a finished
        (or lost) one lives ``ASYNCSTATE_EXPIRES`` after its last read.

        With ``owner``, a job of any other owner reads as None, before anything else is
        done with it: no instance check, no expiry restarted. A stranger's poll of it then
        costs what a poll of a job that does not exist costs, and keeps nothing alive.
        """
        keys = [self.job_key(j) for j in job_ids]
        entries = self.store.read_many(keys, refresh=False)
        if owner is not ANYONE:
            entries = [
                e if e is not None and e.data.get("owner") == owner else None for e in entries
            ]
        docs = self._public(entries, internal)
        if touch:
            self.touch_ended(job_ids, docs)
        return docs

    def touch_ended(self, job_ids: list[str], docs: list[dict[str, Any] | None]) -> None:
        """Restart the expiry of the jobs among ``docs`` (read by :meth:`statuses`) that ended."""
        # A document written in the last moment has its full expiry already: no touch.
        # (A timestamp from the future, another host's clock, does not count as fresh.)
        now = time.time()
        fresh = now - min(1.0, self.store.expires / 10)
        ended = [
            self.job_key(j)
            for j, d in zip(job_ids, docs)
            if d is not None and d["status"] in FINAL and not fresh <= (d["updated_at"] or 0) <= now
        ]
        if ended:
            self.store.touch(ended)

    def owner_documents(self, owner: str, finished: int) -> list[tuple[str, dict[str, Any]]]:
        """The owner's jobs, newest first, as ``(id, internal document)``: every unfinished
        one and the ``finished`` newest that ended. Reading restarts the expiry of those
        listed that ended (and of no other).

        The owner's index keeps ``finished`` ended ids, and one more from a job's end to the
        owner's next start (the index trims when it claims): that one is not listed.
        """
        ids = self.owner_jobs(owner)
        docs = self.statuses(ids, internal=True, owner=owner, touch=False)
        kept: list[tuple[str, dict[str, Any]]] = []
        for job_id, doc in zip(ids, docs):
            if doc is None:
                continue
            if doc["status"] in FINAL:
                if finished <= 0:
                    continue
                finished -= 1
            kept.append((job_id, doc))
        self.touch_ended([j for j, _ in kept], [d for _, d in kept])
        return kept

    def all_jobs(self) -> list[dict[str, Any]]:
        """Every live job of every instance, newest first (a scan of the whole store: for
        the CLI; the operator's page reads :meth:`recent_jobs`)."""
        keys = self.store.keys(JOB_KIND)
        entries = self.store.read_many(keys, refresh=False)
        docs = [d for d in self._public(entries, internal=True) if d is not None]
        return sorted(docs, key=lambda d: d["created_at"], reverse=True)

    def recent_jobs(self) -> list[dict[str, Any]]:
        """The newest :attr:`recent_kept` jobs of every instance, newest first, as
        :meth:`all_jobs` gives them; read through the ``jobs`` list, so the cost is the
        same however many jobs the store holds. Reading restarts no expiry.

        A store without ranked lists is scanned (every job) instead.
        """
        if not self.store.ranks:
            return self.all_jobs()
        ids = self.store.ranked(self.jobs_list_key(), self.recent_kept)
        entries = self.store.read_many([self.job_key(j) for j in ids], refresh=False)
        docs = [d for d in self._public(entries, internal=True) if d is not None]
        return sorted(docs, key=lambda d: d["created_at"], reverse=True)

    def instances(self) -> list[dict[str, Any]]:
        """Every live instance's heartbeat document (a scan of the whole store: the CLI)."""
        keys = self.store.keys(INSTANCE_KIND)
        entries = self.store.read_many(keys, refresh=False)
        return [e.data for e in entries if e is not None]

    def listed_instances(self) -> list[dict[str, Any]]:
        """The heartbeat documents of the instances in the ``instances`` list (those that
        beat lately), as :meth:`instances` gives them, at a cost that does not grow with
        the jobs. A store without ranked lists is scanned instead.

        The instances found alive spare the next reads of their jobs an EXISTS each.
        """
        if not self.store.ranks:
            return self.instances()
        ids = self.store.ranked(self.instances_list_key(), LISTED_INSTANCES)
        entries = self.store.read_many([self.instance_key(i) for i in ids], refresh=False)
        alive_until = time.monotonic() + self._alive_for
        found = []
        for instance_id, entry in zip(ids, entries):
            if entry is not None:
                self._alive_until[instance_id] = alive_until
                found.append(entry.data)
        return found

    def _public(
        self, entries: list[Entry | None], internal: bool = False
    ) -> list[dict[str, Any] | None]:
        dead = self._dead_instances(entries)
        if dead:
            entries = self._read_again(entries, dead)
        out: list[dict[str, Any] | None] = []
        for entry in entries:
            if entry is None:
                out.append(None)
                continue
            doc = dict(entry.data, cancel_requested=entry.cancel_requested)
            # A resumable job with resumes left is not lost: the next sweep puts it back in
            # the queue. Read as lost meanwhile, a final status, its pollers would stop.
            if doc["status"] in UNFINISHED and doc.get("instance") in dead:
                if doc.get("resumes_left"):  # it runs again as soon as a process looks
                    doc.update(status=JobStatus.QUEUED.value, resumed=True, eta=None)
                else:
                    doc.update(status=JobStatus.LOST.value, reason="lost", eta=None)
            public = {f: doc.get(f) for f in PUBLIC_FIELDS}
            if internal:
                public["instance"] = doc.get("instance")
                public["owner"] = doc.get("owner")
                public["unique"] = doc.get("unique")
                public["parent"] = doc.get("parent")
            out.append(public)
        self._with_children(entries, out)
        return out

    def _read_again(self, entries: list[Entry | None], dead: set[str]) -> list[Entry | None]:
        """The entries of jobs of instances found dead, read once more: a process that ends
        (an RQ work horse after its one job) writes its job's final document, then removes
        its heartbeat; a document read before the one and a heartbeat checked after the
        other would read a job that just succeeded as lost."""
        stale = {
            i: self.job_key(str(e.data.get("id")))
            for i, e in enumerate(entries)
            if e is not None
            and e.data.get("status") in UNFINISHED
            and e.data.get("instance") in dead
        }
        fresh = self.store.read_many(list(stale.values()), refresh=False)
        again = list(entries)
        for i, entry in zip(stale, fresh):
            again[i] = entry
        return again

    def _with_children(
        self, entries: list[Entry | None], docs: list[dict[str, Any] | None]
    ) -> None:
        """Parents' ``children`` counts: one read of their counters for all of them (no
        read per child); a parent with no progress of its own shows its children's."""
        parents = [
            (e.data["id"], d)
            for e, d in zip(entries, docs)
            if e is not None and d is not None and e.data.get("children")
        ]
        if not parents:
            return
        found = self.store.tallies([self.children_key(p) for p, _d in parents])
        for (_p, doc), raw in zip(parents, found):
            counts = doc["children"] = _counts(raw)
            if doc["total"] is None and counts["total"]:
                done = counts["total"] - counts["queued"] - counts["running"]
                doc.update(
                    current=done,
                    total=counts["total"],
                    percent=percent_of(done, counts["total"]),
                )

    def _dead_instances(self, entries: list[Entry | None]) -> set[str]:
        owners = {
            e.data.get("instance")
            for e in entries
            if e is not None and e.data.get("status") in UNFINISHED
        }
        owners.discard(self.instance_id)  # we are alive: we are the ones asking
        now = time.monotonic()
        dead = set()
        for owner in owners:
            if not isinstance(owner, str) or self._alive_until.get(owner, 0.0) > now:
                continue
            if self.store.exists(self.instance_key(owner)):
                if len(self._alive_until) > 1000:  # instances come and go: forget old ones
                    self._alive_until.clear()
                self._alive_until[owner] = now + self._alive_for
            else:
                dead.add(owner)
        return dead

    # -- places: quota slots, unique places, the engine queue ----------------------------

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
        self,
        key: str,
        job_id: str,
        limit: int,
        keep: int,
        stale: Any,
        scan: bool = True,
        tried: bool = False,
    ) -> bool:
        """Claim; when refused, release holders ``stale`` says ended and claim once more
        (``tried``: the first claim was made already, and refused)."""
        now = time.time()
        if not tried and self.store.claim(key, job_id, limit=limit, keep=keep, score=now):
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

    def enter_queue(self, job_id: str, limit: int, tried: bool = False) -> bool:
        """Count a job waiting for a worker against ``limit`` (app-wide, atomic); False if full.

        Ids of jobs a worker took, or that ended, are released when the queue is full
        (looked for at most once a second: a flood of refused starts reads nothing more).
        """
        now = time.monotonic()
        scan = now - self._queue_scanned_at >= 1.0
        if scan:
            self._queue_scanned_at = now
        return self._claim(self.queue_key(), job_id, limit, 0, _not_waiting, scan, tried)

    def leave_queue(self, job_id: str) -> None:
        """A worker took the job, or it ended while queued.

        Forgotten, not just marked inactive: the queue index lists no recent members, so
        the next claim has nothing to trim, and the worker's take costs two commands.
        """
        try:
            self.store.forget(self.queue_key(), [job_id])
        except NotImplementedError:  # a store plugin without forget
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


def _counts(raw: dict[str, int]) -> dict[str, int]:
    """The public ``children`` counts from the stored counters."""
    counts = {name: max(0, int(raw.get(name, 0))) for name in CHILD_COUNTS}
    others = sum(counts[n] for n in CHILD_COUNTS[2:])
    counts["queued"] = max(0, counts["total"] - others)
    return counts


def _ended(doc: dict[str, Any] | None) -> bool:
    return doc is None or doc["status"] in FINAL


def _not_waiting(doc: dict[str, Any] | None) -> bool:
    return doc is None or doc["status"] != JobStatus.QUEUED or doc.get("instance") is not None
