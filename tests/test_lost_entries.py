"""A running job's entry lost by the store (a failover before it reached the replica) is written
again within one heartbeat, while the instance's own entry survived."""

from __future__ import annotations

from support.waiting import wait_until


def test_a_lost_job_entry_is_written_again_at_the_next_beat(make_jobs, backend_url) -> None:
    app, ext, jobs = make_jobs(backend_url, ASYNCSTATE_HEARTBEAT_INTERVAL=0.2)
    with app.test_request_context():
        silent = jobs["stubborn"].start(30)  # sleeps: no progress writes of its own
        found = ext.app_state()
        key = found.records.job_key(silent.id)
        wait_until(lambda: silent.status()["status"] == "running", 10)
        found.store._remove(key)  # gone from the store, as after a failover; Events stay
        assert silent.status() is None
        wait_until(lambda: silent.status() is not None, 3, interval=0.05)
        doc = silent.status()
        assert doc["status"] == "running"
        assert [j["id"] for j in ext.jobs()] == [silent.id]  # and its owner lists it again
        found.local_context(silent.id).cancelled.set()
