"""Who is calling the store: a web request (short waits, fail fast) or background work (patient).

The Redis store picks its client by this; see :mod:`flask_asyncstate.stores.redis`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from flask import has_request_context

_request_path: ContextVar[bool | None] = ContextVar("asyncstate_request_path", default=None)


def on_request_path() -> bool:
    """Whether store calls now serve a web request (short waits) or background work (patient).

    Inside a request by default; :func:`request_path` says so for code that
    answers a request outside its context (a streamed response).
    """
    forced = _request_path.get()
    return has_request_context() if forced is None else forced


@contextlib.contextmanager
def request_path(on: bool = True) -> Iterator[None]:
    """Treat the store calls in this block as request-path calls (or, with False, background)."""
    token = _request_path.set(on)
    try:
        yield
    finally:
        _request_path.reset(token)
