"""Per-process limits on open Server-Sent Events streams, in all and per owner.

Each stream holds a server thread (or greenlet) for up to ``sse_max_age`` seconds (a
tuning keyword), so one browser, or a flood of them, could otherwise take every thread
of a worker. A refused stream is answered 429 and the widget polls instead.

By default (``ASYNCSTATE_MAX_STREAMS = None``) streams are on only where one costs
no thread: a process whose sockets gevent or eventlet patched. On a threaded
server (gunicorn ``gthread``, ``sync``, waitress, the dev server) they are off and
every widget polls, so streams can never take the threads other pages need.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any


class StreamSlots:
    """Counts open streams; :meth:`acquire` refuses beyond ``total`` or ``per_owner``.

    A slot is released when its response is closed. One that is never closed (a
    server that skips ``close()``) is reclaimed after ``lifetime`` seconds, longer
    than any stream lives.
    """

    #: Streams per process by default where a stream costs no thread (gevent, eventlet).
    GREEN_TOTAL = 1000

    def __init__(self, total: int | None, per_owner: int, lifetime: float) -> None:
        #: None: decided at the first stream, by :func:`green_server` (see the module).
        self.total = total
        self.per_owner = per_owner
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._open: dict[int, tuple[str, float]] = {}  # slot id -> (owner, opened at)
        self._next = 0

    def acquire(self, owner: str) -> Slot | None:
        if self.total is None:  # decided late: gunicorn patches before it loads the app
            self.total = self.GREEN_TOTAL if green_server() else 0
        if self.total == 0:
            return None
        now = time.monotonic()
        with self._lock:
            for sid, (_o, opened) in list(self._open.items()):
                if now - opened > self.lifetime:
                    del self._open[sid]
            mine = sum(1 for o, _t in self._open.values() if o == owner)
            if len(self._open) >= self.total or mine >= self.per_owner:
                return None
            self._next += 1
            self._open[self._next] = (owner, now)
            return Slot(self, self._next)

    def release(self, sid: int) -> None:
        with self._lock:
            self._open.pop(sid, None)

    def count(self) -> int:
        """Streams open in this process now."""
        with self._lock:
            return len(self._open)


def green_server() -> bool:
    """Whether this process serves requests on greenlets: gevent or eventlet patched its
    sockets, so an open stream waits without holding an OS thread."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("socket"):
        return True
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    return eventlet_patcher is not None and bool(eventlet_patcher.is_monkey_patched("socket"))


class Slot:
    """One admitted stream; wrap its frames so that closing the response frees the slot."""

    def __init__(self, slots: StreamSlots, sid: int) -> None:
        self._slots, self._sid = slots, sid

    def wrap(
        self, frames: Iterator[str], context: Callable[[], AbstractContextManager[Any]]
    ) -> _Stream:
        return _Stream(frames, self, context)

    def release(self) -> None:
        self._slots.release(self._sid)


class _Stream:
    """The response body: each frame is produced inside ``context``; ``close`` frees the slot."""

    def __init__(
        self, frames: Iterator[str], slot: Slot, context: Callable[[], AbstractContextManager[Any]]
    ) -> None:
        self._frames, self._slot, self._context = frames, slot, context

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> str:
        try:
            with self._context():
                return next(self._frames)
        except BaseException:
            self._slot.release()  # ended (or failed): the slot is free at once
            raise

    def close(self) -> None:
        try:
            close = getattr(self._frames, "close", None)
            if close is not None:
                with self._context():
                    close()
        finally:
            self._slot.release()
