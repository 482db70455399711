"""The thread executor on its own: every job is waiting, running or done, and nothing lingers."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
from support.waiting import wait_until

from flask_asyncstate.executors import InlineExecutor, ThreadExecutor


def test_shutdown_returns_waiting_jobs_and_waits_for_taken_ones() -> None:
    pool = ThreadExecutor(1)
    pool.start()
    gate, taken = threading.Event(), threading.Event()
    ran: list[str] = []

    def blocked() -> None:
        taken.set()
        gate.wait(10)
        ran.append("first")

    pool.submit("first", blocked)
    pool.submit("second", lambda: ran.append("second"))
    assert taken.wait(5)
    assert pool.shutdown() == ["second"]  # never started
    assert pool.wait(0.1) is False  # the taken one still runs: shutdown waits for it
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit("late", lambda: None)
    gate.set()
    assert pool.wait(5) is True
    assert ran == ["first"]


def test_an_idle_worker_keeps_no_reference_to_its_last_job() -> None:
    pool = ThreadExecutor(1)
    pool.start()

    class Payload:
        pass

    payload = Payload()
    ref = weakref.ref(payload)
    done = threading.Event()
    pool.submit("j", lambda p=payload: done.set())
    del payload
    assert done.wait(5)
    wait_until(lambda: (gc.collect(), ref() is None)[1], 5, message="the job's argument lingers")
    pool.shutdown()


def test_a_job_that_escapes_its_lifecycle_does_not_kill_the_thread() -> None:
    pool = ThreadExecutor(1)
    pool.start()
    after = threading.Event()
    pool.submit("bad", lambda: (_ for _ in ()).throw(KeyError("escaped")))
    pool.submit("good", after.set)
    assert after.wait(5)
    pool.shutdown()


def test_inline_runs_at_once_and_refuses_after_shutdown() -> None:
    ran: list[int] = []
    inline = InlineExecutor()
    inline.submit("a", lambda: ran.append(1))
    assert ran == [1]
    assert inline.shutdown() == [] and inline.wait(0)
    with pytest.raises(RuntimeError):
        inline.submit("b", lambda: None)
