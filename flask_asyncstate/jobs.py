"""The job a user writes, and what it gets back.

``@asyncstate.job`` turns a function into a :class:`TrackedJob`; its ``start()``
returns a :class:`JobHandle`; the function receives a :class:`Job` as its first
argument: ``progress()``, ``iter()``, ``message()``, ``check_cancelled()``,
``checkpoint()``, ``cancelled`` and ``state``. That is all of the job's public
surface.

Behind each job of this process sits its :class:`JobBuffer` (private): the
document as this process holds it. The hot path lives here: ``progress()`` only
validates, updates a dict (no lock: the job's thread is its only writer) and
marks it dirty. The writer takes the dirty document (:meth:`JobBuffer.take_dirty`)
and the job's end seals the final one (:meth:`JobBuffer.seal`); both happen in
the buffer's write turn, so no buffered progress can be written after the
final document. ``rate`` and ``eta`` are computed when the writer copies the
document (:class:`Pace`), never in ``progress()``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from flask import current_app

from .errors import JobCancelled
from .records import new_document, percent_of, reason_of
from .serialization import encodable_text
from .status import FINAL, JobStatus

if TYPE_CHECKING:
    from .appstate import AppState
    from .extension import AsyncState
    from .state import StateAPI

T = TypeVar("T")

#: Longest progress message accepted; it is shown beside a bar, not a log.
MAX_MESSAGE_LENGTH = 2000
#: Largest magnitude of ``current``/``total``: integers beyond it lose precision in JavaScript.
MAX_PROGRESS_VALUE = 2**53
#: A CPU-bound job calling progress() or check_cancelled() lets other threads run this often.
_YIELD_EVERY = 0.001
_YIELD_FOR = 0.0  # time.sleep(0) releases the GIL; waiting threads take it at once
_MAX = MAX_PROGRESS_VALUE
#: Most stages of one job, and the longest stage name.
MAX_STAGES = 50
MAX_STAGE_NAME = 200
#: Lines of ``job.log()`` a document keeps (the newest), and the longest line.
MAX_LOG_LINES = 20
MAX_LOG_TEXT = 500
#: Resumes a ``resumable=True`` job may take (a job that kills its process stops there).
RESUMES = 3
#: Longest wait before a retry, in seconds (an hour).
MAX_BACKOFF = 3600.0
#: Template names Flask renders with autoescape on (``Flask.select_jinja_autoescape``).
_ESCAPED = (".html", ".htm", ".xml", ".xhtml", ".svg")
#: Time constant, in seconds, of the rate's exponential smoothing.
SMOOTHING = 10.0
#: Samples closer together than this (seconds) are skipped: too noisy to rate.
MIN_GAP = 0.2


# -- what progress() accepts: finite numbers JavaScript shows exactly, short UTF-8 text ------


def _check_number(value: object, what: str) -> None:
    if value.__class__ is int and -MAX_PROGRESS_VALUE <= value <= MAX_PROGRESS_VALUE:
        return  # the common case, first
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"progress {what} must be a number, got {type(value).__name__}")
    if abs(value) > MAX_PROGRESS_VALUE or not math.isfinite(value):  # int first: no overflow
        raise ValueError(f"progress {what} must be finite and at most 2**53 in size, got {value}")


def _check_message(text: object) -> None:
    if not isinstance(text, str):
        raise TypeError(f"progress message must be str, got {type(text).__name__}")
    if len(text) > MAX_MESSAGE_LENGTH:
        raise ValueError(
            f"progress message is {len(text)} characters, more than {MAX_MESSAGE_LENGTH}"
        )
    if not encodable_text(text):
        raise ValueError("progress message has a lone surrogate, which UTF-8 cannot hold")


def _check_text(text: object, what: str, most: int) -> None:
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"{what} must be non-empty text, got {text!r}")
    if len(text) > most:
        raise ValueError(f"{what} is {len(text)} characters, more than {most}")
    if not encodable_text(text):
        raise ValueError(f"{what} has a lone surrogate, which UTF-8 cannot hold")


def _check_count(what: str, value: object, most: int) -> None:
    if isinstance(value, bool) and what == "resumable":
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ValueError(f"{what} must be a whole number from 0 to {most}, got {value!r}")


def _check_seconds(what: str, value: object, zero: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")


# -- rate and ETA -----------------------------------------------------------------------


class Pace:
    """Units per second and seconds left of one job (see the module docstring)."""

    __slots__ = ("_at", "_began", "_current", "_first", "rate")

    def __init__(self) -> None:
        self._at: float | None = None
        self._began = 0.0
        self._current = self._first = 0.0
        #: Smoothed units per second; None until two samples are far enough apart.
        self.rate: float | None = None

    def start(self, at: float, current: float) -> None:
        """The job began running at ``at`` with ``current`` done."""
        self._at, self._current, self.rate = at, current, None
        self._began, self._first = at, current

    def sample(self, at: float, current: float) -> None:
        """``current`` was reached at ``at`` (the document's ``updated_at``)."""
        if self._at is None:
            self.start(at, current)
            return
        gap = at - self._at
        if gap < MIN_GAP:
            return
        moved = current - self._current
        if moved < 0:  # the job counted down or restarted its count: rate it afresh
            self.start(at, current)
            return
        now_rate = moved / gap
        if at - self._began < SMOOTHING:  # early on: the average since the start
            self.rate = (current - self._first) / (at - self._began)
        elif self.rate is None:
            self.rate = now_rate
        else:
            self.rate += (1.0 - math.exp(-gap / SMOOTHING)) * (now_rate - self.rate)
        self._at, self._current = at, current

    def eta(self, current: float, total: float | None) -> float | None:
        """Seconds left at the current rate; None when there is no total or no rate yet."""
        if not total or not self.rate or self.rate <= 0:
            return None
        left = total - current
        return 0.0 if left <= 0 else round(left / self.rate, 1)

    def shown_rate(self) -> float | None:
        return None if self.rate is None else round(self.rate, 3)


class BoundState(Generic[T]):
    """The typed state entry a job declared with ``@asyncstate.job(state=SomeType)``.

    Keyed by that type and the job id, created empty when the job starts, and
    cancelled together with the job.
    """

    def __init__(self, api: StateAPI, tp: type[T], job_id: str) -> None:
        self._api, self.type, self.name = api, tp, job_id

    def get(self) -> T | None:
        return self._api.get(self.type, name=self.name)

    def update(self, fn: Callable[[T], T | None]) -> bool:
        return self._api.update(self.type, fn, name=self.name)

    def set(self, obj: T) -> None:
        """Replace the value (keeps the job's cancel Event attached)."""
        self._api.update(self.type, lambda _old: obj, name=self.name)


#: The fields ``job.iter(message=...)`` fills in: ``{current}``, ``{total}``, each
#: optionally with a thousands separator. Nothing else is a field.
_ITER_FIELD = re.compile(r"\{(current|total)(?::([,_]))?\}")


def _message_filler(message: str | None, total: float | None) -> Callable[[int], str] | None:
    """A function of the items done giving ``message`` with its fields filled, or None.

    A plain substitution, not ``str.format``: text from data (a file name with braces,
    a format spec) can neither break the job nor make it allocate.
    """
    if message is None:
        return None
    if _ITER_FIELD.search(message) is None:
        return lambda done: message

    def shown(value: float | None, separator: str | None) -> str:
        if value is None:
            return "?"
        return format(value, separator) if separator else str(value)

    total_text = {sep: shown(total, sep) for sep in (None, ",", "_")}

    def fill(done: int) -> str:
        text = _ITER_FIELD.sub(
            lambda m: shown(done, m[2]) if m[1] == "current" else total_text[m[2]], message
        )
        return text[:MAX_MESSAGE_LENGTH]  # numbers longer than their fields never overflow it

    return fill


class Job:
    """What a job function receives as its first argument: report progress, watch for a
    cancel. ``@asyncstate.job def work(job, ...)``."""

    __slots__ = (
        "_buffer",
        "_checks",
        "_doc",
        "attempt",
        "cancelled",
        "cursor",
        "id",
        "name",
        "resumed",
        "state",
    )

    def __init__(self, buffer: JobBuffer) -> None:
        #: The job id (what the token signs).
        self.id = buffer.id
        #: The job's name (the function name unless given to the decorator).
        self.name = buffer.name
        #: Set when a cancel was requested, from any instance; wait on it or poll it.
        self.cancelled: threading.Event = buffer.cancelled
        #: The job's typed state entry, if the job declared ``state=``; else None.
        self.state: BoundState[Any] | None = buffer.state
        #: This run's number, 1 for the first; retries and resumes count (see ``retries=``).
        self.attempt: int = buffer.doc.get("attempt") or 1
        #: True when this run resumes the job after its process stopped (``resumable=True``).
        self.resumed: bool = bool(buffer.doc.get("resumed"))
        #: Items :meth:`iter` finished before this run (saved with the flushed progress); a
        #: resumed run's ``job.iter()`` skips them. 0 on a first run.
        self.cursor: int = int(buffer.doc.get("cursor") or 0) if self.resumed else 0
        self._buffer = buffer
        self._doc = buffer.doc
        self._checks = 0

    @property
    def token(self) -> str:
        """The job's signed token, the one its ``start()`` handed out: for the links a job
        puts in its result to its own pages (signature only, like ``asyncstate.handle``)."""
        app_state = current_app.extensions["asyncstate"]  # a job runs in its app context
        return str(app_state.signer.sign(self.id))

    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Record progress; cheap enough for a hot loop (written at most every flush interval).

        ``total`` and ``message`` keep their previous value when omitted. Numbers must
        be finite (at most 2**53 in size) and the message at most ``MAX_MESSAGE_LENGTH``
        (2000) characters: anything else raises ``TypeError``/``ValueError`` here, in the
        job, not later. At most once a millisecond it releases the GIL for a moment, so a
        cancel reaches even a CPU-bound job within about a millisecond.
        """
        # The common case (ints in range, a short ASCII message) is checked inline: no calls.
        if current.__class__ is not int or not -_MAX <= current <= _MAX:
            _check_number(current, "current")
        if total is not None and (total.__class__ is not int or not -_MAX <= total <= _MAX):
            _check_number(total, "total")
        if message is not None and (
            message.__class__ is not str
            or len(message) > MAX_MESSAGE_LENGTH
            or not message.isascii()
        ):
            _check_message(message)
        buffer = self._buffer
        now = time.time()
        if not 0.0 < buffer.next_yield - now <= _YIELD_EVERY:  # due, or the clock went back
            buffer.pause(now)
        # No lock: the job's thread is the only writer of these fields, each assignment is
        # atomic, and ``dirty`` is set after them, so a flush that copies the document
        # meanwhile at worst writes it once more at the next tick.
        doc = self._doc
        doc["current"] = current
        if total is not None:
            doc["total"] = total
        if message is not None:
            doc["message"] = message
        doc["updated_at"] = now
        buffer.dirty = True

    def message(self, text: str) -> None:
        """Change only the message shown beside the bar."""
        _check_message(text)
        buffer = self._buffer
        with buffer.lock:
            self._doc["message"] = text
            self._doc["updated_at"] = time.time()
            buffer.dirty = True

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if a cancel was requested; call it between units of work.

        Like :meth:`progress`, it lets other threads run at most once a millisecond.
        """
        if self.cancelled.is_set():
            raise JobCancelled(f"job {self.id} was cancelled")
        self._checks += 1
        if self._checks & 31:  # the clock only every 32nd call: microseconds apart in a hot loop
            return
        now = time.time()
        if not 0.0 < self._buffer.next_yield - now <= _YIELD_EVERY:  # due, or the clock went back
            self._buffer.pause(now)

    def checkpoint(self, name: str) -> None:
        """:meth:`check_cancelled`, and a named place where a test can hold the job
        (:func:`flask_asyncstate.testing.job_gate`); costs a dict lookup otherwise."""
        self.check_cancelled()
        checkpoints = self._buffer.checkpoints
        gate = checkpoints.get(name) if checkpoints else None
        if gate is not None:
            gate.arrive(self)
            self.check_cancelled()

    def iter(
        self, iterable: Iterable[T], total: float | None = None, message: str | None = None
    ) -> Iterator[T]:
        """Yield the items of ``iterable``, checking for a cancel before each and recording
        progress after each, like tqdm: ``for row in job.iter(rows, message="{current} of
        {total} rows"):``.

        ``total`` defaults to ``len(iterable)`` when it has one. In ``message`` only
        ``{current}`` and ``{total}`` are replaced (``?`` while the total is unknown),
        optionally with a thousands separator (``{current:,}``, ``{total:_}``); every other
        character, braces included, is kept as it is: a file name in the message is text,
        never a format string.

        The number of items done is the job's ``cursor``, saved with its progress: a
        resumed run (``resumable=True``) skips the items done before it (read, not yielded).
        """
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:  # a generator: the bar stays indeterminate
                total = None
        if message is not None:
            _check_message(message)
        fill = _message_filler(message, total)
        check, progress, doc = self.check_cancelled, self.progress, self._doc
        skip = self.cursor
        for done, item in enumerate(iterable, 1):
            if done <= skip:  # done by the run this one resumes
                continue
            check()
            yield item
            doc["cursor"] = done  # before progress() marks the document dirty
            progress(done, total, None if fill is None else fill(done))

    # -- structure: children, stages, a trail ---------------------------------------

    def spawn(self, tracked_job: TrackedJob, *args: Any, **kwargs: Any) -> JobHandle:
        """Start ``tracked_job`` as a child of this job: same owner, no quota slot of its own,
        run by the executor alongside (on the thread pool, leave a thread free for it). This
        job's document counts its children (``children``); cancelling it cancels them."""
        self.check_cancelled()  # a cancelled parent starts nothing more
        buffer = self._buffer
        lifecycle = tracked_job.extension.app_state().lifecycle
        if not self._doc.get("children"):  # readers must know before the first child exists
            with buffer.lock:
                self._doc["children"] = True
                buffer.dirty = True
            lifecycle.flush_one(buffer, tracked_job, signal=False)
        handle = lifecycle.start(tracked_job, args, kwargs, parent=buffer)
        # A cancel of this job that read its children before this one was counted: the
        # stored flag says so even before this process's Event hears of it.
        if self.cancelled.is_set() or lifecycle.records.cancel_requested(self.id):
            handle.cancel()
        return handle

    def wait_children(self, timeout: float | None = None) -> dict[str, int]:
        """Wait until every child has ended (or ``timeout`` s, or a cancel of this job);
        return the counts as the document shows them (``total``, ``succeeded``, ...)."""
        app_state = current_app.extensions["asyncstate"]  # a job runs in its app context
        # One read of the counters per flush interval (what a poll of the parent would see):
        # a long wait costs the store no more than the parent's own progress does.
        every = app_state.settings.flush_interval
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            counts = app_state.records.child_counts(self.id)
            if counts["queued"] + counts["running"] == 0 or self.cancelled.is_set():
                return counts
            left = every if deadline is None else min(every, deadline - time.monotonic())
            if left <= 0:
                return counts
            self.cancelled.wait(left)  # a cancel ends the wait at once

    def stage(self, name: str) -> _Stage:
        """Begin the step ``name`` (the previous one is done): the document's ``stage`` and
        ``stages``. As a context manager it also ends the step, ``failed`` (or
        ``cancelled``) if the block raised: ``with job.stage("download"): ...``."""
        _check_text(name, "stage name", MAX_STAGE_NAME)
        buffer = self._buffer
        now = time.time()
        with buffer.lock:
            stages = [dict(s) for s in self._doc.get("stages") or ()]
            if len(stages) >= MAX_STAGES:
                raise ValueError(f"a job has at most {MAX_STAGES} stages")
            for old in stages:
                if old["status"] == "running":
                    old.update(status="done", ended_at=now)
            stages.append({"name": name, "status": "running", "started_at": now, "ended_at": None})
            self._doc["stages"], self._doc["stage"] = stages, name  # a new list: no tearing
            self._doc["updated_at"] = now
            buffer.dirty = True
        return _Stage(self, len(stages) - 1)

    def _end_stage(self, index: int, status: str) -> None:
        """End the step at ``index`` (what leaving ``with job.stage(...)`` does)."""
        buffer = self._buffer
        now = time.time()
        with buffer.lock:
            stages = [dict(s) for s in self._doc.get("stages") or ()]
            if index < len(stages) and stages[index]["status"] == "running":
                stages[index].update(status=status, ended_at=now)
                self._doc["stages"] = stages
                if self._doc.get("stage") == stages[index]["name"]:
                    self._doc["stage"] = None
                self._doc["updated_at"] = now
                buffer.dirty = True

    def log(self, text: str) -> None:
        """Add a line to the job's trail: the document's ``log``, its last
        :data:`MAX_LOG_LINES` ``{"at", "text"}`` entries (text only, at most
        :data:`MAX_LOG_TEXT` characters, longer ones cut)."""
        if not isinstance(text, str):
            raise TypeError(f"job.log() takes str, got {type(text).__name__}")
        text = text[:MAX_LOG_TEXT]
        _check_text(text, "log text", MAX_LOG_TEXT)
        buffer = self._buffer
        now = time.time()
        with buffer.lock:
            old = self._doc.get("log") or []
            self._doc["log"] = [*old[-(MAX_LOG_LINES - 1) :], {"at": now, "text": text}]
            self._doc["updated_at"] = now
            buffer.dirty = True

    def __repr__(self) -> str:
        return f"<Job {self.name} {self.id}>"


class _Stage:
    """What :meth:`Job.stage` returns: leaving it as a context manager ends the step."""

    __slots__ = ("_index", "_job")

    def __init__(self, job: Job, index: int) -> None:
        self._job, self._index = job, index

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: object, tb: object) -> None:
        if kind is None:
            status = "done"
        elif issubclass(kind, JobCancelled):
            status = "cancelled"
        else:
            status = "failed"
        self._job._end_stage(self._index, status)


