"""The writer thread of one app in one process: flush buffered progress, beat the heartbeat.

Every ``ASYNCSTATE_FLUSH_INTERVAL`` it writes the progress of jobs that changed
and retries final documents that met an outage; in apps with jobs that run again
(``retries=``, ``resumable=``) it takes due ones every second; once a beat it acts
on watched jobs (resumable ones, children) of dead instances; every heartbeat interval it
refreshes this instance's liveness entry (a fixed size: jobs name their
instance, the beat does not list them) and keeps the entries of silent jobs
alive. No failure of one step stops the others, or the loop.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

from .errors import StoreError
from .executors import RemoteExecutor

if TYPE_CHECKING:
    from .appstate import AppState

log = logging.getLogger("flask_asyncstate")


class Writer:
    """Owns the writer thread; :meth:`start` (re)starts it, :meth:`stop` ends it."""

    def __init__(self, app_state: AppState) -> None:
        self.app_state = app_state
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started_at = time.time()
        #: Jobs running under this instance id in other processes (an RQ forking worker's
        #: work horse), counted in the beat's ``jobs``.
        self.lent = 0
        #: The process the beat names: this one, or the one whose instance id this process
        #: borrows (see :attr:`borrowed`).
        self.pid = os.getpid()

    @property
    def borrowed(self) -> bool:
        """True in a process that runs under another's instance id, which that process
        beats (an RQ work horse and its worker): no beat at the start, none at the end;
        the loop's beats (after an interval) keep the job's entries, and the id should
        the other process die, alive."""
        return self.pid != os.getpid()

    @property
    def thread(self) -> threading.Thread | None:
        """The current writer thread (for monitoring)."""
        return self._thread

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        """Beat once (so no reader sees a new instance's jobs as lost), then run the loop."""
        self._stop.clear()
        if not self.borrowed:
            self.beat()
        name = f"asyncstate-writer-{self.app_state.instance_id}"
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def after_fork(self) -> None:
        """The parent's writer thread did not come along."""
        self._thread = None
        self._stop = threading.Event()
        self.lent = 0
        self.pid = os.getpid()

    def stop(self, join: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=join)

    def _loop(self) -> None:
        app_state = self.app_state
        settings = app_state.settings
        # Beats also keep running jobs' entries alive (polls of running jobs do not restart
        # their expiry), so beat at least three times per ASYNCSTATE_EXPIRES.
        beat_every = min(settings.heartbeat_interval, settings.expires / 3)
        next_beat = time.monotonic() + beat_every
        # Jobs due to run again (retries, resumes) are looked for every second at most, dead
        # instances' resumable jobs once a beat; only by apps that declare such jobs.
        look_every = min(1.0, settings.heartbeat_interval)
        next_look = next_sweep = time.monotonic()
        while not self._stop.wait(settings.flush_interval):
            if app_state.app_ref() is None:  # the app is gone (a test, a factory): so are we
                app_state.shutdown(0)
                return
            try:
                app_state.lifecycle.check_deadlines()
                app_state.lifecycle.flush()
            except Exception:
                log.exception("flask-asyncstate writer: flush failed")
            now = time.monotonic()
            try:
                if now >= next_sweep:  # one read while no job is watched
                    # Resumable jobs: a dead instance's are found within a quarter beat of its
                    # heartbeat entry expiring (2.75 beats), so they run again within 3 beats.
                    again = app_state.extension.runs_again()
                    next_sweep = now + (min(look_every, beat_every / 4) if again else beat_every)
                    app_state.lifecycle.sweep()
                if now >= next_look and app_state.extension.runs_again():
                    next_look = now + look_every
                    app_state.lifecycle.dispatch()
            except StoreError as exc:
                log.debug("asyncstate: watched or due jobs not read (%s)", exc)
            except Exception:
                log.exception("flask-asyncstate writer: watched or due jobs failed")
            try:
                app_state.store.ensure_threads()
            except Exception:
                log.exception("flask-asyncstate writer: listener restart failed")
            if time.monotonic() >= next_beat:
                try:
                    self.beat()
                except StoreError as exc:
                    log.warning("asyncstate heartbeat failed: %s", exc)
                    continue  # try again at the next tick: Redis may be back any moment
                except Exception:
                    log.exception("asyncstate heartbeat failed")
                    continue
                next_beat = time.monotonic() + beat_every

    def beat(self) -> None:
        """Refresh the liveness entry; if the store had lost it, write every job again."""
        app_state = self.app_state
        locals_ = app_state.local_jobs.running()
        contexts = [local.ctx for local in locals_]
        states = [app_state.state.key(c.state.type, c.id) for c in contexts if c.state is not None]
        owners = list({c.owner for c in contexts if c.owner is not None})
        uniques = [c.unique_key for c in contexts if c.unique_key is not None]
        records = app_state.records
        info = {
            "id": records.instance_id,
            "host": socket.gethostname(),
            # A horse beats its worker's entry as the worker would: the same pid and count.
            "pid": self.pid,
            "started_at": self._started_at,
            "beat_at": time.time(),
            "jobs": len(contexts) + self.lent,
            "role": app_state.role,
            "engine": app_state.executor.engine,
        }
        running = [c.id for c in contexts]
        executor = app_state.executor
        if isinstance(executor, RemoteExecutor) and app_state.role == "web":
            waiting, claims = executor.waiting()
            running, uniques = running + waiting, uniques + claims
        lost = records.beat(
            info, app_state.settings.heartbeat_interval, running, states, owners, uniques
        )
        if lost is not None:
            contexts = [c for c in contexts if c.id in lost]  # lost in a failover: only those
        for ctx in contexts:  # the store lost our entries: write them again on the next flush
            ctx.mark_dirty()
            if ctx.owner is not None:  # and list them in their owners' indexes again
                records.restore(ctx.owner, ctx.id, keep=app_state.settings.max_jobs_per_owner)
            if ctx.unique_key is not None:  # and hold their unique places again
                records.restore_unique(ctx.unique_key, ctx.id)
