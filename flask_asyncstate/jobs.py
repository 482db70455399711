"""What the code that starts jobs touches: the decorated ``TrackedJob`` and the ``JobHandle``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .status import FINAL

if TYPE_CHECKING:
    from .runtime import Runtime, RuntimeSource


#: Template names Flask renders with autoescape on (``Flask.select_jinja_autoescape``).
_ESCAPED = (".html", ".htm", ".xml", ".xhtml", ".svg")


class JobHandle:
    """A started job, seen from the code that started it (or from a token)."""

    def __init__(self, app_state: Runtime, job_id: str, *, is_new: bool = True) -> None:
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
        if ctx is not None:
            if not ctx.done.wait(timeout):
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
        extension: RuntimeSource,
        fn: Callable[..., Any],
        name: str | None = None,
        never_expires: bool = False,
        state: type | None = None,
        timeout: float | None = None,
        unique: bool | str = False,
        render_result: Any = None,
        label: Any = None,
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
        functools.update_wrapper(self, fn)

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
