"""The writer sends every dirty document of the process in one round trip per tick."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from support.waiting import wait_until

from flask_asyncstate.errors import StoreUnavailable


def _running(make_app, backend_url, n: int):
    # A long flush interval: the test drives flush() itself.
    app, ext = make_app(backend_url, ASYNCSTATE_MAX_WORKERS=n, ASYNCSTATE_FLUSH_INTERVAL=60)

    @ext.job
    def ticking(job) -> None:
        i = 0
        while not job.cancelled.wait(0.002):  # dirty again within milliseconds of a flush
            i += 1
            job.progress(i)

    with app.app_context():
        handles = [ticking.start() for _ in range(n)]
    found = ext.app_state()
    wait_until(lambda: len([h for h in handles if h.status()["status"] == "running"]) == n, 10)
    time.sleep(0.05)
    return app, ext, found, handles


def test_one_round_trip_for_all_dirty_documents(make_app, backend_url, monkeypatch) -> None:
    app, _ext, found, handles = _running(make_app, backend_url, 40)
    batches: list[int] = []
    real = found.store._write_many

    def counted(keys, texts):
        batches.append(len(keys))
        return real(keys, texts)

    monkeypatch.setattr(found.store, "_write_many", counted)
    if backend_url:  # Redis: no write one by one (the memory store's batch is a loop)
        monkeypatch.setattr(found.store, "_write", lambda *a: (_ for _ in ()).throw(AssertionError))
    with app.app_context():
        found.lifecycle.flush()
    assert batches == [40]  # every job ticks: one batch, one pipeline on Redis
    assert all(h.status()["current"] > 0 for h in handles)
    monkeypatch.undo()
    for h in handles:
        h.cancel()
    print(f"{backend_url and 'redis' or 'memory'}: 40 running jobs flushed in one batch")


def test_a_failed_batch_is_written_at_the_next_tick(make_app, backend_url, monkeypatch) -> None:
    app, _ext, found, handles = _running(make_app, backend_url, 5)
    with app.app_context():
        found.lifecycle.flush()
        before = [h.status()["current"] for h in handles]

        def away(keys, texts):
            raise StoreUnavailable("Redis is unreachable")

        monkeypatch.setattr(found.store, "_write_many", away)
        found.lifecycle.flush()
        assert [h.status()["current"] for h in handles] == before  # nothing written
        monkeypatch.undo()
        time.sleep(0.05)
        found.lifecycle.flush()  # the documents are dirty again: written now
        assert all(h.status()["current"] > b for h, b in zip(handles, before))
    for h in handles:
        h.cancel()


def test_one_bad_document_does_not_hold_back_the_others(make_app, backend_url, caplog) -> None:
    app, _ext, found, handles = _running(make_app, backend_url, 4)
    bad = found.local_context(handles[0].id)
    assert bad is not None
    real = bad.take_dirty
    bad.take_dirty = lambda: dict(real() or {}, message=object())  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="flask_asyncstate")
    with app.app_context():
        before = [h.status()["current"] for h in handles]
        time.sleep(0.05)
        found.lifecycle.flush()
        after = [h.status()["current"] for h in handles]
    assert after[0] == before[0] and all(a > b for a, b in zip(after[1:], before[1:]))
    assert any("progress could not be written" in r.getMessage() for r in caplog.records)
    bad.take_dirty = real  # type: ignore[method-assign]
    for h in handles:
        h.cancel()


def test_a_write_wakes_only_the_instances_watching_that_entry(redis_url) -> None:
    """Per-entry change channels: a write is heard where that entry is watched, nowhere else."""
    from flask_asyncstate.stores.redis import RedisStore, client_from_url

    watcher = RedisStore(client_from_url(redis_url), key_prefix="feed:")
    writer = RedisStore(client_from_url(redis_url), key_prefix="feed:")
    watched, other = watcher.key("job", "watched"), watcher.key("job", "other")
    for key in (watched, other):
        writer.create(key, {"n": 0})
    heard: list[str] = []
    real = watcher.watchers.notify
    watcher.watchers.notify = lambda key: (heard.append(key), real(key))[1]  # type: ignore[method-assign]
    try:
        with watcher.watch(watched) as event:
            wait_until(lambda: watched in watcher._change_keys, 5, interval=0.01)
            for n in range(50):
                writer.write(other, {"n": n})  # nobody watches it: nobody hears it
            writer.write(watched, {"n": 1})
            assert event.wait(5)
            time.sleep(0.2)
        assert heard == [watched]
    finally:
        watcher.close()
        writer.close()
    print(
        "50 writes of an unwatched entry woke nobody; one write of the watched entry woke its watcher"
    )


def test_streams_of_one_job_share_one_read_per_change(make_app, backend_url, monkeypatch) -> None:
    """However many streams show a job here, one change costs one store read."""
    from flask_asyncstate.sse import SharedReads

    app, ext = make_app(backend_url)

    @ext.job
    def quiet(job) -> None:
        job.cancelled.wait(10)

    with app.app_context():
        handle = quiet.start()
        found = ext.app_state()
        wait_until(lambda: handle.status()["status"] == "running", 5)
        time.sleep(0.2)  # the "running" write's own change notification has come and gone
        reads: list[str] = []
        real = found.records.status
        monkeypatch.setattr(found.records, "status", lambda j: (reads.append(j), real(j))[1])
        shared = SharedReads()
        key = found.records.job_key(handle.id)
        with found.store.watch(key):
            docs = [shared.status(found, handle.id) for _ in range(20)]  # 20 streams wake
            assert len(reads) == 1 and all(d is docs[0] for d in docs)
            found.store.watchers.notify(key)  # a write: the next wake reads again, once
            again = [shared.status(found, handle.id) for _ in range(20)]
            assert len(reads) == 2 and all(d is again[0] for d in again)
        handle.cancel()


def test_streams_woken_together_wait_for_one_read(make_app, backend_url, monkeypatch) -> None:
    """Streams that wake at once (one notification, many streams, the read still in
    flight) share the first one's read instead of each missing the cache; a failed read
    fails its waiters too, and the next wake-up reads again."""
    from flask_asyncstate.sse import SharedReads

    app, ext = make_app(backend_url)

    @ext.job
    def quiet(job) -> None:
        job.cancelled.wait(10)

    with app.app_context():
        handle = quiet.start()
        found = ext.app_state()
        wait_until(lambda: handle.status()["status"] == "running", 5)
        reads: list[str] = []
        failing = threading.Event()
        real = found.records.status

        def slow_status(job_id: str) -> Any:
            reads.append(job_id)
            time.sleep(0.1)  # the read is in flight while the other streams wake
            if failing.is_set():
                raise StoreUnavailable("Redis is unreachable: test")
            return real(job_id)

        monkeypatch.setattr(found.records, "status", slow_status)
        shared = SharedReads()
        key = found.records.job_key(handle.id)

        def wake_all(count: int) -> list[Any]:
            got: list[Any] = [None] * count
            barrier = threading.Barrier(count)

            def stream(i: int) -> None:
                barrier.wait()
                try:
                    got[i] = shared.status(found, handle.id)
                except Exception as exc:  # noqa: BLE001 - the reader's error, or its waiters'
                    got[i] = exc

            threads = [threading.Thread(target=stream, args=(i,)) for i in range(count)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            return got

        with found.store.watch(key):
            found.store.watchers.notify(key)
            docs = wake_all(30)
            assert len(reads) == 1, f"{len(reads)} reads for 30 streams woken together"
            assert all(isinstance(d, dict) and d["id"] == handle.id for d in docs)
            failing.set()
            found.store.watchers.notify(key)
            failed = wake_all(30)
            assert len(reads) == 2 and all(isinstance(e, Exception) for e in failed), failed
            failing.clear()
            again = wake_all(5)  # nothing kept of the failed read: one new read
            assert len(reads) == 3 and all(isinstance(d, dict) for d in again)
        handle.cancel()
    print("30 streams woken together: 1 read; a failed read failed its 30 waiters, then 1 new read")


def test_streams_on_greenlets_without_patched_threading_never_wait_on_each_other(
    monkeypatch,
) -> None:
    """gevent with sockets patched but not threading: an Event wait would block the one OS
    thread every greenlet runs on, so a stream reads for itself instead of waiting."""
    import sys
    import types

    from flask_asyncstate import sse

    monkey = types.ModuleType("gevent.monkey")
    patched = {"socket": True, "threading": False}
    monkey.is_module_patched = lambda name: patched.get(name, False)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gevent.monkey", monkey)
    assert sse.green_server() is True and sse._waits_yield() is False
    patched["threading"] = True  # gunicorn's gevent worker: patch_all()
    assert sse._waits_yield() is True
    monkeypatch.delitem(sys.modules, "gevent.monkey")
    assert sse._waits_yield() is True  # OS threads