#: The name the job's first argument had before 0.2 (still exported).
JobContext = Job


class JobBuffer:
    """One job of this process as this process holds it: its document, buffered until the
    writer takes it, and what running and ending the job needs (see the module docstring).
    Private: job functions get the :class:`Job` in front of it."""

    def __init__(self, job_id: str, name: str, document: dict[str, Any]) -> None:
        self.id = job_id
        self.name = name
        #: Set when a cancel was requested (the store's listener sets it, or a deadline).
        self.cancelled = threading.Event()
        #: The job's typed state entry, if the job declared ``state=``; else None.
        self.state: BoundState[Any] | None = None
        #: Whose job this is (the session or user that started it); None outside a request.
        self.owner: str | None = None
        #: The place a ``unique=`` job holds until it ends (also in its document).
        self.unique_key: str | None = None
        #: URL root of the request that started the job (see :mod:`.lifecycle`), or None.
        self.origin: str | None = None
        #: Gates tests put at named checkpoints (see :meth:`Job.checkpoint`); empty in production.
        self.checkpoints: dict[str, Any] = {}
        #: Why the Event was set when it was not a user's cancel (``"shutdown"``), else None.
        self.stop_reason: str | None = None
        #: ``time.monotonic()`` by which a job declared with ``timeout=`` must end, once running.
        self.deadline: float | None = None
        #: The deadline passed: the Event was set, and the job ends ``failed`` (``JobTimeout``).
        self.timed_out = False
        #: The document; the job's thread writes it without a lock (see :meth:`Job.progress`).
        self.doc = document
        #: Orders the writer's copies and the seal (progress() takes none).
        self.lock = threading.Lock()
        #: The document changed since the writer last took it.
        self.dirty = False
        #: When the job's thread next lets the others run (see :meth:`pause`).
        self.next_yield = 0.0
        self._write_lock = threading.Lock()  # orders store writes: final is last
        self._finished = False
        self._done = threading.Event()
        self._pace = Pace()

    @classmethod
    def new(
        cls,
        job_id: str,
        name: str,
        instance: str | None,
        owner: str | None,
        label: str,
        unique: str | None = None,
        max_attempts: int = 1,
    ) -> JobBuffer:
        """A queued job's buffer, its document as :func:`records.new_document` makes it."""
        doc = new_document(job_id, name, instance, owner, label, unique, max_attempts)
        buffer = cls(job_id, name, doc)
        buffer.owner = owner
        buffer.unique_key = unique
        return buffer

    @classmethod
    def adopt(cls, doc: dict[str, Any]) -> JobBuffer:
        """The buffer of a job whose document another process wrote (a worker taking it)."""
        buffer = cls(doc["id"], doc["name"], dict(doc))
        buffer.owner = doc.get("owner")
        buffer.unique_key = doc.get("unique")
        return buffer

    def job(self) -> Job:
        """What the job function receives."""
        return Job(self)

    def pause(self, now: float) -> None:
        """Let this process's other threads run (the cancel listener, request threads).

        A CPU-bound job otherwise keeps the GIL for Python's whole switch interval
        (5 ms) at a time, which is what a cancel would wait for.
        """
        self.next_yield = now + _YIELD_EVERY
        time.sleep(_YIELD_FOR)

    def snapshot(self) -> dict[str, Any]:
        """A copy of the document as it would be written now.

        ``percent`` is computed here rather than in ``progress()``, off the hot path.
        """
        with self.lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> dict[str, Any]:
        doc = dict(self.doc)
        current, total = doc["current"], doc["total"]
        doc["percent"] = percent_of(current, total)
        if doc["status"] == JobStatus.RUNNING:  # rate and ETA here too, off the hot path
            pace = self._pace
            pace.sample(doc["updated_at"], current)
            doc["rate"] = self.doc["rate"] = pace.shown_rate()  # kept for the final one
            doc["eta"] = pace.eta(current, total)
        else:
            doc["eta"] = None
        return doc

    # -- the buffer, as the writer and the job's end see it ----------------------

    @contextlib.contextmanager
    def write_turn(self) -> Iterator[None]:
        """Hold while writing this job's document: writes of one job never overtake each other."""
        with self._write_lock:
            yield

    @property
    def finished(self) -> bool:
        """The final document was sealed (it may still wait for the store)."""
        return self._finished

    @property
    def done(self) -> threading.Event:
        """Set once the final document is stored."""
        return self._done

    def mark_running(self) -> None:
        now = time.time()
        with self.lock:
            doc = self.doc
            doc["status"] = JobStatus.RUNNING.value
            doc["updated_at"] = now
            if doc.get("started_at") is None:  # a worker's take may have stamped it already
                doc["started_at"] = now
            self._pace.start(now, doc["current"])
            self.dirty = True

    def take_dirty(self) -> dict[str, Any] | None:
        """The document to write if it changed since the last take (and is not sealed); else None.

        Call inside :meth:`write_turn`; after a failed write, :meth:`mark_dirty` again.
        """
        if self._finished:
            return None
        with self.lock:
            if not self.dirty:
                return None
            self.dirty = False
            return self._snapshot_locked()

    def mark_dirty(self) -> None:
        """Write the document again at the next flush (a write failed, or the store lost it)."""
        with self.lock:
            self.dirty = True

    def seal(
        self, status: str, result: Any = None, error: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        """Fix the final document, once; None if it was sealed already. Call inside the write turn."""
        if self._finished:
            return None
        self._finished = True
        with self.lock:
            stages = self.doc.get("stages")
            if stages and stages[-1]["status"] == "running":
                end = {"succeeded": "done", "cancelled": "cancelled"}.get(status, "failed")
                last = dict(stages[-1], status=end, ended_at=time.time())
                self.doc["stages"], self.doc["stage"] = [*stages[:-1], last], None
            self.doc.update(
                status=JobStatus(status).value,
                result=result,
                error=error,
                reason=reason_of(status, error, self.stop_reason),
                updated_at=time.time(),
            )
            return self._snapshot_locked()

    def seal_again(self, doc: dict[str, Any]) -> None:
        """This run ended, the job did not: ``doc`` (queued to run again) was stored, and
        nothing this process buffers may be written after it. Call inside the write turn."""
        self._finished = True
        with self.lock:
            self.doc.update(doc)

    def replace_final(self, final: dict[str, Any]) -> None:
        """The sealed document could not be stored: this one stands in for it."""
        with self.lock:
            self.doc.update(final)

    def last_resort(self, status: str) -> dict[str, Any]:
        """A final document built only from values known to encode, for when the real one cannot."""
        now = time.time()
        with self.lock:
            created = self.doc.get("created_at")
            instance = self.doc.get("instance")
        return {
            "id": self.id,
            "name": str(self.name)[:200].encode("utf-8", "replace").decode("utf-8"),
            "status": JobStatus.LOST.value if status == JobStatus.LOST else JobStatus.FAILED.value,
            "current": 0,
            "total": None,
            "percent": None,
            "message": None,
            "result": None,
            "error": {
                "type": "InternalError",
                "message": "the job's final document could not be stored",
            },
            "created_at": created if isinstance(created, float) else now,
            "updated_at": now,
            "instance": str(instance),
            "owner": self.owner,
            "reason": "lost" if status == JobStatus.LOST else "error",
        }


class JobHandle:
    """A started job, seen from the code that started it (or from a token)."""

    def __init__(self, app_state: AppState, job_id: str, *, is_new: bool = True) -> None:
        self._app = app_state
        #: The job id.
        self.id = job_id
        #: False when ``start()`` of a ``unique=`` job found this one unfinished and
        #: returned it instead of starting another.
        self.is_new = is_new
        self._token: str | None = None

    @property
    def token(self) -> str:
        """The signed token to give the browser (needs ``SECRET_KEY``)."""
        if self._token is None:
            self._token = self._app.signer.sign(self.id)
        return self._token

    def status(self) -> dict[str, Any] | None:
        """The progress document, as ``/progress/<token>`` returns it; None once expired."""
        return self._app.records.status(self.id)

    def cancel(self) -> bool:
        """Request cancellation wherever the job runs; False if the job is unknown."""
        return self._app.cancel_job(self.id)

    def forget(self) -> bool:
        """Dismiss the finished job: its document goes, and no list names it any more.

        False if the job is unknown (or expired); ``RuntimeError`` if it has not ended.
        """
        doc = self._app.records.status(self.id, internal=True)
        if doc is None:
            return False
        if doc["status"] not in FINAL:
            raise RuntimeError(f"job {self.id} is {doc['status']}: cancel it, then forget it")
        self._app.records.forget(self.id, doc["owner"])
        return True

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Block until the job reaches a final status and return its document.

        Raises ``TimeoutError`` when ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        ctx = self._app.local_context(self.id)
        if ctx is not None and not ctx.done.wait(timeout):
            raise TimeoutError(f"job {self.id} did not finish within {timeout} s")
        while True:  # runs elsewhere (or runs again: a retry), poll the store
            doc = self.status()
            if doc is None or doc["status"] in FINAL:
                return doc
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} did not finish within {timeout} s")
            time.sleep(0.05)

    def retry(self) -> JobHandle:
        """Run a ``failed``, ``cancelled`` or ``lost`` job again, with the same arguments and
        token (``attempt`` + 1); ``JobNotRetryable`` while it is unfinished or when it cannot
        be run again. The owner's quota and ``unique=`` apply as at ``start()``."""
        self._app.lifecycle.rerun(self.id)
        return self

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"


