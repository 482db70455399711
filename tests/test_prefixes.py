"""Two apps with different ``ASYNCSTATE_KEY_PREFIX`` on one Redis never see or cancel each
other's jobs, state or instances."""

from __future__ import annotations

import time

from support.apps import define_jobs

from flask_asyncstate.records import INSTANCE_KIND, JOB_KIND


def test_two_prefixes_on_one_redis_never_see_or_cancel_each_other(make_app, redis_url) -> None:
    app_a, ext_a = make_app(redis_url, ASYNCSTATE_KEY_PREFIX="alpha:")
    app_b, ext_b = make_app(redis_url, ASYNCSTATE_KEY_PREFIX="beta:")
    jobs_a, jobs_b = define_jobs(ext_a), define_jobs(ext_b)
    with app_a.app_context():
        running_a = jobs_a["until_cancelled"].start()
        ctx_a = ext_a.app_state().local_context(running_a.id)
        token_a = running_a.token
    with app_b.app_context():
        running_b = jobs_b["until_cancelled"].start()
        state_b = ext_b.app_state()
        assert state_b.job_handle(running_a.id).status() is None  # A's job is not B's
        assert state_b.cancel_job(running_a.id) is False
        assert ext_b.status(token_a) is None  # same SECRET_KEY: the token verifies, no job
        assert [j["id"] for j in state_b.records.all_jobs()] == [running_b.id]
        assert {k.split("{")[0] for k in state_b.store.keys(JOB_KIND)} == {"beta:"}
        assert all(k.startswith("beta:") for k in state_b.store.keys(INSTANCE_KIND))
        listed = app_b.test_cli_runner().invoke(args=["asyncstate", "list"])
        assert running_a.id not in listed.output and running_b.id in listed.output
    time.sleep(0.3)  # a published cancel of B's would have reached A's listener by now
    assert ctx_a is not None and not ctx_a.cancelled.is_set()
    with app_a.app_context():
        assert running_a.status()["status"] == "running"
        assert running_a.cancel() is True
        assert running_a.wait(10)["status"] == "cancelled"
    with app_b.app_context():
        assert running_b.status()["status"] == "running"  # A's cancel channel is not B's
        running_b.cancel()
        running_b.wait(10)
