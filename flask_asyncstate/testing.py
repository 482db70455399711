"""Helpers for testing an app that uses flask-asyncstate, with pytest or anything else.

- :func:`job_gate`: hold a job at ``job.checkpoint("name")`` until the test lets it go,
  so a test can look at (or cancel) a job in the middle of its work, without sleeping
  or patching ``time`` (which the extension uses too).
- :func:`client`: a Flask test client that sends what our cancel route asks of a
  browser: the same-origin header and, when Flask-WTF's ``CSRFProtect`` is on the app,
  its CSRF token.
- :func:`wait_for`: wait until a job reaches a status, failing with its document.
- :func:`isolated_config`: configuration giving one test's app keys of its own on a Redis
  that other tests (or other test runs) share: its job keys and channels, Flask-Session's
  session keys and the RQ queue, each under a prefix made for it.

Gates work where the job runs in the test's process (the thread pool); with
``ASYNCSTATE_EXECUTOR = "inline"`` the job runs inside ``start()``, so a gate there
could never be released, and :meth:`JobGate.arrive` says so instead of hanging.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Flask, current_app
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer

from . import appstate
from .jobs import Job, JobHandle
from .status import FINAL

__all__ = ["AsyncStateClient", "JobGate", "client", "isolated_config", "job_gate", "wait_for"]


class JobGate:
    """A closed gate at one checkpoint: jobs that reach it wait until :meth:`release`."""

    def __init__(self, name: str, inline: bool) -> None:
        self.name = name
        self._inline = inline
        self._open = threading.Event()
        self._arrived = threading.Condition()
        #: The jobs that reached the gate, in the order they did.
        self.arrivals: list[Job] = []

    def arrive(self, job: Job) -> None:
        """Called by ``job.checkpoint(name)``: wait for the release (or a cancel)."""
        if self._inline:
            raise RuntimeError(
                f"job_gate({self.name!r}) cannot hold a job run inline (ASYNCSTATE_EXECUTOR):"
                " it runs inside start(), so the test could never release it; use 'threads'"
            )
        with self._arrived:
            self.arrivals.append(job)
            self._arrived.notify_all()
        while not self._open.wait(0.01):
            if job.cancelled.is_set():
                return  # the checkpoint raises JobCancelled right after

    def wait(self, count: int = 1, timeout: float = 10.0) -> Job:
        """Block until ``count`` jobs reached the gate; the latest of them."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.arrivals) >= count, timeout):
                raise TimeoutError(
                    f"{len(self.arrivals)} of {count} jobs reached checkpoint {self.name!r}"
                    f" within {timeout} s"
                )
            return self.arrivals[count - 1]

    def release(self) -> None:
        """Let every job waiting here (and every later one) go on."""
        self._open.set()


@contextlib.contextmanager
def job_gate(name: str, app: Flask | None = None) -> Iterator[JobGate]:
    """Close a gate at checkpoint ``name`` of ``app`` (default: the current app) for the
    ``with`` block; it is released when the block ends, whatever happened in it.

    ::

        with job_gate("exported") as gate:
            handle = export.start()
            gate.wait()                      # the job is at job.checkpoint("exported")
            assert handle.status()["current"] == 10
        wait_for(handle, "succeeded")
    """
    found = appstate.get(app or current_app._get_current_object())  # type: ignore[attr-defined]
    checkpoints = found.local_jobs.checkpoints
    if name in checkpoints:
        raise RuntimeError(f"a job_gate({name!r}) is already closed on this app")
    gate = JobGate(name, inline=found.settings.executor == "inline")
    checkpoints[name] = gate
    try:
        yield gate
    finally:
        gate.release()
        checkpoints.pop(name, None)


