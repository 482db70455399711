"""The request context a job runs in, modelled on the request that started it.

A job started in a request runs inside a request context with that request's
URL root (scheme, host, port, script root), so ``url_for(..., _external=True)``
builds the same links as the view would. It carries no body, no cookies and no
session of the user's, and nothing it does is saved to a session: only the
address travels (as a string, so it goes to RQ and Celery workers too). A job
started outside a request gets an app context only, where ``SERVER_NAME``,
``APPLICATION_ROOT`` and ``PREFERRED_URL_SCHEME`` apply as in any Flask CLI
command. Eager, thread-pool and worker runs all go through :func:`job_context`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from flask import Flask, has_request_context, request

from .stores.base import request_path

#: Longest URL root kept (a hostile Host header is not worth more).
MAX_ORIGIN = 2048

_in_job: ContextVar[bool] = ContextVar("asyncstate_in_job", default=False)


def capture() -> str | None:
    """The current request's URL root (``https://example.com/app/``), or None outside one."""
    if not has_request_context():
        return None
    root = request.url_root
    return root if len(root) <= MAX_ORIGIN else None


def in_job() -> bool:
    """Whether this code runs inside a job (whose request context serves no user)."""
    return _in_job.get()


@contextlib.contextmanager
def job_context(app: Flask, origin: Any) -> Iterator[None]:
    """The context a job runs in: a fresh app context (its own ``g``, no user), and a bare
    request context at ``origin`` when it has one. Its store calls stay patient (it is
    background work, not a request), and a job it starts gets no owner."""
    token = _in_job.set(True)
    try:
        with app.app_context(), request_path(False):
            if isinstance(origin, str) and origin:
                with app.test_request_context("/", base_url=origin):
                    yield
            else:
                yield
    finally:
        _in_job.reset(token)
