"""The exceptions of flask-asyncstate, one small hierarchy to catch at the level you care about.

``AsyncStateError`` is the root. Store failures are ``StoreError`` (and
``StoreUnavailable`` when the store cannot be reached at all); the original
redis-py error is always chained as ``__cause__``.
"""

from __future__ import annotations


class AsyncStateError(Exception):
    """Base class of every error raised by flask-asyncstate."""


class StoreError(AsyncStateError):
    """The shared store failed to carry out an operation."""


class StoreUnavailable(StoreError):
    """The shared store cannot be reached (connection refused, timed out, restarting).

    Retry later; the web layer answers 503.
    """


class UnserializableState(AsyncStateError, TypeError):
    """A state value cannot round-trip through the store; the message names the field."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        #: Dotted path of the offending field, e.g. ``"rows[2].when"``.
        self.path = path


class StateTooLarge(AsyncStateError, ValueError):
    """An encoded entry is larger than the ``max_entry_size`` tuning keyword."""

    def __init__(self, size: int, limit: int, key: str) -> None:
        super().__init__(
            f"state entry {key!r} is {size} bytes encoded, more than the limit of {limit} bytes"
            " (max_entry_size); store less, or raise the limit"
        )
        self.size = size
        self.limit = limit


class JobCancelled(AsyncStateError):
    """Raised by :meth:`JobContext.check_cancelled` once a cancel was requested.

    Letting it escape the job function ends the job as ``cancelled``, not ``failed``.
    """


class Refused(AsyncStateError):
    """A start that was not admitted. ``str(exc)`` is for developers and logs;
    :attr:`user_message` is for the person using the app (translated with Flask-Babel
    when it is set up), e.g. to ``flash()`` before redirecting back."""

    def __init__(self, message: str, user_message: str | None = None) -> None:
        super().__init__(message)
        #: What to tell the user; no configuration names in it.
        self.user_message = user_message or message


class QuotaExceeded(Refused):
    """The owner already has ``ASYNCSTATE_MAX_JOBS_PER_OWNER`` unfinished jobs.

    Nothing was created; the web layer answers 429.
    """


class QueueFull(Refused):
    """``ASYNCSTATE_MAX_QUEUED`` jobs already wait: on this instance for its thread pool, or
    app-wide for an RQ or Celery worker.

    Nothing was created; the web layer answers 503 with ``Retry-After``.
    """


class JobNotRetryable(Refused):
    """``retry()`` of a job that is still unfinished, or that cannot be run again (its
    function is not registered here, or it was started before jobs kept their arguments).

    Nothing changed; the web layer answers 409.
    """


class InvalidToken(AsyncStateError):
    """A job token is malformed, forged, signed with another key, or expired."""


_MAX_ERROR_MESSAGE = 2000


def error_of(exc: BaseException) -> dict[str, str]:
    """The ``error`` field for an exception: type and message; store details stay in the log."""
    if isinstance(exc, StoreError):  # host, port, command: for the log, not for the user
        return {
            "type": type(exc).__name__,
            "message": "the job store failed while the job ran; the server log has details",
        }
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a failing __str__ must still give a final document
        message = f"<{type(exc).__name__} whose message could not be read>"
    return {"type": type(exc).__name__, "message": message[:_MAX_ERROR_MESSAGE]}


class Duplicate(Exception):
    """Internal: a ``unique=`` job's start found that job unfinished (``start()`` returns it)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id
