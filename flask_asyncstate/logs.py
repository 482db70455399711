"""Which job a log record was emitted in: ``asyncstate_job_id`` and ``asyncstate_job_name``.

While a job runs (:meth:`~flask_asyncstate.lifecycle.Lifecycle.run`, on every executor:
a pool thread, the caller's thread with ``inline``, an RQ or Celery worker), its id
and name sit in a context variable of the thread running it. The first
``init_app`` of a process wraps :func:`logging.getLogRecordFactory`, once, so that
*every* record made in the process carries both fields, whoever logs it (our
code, the job's own ``logger.info(...)``, a library the job calls): the job's
values inside a job, :data:`OUTSIDE` everywhere else. A format string that names
them therefore never fails, in a job or out of one::

    logging.basicConfig(
        format="%(asctime)s %(levelname)s [%(asyncstate_job_name)s %(asyncstate_job_id)s] %(message)s"
    )

A factory rather than a :class:`logging.Filter`: a filter sees only the records of
the handler or logger it is attached to, and a format string on any other handler
would raise ``KeyError``. The factory costs one context-variable read per record.
Threads a job starts itself do not inherit the fields (Python threads do not copy
context variables); run their work with :func:`contextvars.copy_context` if their
records should carry them.
"""

from __future__ import annotations

import logging
import threading
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

#: The value of both fields on records emitted outside any job.
OUTSIDE = "-"

_job: ContextVar[tuple[str, str]] = ContextVar("asyncstate_job", default=(OUTSIDE, OUTSIDE))
_lock = threading.Lock()


class JobFields:
    """The records emitted inside the block carry this job's id and name."""

    __slots__ = ("_fields", "_token")

    def __init__(self, job_id: str, name: str) -> None:
        self._fields = (job_id, name)
        self._token: Token[tuple[str, str]] | None = None

    def __enter__(self) -> None:
        self._token = _job.set(self._fields)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _job.reset(self._token)


def current() -> tuple[str, str]:
    """The (id, name) of the job running in this context, or ``(OUTSIDE, OUTSIDE)``."""
    return _job.get()


def install() -> None:
    """Make every log record of this process carry the job fields (once per process; a
    factory installed later by someone else is wrapped again at the next ``init_app``)."""
    with _lock:
        old = logging.getLogRecordFactory()
        if getattr(old, "asyncstate_fields", False):
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = old(*args, **kwargs)
            record.asyncstate_job_id, record.asyncstate_job_name = _job.get()
            return record

        factory.asyncstate_fields = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)