class TrackedJob:
    """A function made startable as a tracked job by ``@asyncstate.job``.

    Calling it runs the plain function; :meth:`start` runs it in the pool.
    """

    def __init__(
        self,
        extension: AsyncState,
        fn: Callable[..., Any],
        name: str | None = None,
        never_expires: bool = False,
        state: type | None = None,
        timeout: float | None = None,
        unique: bool | str = False,
        render_result: Any = None,
        label: Any = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        backoff: float = 1.0,
        resumable: bool | int = False,
        queue: str | None = None,
        cancel_grace: float | None = None,
        try_again: bool = True,
    ) -> None:
        if isinstance(render_result, str) and not render_result.endswith(_ESCAPED):
            raise ValueError(
                f"render_result={render_result!r}: the template must be one Flask autoescapes"
                f" (a name ending in {', '.join(_ESCAPED)}), since the widget inserts it as HTML"
            )
        if unique not in (False, True, "app"):
            raise ValueError(f'unique must be True, False or "app", got {unique!r}')
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < float("inf")
        ):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        _check_count("retries", retries, 100)
        _check_count("resumable", resumable, 100)
        _check_seconds("backoff", backoff, zero=True)
        if cancel_grace is not None:
            _check_seconds("cancel_grace", cancel_grace)
        retry_types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
        if not retry_types or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in retry_types
        ):
            raise TypeError(f"retry_on must be an exception type or a tuple of them: {retry_on!r}")
        if queue is not None and not (
            isinstance(queue, str) and re.fullmatch(r"[A-Za-z0-9_.:-]{1,100}", queue)
        ):
            raise ValueError(f"queue must be a name of letters, digits and _.:- , got {queue!r}")
        self.extension = extension
        self.fn = fn
        self.name = name or fn.__name__
        #: What users see (a string, or a lazy one such as Flask-Babel's ``lazy_gettext``,
        #: resolved at each ``start()``); None: the name. Workers never look it up.
        self.label = label
        self.never_expires = never_expires
        self.state_type = state
        #: Seconds the job may run before it is stopped and ends ``failed``; None: no limit.
        self.timeout = None if timeout is None else float(timeout)
        #: ``True``: one unfinished job of this name per owner; ``"app"``: one in the app.
        self.unique: bool | str = unique
        #: What the widget shows on success: a template name or a callable (see :mod:`.results`).
        self.render_result = render_result
        #: Runs again after a failure (an exception of ``retry_on``, never a cancel).
        self.retries = int(retries)
        self.retry_on: tuple[type[BaseException], ...] = retry_types
        #: Seconds before the first retry; each next waits twice as long (jittered, capped).
        self.backoff = float(backoff)
        #: Runs again after its process stopped (killed, or a deploy): at most this often.
        self.resumes = (RESUMES if resumable is True else int(resumable)) if resumable else 0
        #: The RQ or Celery queue of its runs (None: ``ASYNCSTATE_RQ_QUEUE``, Celery's default).
        self.queue = queue
        #: Seconds a job in a process of its own may go on after a cancel before it is killed.
        self.cancel_grace = None if cancel_grace is None else float(cancel_grace)
        #: Its owner may run it again after it ended ("Try again"); False for work that must
        #: never run twice (a payment).
        self.try_again = bool(try_again)
        functools.update_wrapper(self, fn)

    @property
    def max_attempts(self) -> int:
        """The runs it may take at most: the first, the retries and the resumes."""
        return 1 + self.retries + self.resumes

    def retry_delay(self, retry: int, longest: float = MAX_BACKOFF) -> float:
        """Seconds before retry number ``retry`` (1-based): ``backoff * 2**(retry-1)`` with up
        to a quarter of it at random added (no herd), capped at ``longest`` (at most
        :data:`MAX_BACKOFF`; the lifecycle passes half of ``ASYNCSTATE_EXPIRES``, so a job's
        entries outlive its wait)."""
        base = min(MAX_BACKOFF, self.backoff * 2 ** min(retry - 1, 64))
        return min(longest, MAX_BACKOFF, base + random.uniform(0, base / 4))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def start(self, *args: Any, **kwargs: Any) -> JobHandle:
        """Queue the job and return at once; inside a request, bind it to the session.

        Raises :class:`~flask_asyncstate.errors.QuotaExceeded` when the owner
        already has ``ASYNCSTATE_MAX_JOBS_PER_OWNER`` unfinished jobs. For a job
        declared ``unique=``, returns the unfinished one (``handle.is_new`` False)
        if there is one, and starts nothing.
        """
        return self.extension.app_state().lifecycle.start(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<TrackedJob {self.name}>"