def wait_for(
    handle: JobHandle, status: str | Iterable[str] = FINAL, timeout: float = 10.0
) -> dict[str, Any]:
    """Wait until the job's status is ``status`` (one, or any of several; default: any final
    one) and return its document. Fails at once if it ended otherwise."""
    wanted = {status} if isinstance(status, str) else {str(s) for s in status}
    deadline = time.monotonic() + timeout
    while True:
        doc = handle.status()
        if doc is not None and doc["status"] in wanted:
            return doc
        if doc is None or doc["status"] in FINAL:
            raise AssertionError(f"job {handle.id} ended without reaching {sorted(wanted)}: {doc}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"job {handle.id} not {sorted(wanted)} within {timeout} s: {doc}")
        time.sleep(0.01)


class AsyncStateClient(FlaskClient):
    """A test client whose requests carry the same-origin header and Flask-WTF's CSRF token
    (when ``CSRFProtect`` is on the app), and a same-origin ``Referer`` (Flask-WTF's strict
    check over https), as the widget's would."""

    #: Where requests go unless one says otherwise (``client(app, base_url=...)``).
    default_base_url: str | None = None

    def open(self, *args: Any, **kwargs: Any) -> Any:
        if self.default_base_url and "base_url" not in kwargs and not _has_builder(args):
            kwargs["base_url"] = self.default_base_url
        base_url = kwargs.get("base_url") or "http://localhost/"
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("X-Requested-With", "XMLHttpRequest")
        headers.setdefault("Referer", base_url.rstrip("/") + "/")
        app = self.application
        if "csrf" in app.extensions:  # under the first header Flask-WTF is told to read
            name = (app.config.get("WTF_CSRF_HEADERS") or ["X-CSRFToken"])[0]
            if not any(h.lower() == name.lower() for h in headers):
                headers[name] = self.csrf_token(base_url)
        return super().open(*args, headers=headers, **kwargs)

    def csrf_token(self, base_url: str = "http://localhost/") -> str:
        """The CSRF token of this client's session at ``base_url``, as ``generate_csrf()``
        makes it."""
        app = self.application
        field = app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
        with self.session_transaction(base_url=base_url) as sess:
            if field not in sess:  # what Flask-WTF stores: the raw value, signed per page
                sess[field] = hashlib.sha1(os.urandom(64)).hexdigest()
            raw = sess[field]
        secret = app.config.get("WTF_CSRF_SECRET_KEY") or app.secret_key
        if not secret:
            raise RuntimeError("the CSRF token needs SECRET_KEY (or WTF_CSRF_SECRET_KEY)")
        return URLSafeTimedSerializer(secret, salt="wtf-csrf-token").dumps(raw)


def _has_builder(args: tuple[Any, ...]) -> bool:
    return bool(args) and not isinstance(args[0], str)  # an EnvironBuilder or environ dict


def client(app: Flask, base_url: str | None = None, **kwargs: Any) -> AsyncStateClient:
    """An :class:`AsyncStateClient` for ``app`` (keeps cookies, like ``app.test_client()``);
    ``base_url`` (``"https://shop.example/app"``) applies to every request it sends."""
    made = AsyncStateClient(app, app.response_class, use_cookies=True, **kwargs)
    made.default_base_url = base_url or _app_base_url(app)
    return made


def _app_base_url(app: Flask) -> str | None:
    """Where Flask's test client sends requests by default (``SERVER_NAME`` and friends)."""
    server = app.config.get("SERVER_NAME")
    if not server:
        return None
    scheme = app.config.get("PREFERRED_URL_SCHEME") or "http"
    root = (app.config.get("APPLICATION_ROOT") or "/").rstrip("/")
    return f"{scheme}://{server}{root}/"


def isolated_config(redis_url: str | None = None, name: str = "test") -> dict[str, Any]:
    """Configuration for an app of its own on a shared Redis: merge it into the config of
    each test's app, before ``init_app`` (which reads the ``ASYNCSTATE_*`` keys once).

    ::

        app = create_app({"TESTING": True, **isolated_config(os.environ["REDIS_URL"])})

    Every call makes a new random prefix, ``<name>-<12 hex digits>``, and returns:

    - ``ASYNCSTATE_KEY_PREFIX``: the jobs' keys and cancel channels, so no job, quota,
      ``unique=`` place, listing or cancel of one app reaches another;
    - ``SESSION_KEY_PREFIX``: Flask-Session's keys (used by its Redis and other stores), so
      no session of one app is read by another;
    - ``ASYNCSTATE_RQ_QUEUE``: the RQ queue, so no worker of one app takes another's jobs;
    - ``ASYNCSTATE_REDIS_URL`` = ``redis_url`` when one is given (``None``: the key is left
      out, and the app keeps its own setting or the in-process store).

    Whether the sessions live in that Redis is the app's choice (``SESSION_TYPE`` and
    ``SESSION_REDIS``); the prefix only keeps them apart when they do. The keys expire as
    they would in production (jobs after ``ASYNCSTATE_EXPIRES`` untouched): nothing here
    flushes or deletes anything on a Redis other people use.
    """
    base = f"{name}-{secrets.token_hex(6)}"
    config: dict[str, Any] = {
        "ASYNCSTATE_KEY_PREFIX": f"{base}:asyncstate:",
        "SESSION_KEY_PREFIX": f"{base}:session:",
        "ASYNCSTATE_RQ_QUEUE": f"{base}-asyncstate",
    }
    if redis_url is not None:
        config["ASYNCSTATE_REDIS_URL"] = redis_url
    return config
