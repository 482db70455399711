"""Jobs seen across instances: separate OS processes sharing one real redis-server."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import redis
from flask import Flask
from support.apps import SECRET
from support.procs import run_job
from support.waiting import wait_until

from flask_asyncstate import AsyncState

spawn = multiprocessing.get_context("spawn")


def _start_instance(redis_url: str, job: str, *args: object):
    out = spawn.Queue()
    proc = spawn.Process(target=run_job, args=(redis_url, job, args, out), daemon=True)
    proc.start()
    kind, token = out.get(timeout=60)
    assert kind == "started"
    return proc, out, token


def test_other_instance_reads_progress_and_cancels(make_app, redis_url) -> None:
    proc, out, token = _start_instance(redis_url, "until_cancelled")
    app, ext = make_app(redis_url)  # instance B
    with app.app_context():
        wait_until(
            lambda: (ext.status(token) or {}).get("current", 0) >= 3,
            10,
            interval=0.05,
            message=lambda: f"progress 3 from A, got {ext.status(token)}",
        )
        seen = ext.status(token)
        assert seen["status"] == "running" and seen["message"].startswith("tick")
        assert ext.cancel(token) is True
        assert out.get(timeout=10) == ("event_set", True)
        _kind, final_in_a = out.get(timeout=10)
        assert final_in_a["status"] == "cancelled"
        doc = ext.handle(token).wait(10)
    assert doc["status"] == "cancelled" and doc["cancel_requested"] is True
    proc.join(10)
    print(f"B saw progress {seen['current']} then cancelled; A ended {doc['status']}")


def test_killed_instance_is_reported_lost(make_app, redis_url) -> None:
    proc, _out, token = _start_instance(redis_url, "stubborn", 60)
    app, ext = make_app(redis_url)
    interval = app.config["ASYNCSTATE_HEARTBEAT_INTERVAL"]
    with app.app_context():
        assert ext.status(token)["status"] in ("queued", "running")
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(
            lambda: ext.status(token)["status"] == "lost",
            3 * interval + 1,
            interval=0.05,
            message="not reported lost in time",
        )
        assert ext.status(token)["reason"] == "lost"
    took = time.monotonic() - killed_at
    assert took <= 3 * interval + 0.2
    print(f"SIGKILLed instance reported lost after {took:.2f} s (heartbeat {interval} s)")


class CountingConnection(redis.Connection):
    """Counts network round trips: one per command sent, one per pipeline."""

    sent = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sent += 1
        return super().send_packed_command(command, check_health)


def test_hot_progress_loop_costs_a_bounded_number_of_redis_round_trips(redis_url) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1", port=port)
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, ASYNCSTATE_HEARTBEAT_INTERVAL=0.5)
    ext = AsyncState(app, redis=redis.Redis(connection_pool=pool))

    @ext.job
    def hot(job) -> int:
        for i in range(1, 10001):
            job.progress(i, total=10000, message=f"{i} of 10000")
            if i % 100 == 0:
                time.sleep(0.01)  # ~1 s in all, so the flusher runs several times
        return i

    try:
        with app.app_context():
            ext.app_state().ensure_running()
            before = CountingConnection.sent
            started = time.monotonic()
            doc = hot.start().wait(30)
            elapsed = time.monotonic() - started
            used = CountingConnection.sent - before
    finally:
        ext.shutdown()
    assert doc["status"] == "succeeded" and doc["result"] == 10000
    assert (doc["current"], doc["percent"], doc["message"]) == (10000, 100.0, "10000 of 10000")
    flushes = elapsed / 0.25 + 1
    beats = elapsed / app.config["ASYNCSTATE_HEARTBEAT_INTERVAL"] + 1
    # fixed: connection set-up and script loading (~20), create, cancel check, running,
    # final, final read; then per flush one write, per beat a heartbeat and a touch, and
    # a cancel-listener sweep per second. Nothing grows with the number of progress() calls.
    assert used <= 25 + flushes + 2 * beats + elapsed, used
    print(f"10,000 progress() calls in {elapsed:.2f} s -> {used} Redis round trips in all")


def test_a_job_whose_process_ended_just_after_writing_its_end_is_never_read_lost(
    make_app, redis_url, monkeypatch
) -> None:
    """A work horse writes its job's final document, then removes its heartbeat and exits:
    a poll that read the document before the one and checked the heartbeat after the other
    reads the document again, and sees how the job ended, not ``lost``."""
    from flask_asyncstate.stores.base import Entry

    app, ext = make_app(redis_url)

    @ext.job
    def quick(job) -> str:
        return "done"

    with app.app_context():
        handle = quick.start()
        assert handle.wait(5)["status"] == "succeeded"
        found = ext.app_state()
        store, key = found.store, found.records.job_key(handle.id)
        ended = store.read_many([key], refresh=False)[0]
        assert ended is not None
        # What a poll read a moment earlier: running, on a process whose heartbeat is gone.
        running = Entry({**ended.data, "status": "running", "instance": "gone-1-x"}, False)
        real = store.read_many
        calls: list[list[str]] = []

        def first_read_was_earlier(keys, refresh=True):
            calls.append(list(keys))
            return [running] if len(calls) == 1 else real(keys, refresh=refresh)

        monkeypatch.setattr(store, "read_many", first_read_was_earlier)
        doc = handle.status()
        assert (doc["status"], doc["result"]) == ("succeeded", "done")
        assert calls == [[key], [key]]  # one read more, only because its process was gone
        # A process that died without ending its job: still lost after the second read.
        monkeypatch.setattr(store, "read_many", lambda keys, refresh=True: [running])
        assert handle.status()["status"] == "lost"
    print("a job read running on a process gone: read again -> succeeded; still running -> lost")
