"""The ``JobContext`` a job gets as its first argument, and the buffer it owns.

The hot path lives here: ``progress()`` only validates, updates a dict (no lock:
the job's thread is its only writer) and marks it dirty. The writer takes the dirty document (:meth:`JobContext.take_dirty`)
and the job's end seals the final one (:meth:`JobContext.seal`); both happen in
the context's write turn, so no buffered progress can be written after the final
document. Nothing outside this class touches the buffer.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import JobCancelled
from .limits import MAX_MESSAGE_LENGTH, MAX_PROGRESS_VALUE, _check_message, _check_number
from .pace import Pace
from .records import new_document, percent_of, reason_of
from .status import JobStatus

if TYPE_CHECKING:
    from .state import StateAPI

T = TypeVar("T")


#: A CPU-bound job calling progress() or check_cancelled() lets other threads run this often.
_YIELD_EVERY = 0.001
_YIELD_FOR = 0.0  # time.sleep(0) releases the GIL; waiting threads take it at once
_MAX = MAX_PROGRESS_VALUE


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


class JobContext:
    """Passed as the first argument to a job: report progress, watch for cancellation."""

    def __init__(self, job_id: str, name: str, document: dict[str, Any]) -> None:
        #: The job id (what the token signs).
        self.id = job_id
        #: The job's name (the function name unless given to the decorator).
        self.name = name
        #: Set when a cancel was requested, from any instance; wait on it or poll it.
        self.cancelled = threading.Event()
        #: The job's typed state entry, if the job declared ``state=``; else None.
        self.state: BoundState[Any] | None = None
        #: Whose job this is (the session or user that started it); None outside a request.
        self.owner: str | None = None
        #: The place a ``unique=`` job holds until it ends (see ``JobRecords.claim_unique``).
        self.unique_key: str | None = None
        #: URL root of the request that started the job (see :mod:`.origins`), or None.
        self.origin: str | None = None
        #: Gates tests put at named checkpoints (see :meth:`checkpoint`); empty in production.
        self.checkpoints: dict[str, Any] = {}
        #: Why the Event was set when it was not a user's cancel (``"shutdown"``), else None.
        self.stop_reason: str | None = None
        self._doc = document
        self._lock = (
            threading.Lock()
        )  # orders the writer's copies and the seal (progress() takes none)
        self._write_lock = threading.Lock()  # orders store writes: final is last
        self._dirty = False
        self._finished = False
        self._done = threading.Event()
        self._next_yield = 0.0
        self._checks = 0
        self._pace = Pace()
        #: ``time.monotonic()`` by which a job declared with ``timeout=`` must end, once running.
        self.deadline: float | None = None
        #: The deadline passed: the Event was set, and the job ends ``failed`` (``JobTimeout``).
        self.timed_out = False

    @classmethod
    def new(
        cls,
        job_id: str,
        name: str,
        instance: str | None,
        owner: str | None,
        label: str,
        unique: str | None = None,
    ) -> JobContext:
        """A queued job's context, its document as :func:`records.new_document` makes it."""
        ctx = cls(job_id, name, new_document(job_id, name, instance, owner, label, unique))
        ctx.owner = owner
        ctx.unique_key = unique
        return ctx

    @classmethod
    def adopt(cls, doc: dict[str, Any]) -> JobContext:
        """The context of a job whose document another process wrote (a worker taking it)."""
        ctx = cls(doc["id"], doc["name"], dict(doc))
        ctx.owner = doc.get("owner")
        return ctx

    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Record progress; cheap enough for a hot loop (written at most every flush interval).

        ``total`` and ``message`` keep their previous value when omitted. Numbers must
        be finite (at most 2**53 in size) and the message at most ``MAX_MESSAGE_LENGTH`` (2000) characters:
        anything else raises ``TypeError``/``ValueError`` here, in the job, not later.
        At most once a millisecond it releases the GIL for a moment, so a cancel
        reaches even a CPU-bound job within about a millisecond.
        """
        # The common case (ints in range, a short ASCII message) is checked inline: no calls.
        if current.__class__ is not int or not -_MAX <= current <= _MAX:  # type: ignore[operator]
            _check_number(current, "current")
        if total is not None and (
            total.__class__ is not int or not -_MAX <= total <= _MAX  # type: ignore[operator]
        ):
            _check_number(total, "total")
        if message is not None and (
            message.__class__ is not str
            or len(message) > MAX_MESSAGE_LENGTH
            or not message.isascii()
        ):
            _check_message(message)
        now = time.time()
        if not 0.0 < self._next_yield - now <= _YIELD_EVERY:  # due, or the clock went back
            self._yield(now)
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
        self._dirty = True

    def message(self, text: str) -> None:
        """Change only the message shown beside the bar."""
        _check_message(text)
        with self._lock:
            self._doc["message"] = text
            self._doc["updated_at"] = time.time()
            self._dirty = True

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
        if not 0.0 < self._next_yield - now <= _YIELD_EVERY:  # due, or the clock went back
            self._yield(now)

    def checkpoint(self, name: str) -> None:
        """:meth:`check_cancelled`, and a named place where a test can hold the job
        (:func:`flask_asyncstate.testing.job_gate`); costs a dict lookup otherwise."""
        self.check_cancelled()
        gate = self.checkpoints.get(name) if self.checkpoints else None
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
        """
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:  # a generator: the bar stays indeterminate
                total = None
        if message is not None:
            _check_message(message)
        fill = _message_filler(message, total)
        check, progress = self.check_cancelled, self.progress
        for done, item in enumerate(iterable, 1):
            check()
            yield item
            progress(done, total, None if fill is None else fill(done))

    def _yield(self, now: float) -> None:
        """Let this process's other threads run (the cancel listener, request threads).

        A CPU-bound job otherwise keeps the GIL for Python's whole switch interval
        (5 ms) at a time, which is what a cancel would wait for.
        """
        self._next_yield = now + _YIELD_EVERY
        time.sleep(_YIELD_FOR)

    def snapshot(self) -> dict[str, Any]:
        """A copy of the document as it would be written now.

        ``percent`` is computed here rather than in ``progress()``, off the hot path.
        """
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> dict[str, Any]:
        doc = dict(self._doc)
        current, total = doc["current"], doc["total"]
        doc["percent"] = percent_of(current, total)
        if doc["status"] == JobStatus.RUNNING:  # rate and ETA here too, off the hot path
            pace = self._pace
            pace.sample(doc["updated_at"], current)
            doc["rate"] = self._doc["rate"] = pace.shown_rate()  # kept for the final one
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
        with self._lock:
            doc = self._doc
            doc["status"] = JobStatus.RUNNING.value
            doc["updated_at"] = now
            if doc.get("started_at") is None:  # a worker's take may have stamped it already
                doc["started_at"] = now
            self._pace.start(now, doc["current"])
            self._dirty = True

    def take_dirty(self) -> dict[str, Any] | None:
        """The document to write if it changed since the last take (and is not sealed); else None.

        Call inside :meth:`write_turn`; after a failed write, :meth:`mark_dirty` again.
        """
        if self._finished:
            return None
        with self._lock:
            if not self._dirty:
                return None
            self._dirty = False
            return self._snapshot_locked()

    def mark_dirty(self) -> None:
        """Write the document again at the next flush (a write failed, or the store lost it)."""
        with self._lock:
            self._dirty = True

    def seal(
        self, status: str, result: Any = None, error: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        """Fix the final document, once; None if it was sealed already. Call inside the write turn."""
        if self._finished:
            return None
        self._finished = True
        with self._lock:
            self._doc.update(
                status=JobStatus(status).value,
                result=result,
                error=error,
                reason=reason_of(status, error, self.stop_reason),
                updated_at=time.time(),
            )
            return self._snapshot_locked()

    def replace_final(self, final: dict[str, Any]) -> None:
        """The sealed document could not be stored: this one stands in for it."""
        with self._lock:
            self._doc.update(final)

    def set_instance(self, instance: str) -> None:
        """The process that runs the job (a worker, after taking it from the queue)."""
        with self._lock:
            self._doc["instance"] = instance

    def last_resort(self, status: str) -> dict[str, Any]:
        """A final document built only from values known to encode, for when the real one cannot."""
        now = time.time()
        with self._lock:
            created = self._doc.get("created_at")
            instance = self._doc.get("instance")
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
