"""What user code touches: the decorated ``TrackedJob``, the ``JobContext`` a job gets, the ``JobHandle``.

The hot path lives here: ``JobContext.progress()`` only updates a dict under a
lock and marks it dirty; the runner's writer thread ships the newest value.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import JobCancelled
from .records import FINAL, percent_of
from .serialization import encodable_text

if TYPE_CHECKING:
    from .extension import AsyncState
    from .runner import JobRunner
    from .state import StateAPI

T = TypeVar("T")


#: A CPU-bound job calling progress() or check_cancelled() lets other threads run this often.
_YIELD_EVERY = 0.001
_YIELD_FOR = 0.0  # time.sleep(0) releases the GIL; waiting threads take it at once

#: Longest progress message accepted; it is shown beside a bar, not a log.
MAX_MESSAGE_LENGTH = 2000
#: Largest magnitude of ``current``/``total``: integers beyond it lose precision in JavaScript.
MAX_PROGRESS_VALUE = 2**53


def _check_number(value: object, what: str) -> None:
    if value.__class__ is int and -MAX_PROGRESS_VALUE <= value <= MAX_PROGRESS_VALUE:  # type: ignore[operator]
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
        self._doc = document
        self._lock = threading.Lock()  # guards _doc and _dirty: the hot path
        self._write_lock = threading.Lock()  # orders store writes: final is last
        self._dirty = False
        self._finished = False
        self._done = threading.Event()
        self._next_yield = 0.0

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
        _check_number(current, "current")
        if total is not None:
            _check_number(total, "total")
        if message is not None:
            _check_message(message)
        now = time.time()
        if not 0.0 < self._next_yield - now <= _YIELD_EVERY:  # due, or the clock went back
            self._yield(now)
        with self._lock:
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
        now = time.time()
        if not 0.0 < self._next_yield - now <= _YIELD_EVERY:  # due, or the clock went back
            self._yield(now)

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
        doc["percent"] = percent_of(doc["current"], doc["total"])
        return doc


class JobHandle:
    """A started job, seen from the code that started it (or from a token)."""

    def __init__(self, runner: JobRunner, job_id: str) -> None:
        self._runner = runner
        #: The job id.
        self.id = job_id
        self._token: str | None = None

    @property
    def token(self) -> str:
        """The signed token to give the browser (needs ``SECRET_KEY``)."""
        if self._token is None:
            self._token = self._runner.signer.sign(self.id)
        return self._token

    def status(self) -> dict[str, Any] | None:
        """The progress document, as ``/progress/<token>`` returns it; None once expired."""
        return self._runner.records.status(self.id)

    def cancel(self) -> bool:
        """Request cancellation wherever the job runs; False if the job is unknown."""
        return self._runner.cancel(self.id)

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Block until the job reaches a final status and return its document.

        Raises ``TimeoutError`` when ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        ctx = self._runner.local_context(self.id)
        if ctx is not None:
            if not ctx._done.wait(timeout):
                raise TimeoutError(f"job {self.id} did not finish within {timeout} s")
            return self.status()
        while True:  # runs elsewhere: poll the store
            doc = self.status()
            if doc is None or doc["status"] in FINAL:
                return doc
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} did not finish within {timeout} s")
            time.sleep(0.05)

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
    ) -> None:
        self.extension = extension
        self.fn = fn
        self.name = name or fn.__name__
        self.never_expires = never_expires
        self.state_type = state
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def start(self, *args: Any, **kwargs: Any) -> JobHandle:
        """Queue the job and return at once; inside a request, bind it to the session.

        Raises :class:`~flask_asyncstate.errors.QuotaExceeded` when the session
        already has ``ASYNCSTATE_MAX_JOBS_PER_SESSION`` unfinished jobs.
        """
        return self.extension.runner().start(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<TrackedJob {self.name}>"
