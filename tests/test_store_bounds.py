"""What a request costs must not depend on how many jobs the store holds, nor on whose job a
token names: the admin page's poll, a stranger's poll of someone else's job. Both stores.

Costs are counted in the test's own thread (where the test client serves the request), so
the writer's ticks and heartbeats, the cancel listener and the jobs' threads do not count:
the calls of each storage hook (and the keys read), and on Redis the commands and the
network round trips of that thread.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.connection import AbstractConnection
from support.apps import define_jobs

from flask_asyncstate.records import JOB_KIND
from flask_asyncstate.stores import Store

#: The storage hooks whose calls are counted (a backend may lack the newer ones).
_HOOKS = (
    "_create",
    "_read",
    "_write",
    "_update",
    "_cancel",
    "_remove",
    "_exists",
    "_keys",
    "_touch",
    "_claim",
    "_unclaim",
    "_claims",
    "_touch_claims",
    "_rank",
    "_ranked",
    "_unrank",
)


@contextlib.contextmanager
def counted(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Count, in this thread only, each storage hook call (``keys read`` sums the keys read)
    and, on Redis, the ``commands`` sent and the network ``round trips``."""
    me = threading.get_ident()
    seen: Counter[str] = Counter()
    with monkeypatch.context() as patch:
        for name in _HOOKS:
            hook = getattr(store, name, None)
            if hook is None:
                continue

            def wrapped(*args: Any, _hook: Any = hook, _name: str = name, **kwargs: Any) -> Any:
                if threading.get_ident() == me:
                    seen[_name] += 1
                    if _name == "_read":
                        seen["keys read"] += len(args[0])
                return _hook(*args, **kwargs)

            patch.setattr(store, name, wrapped)

        send_command = AbstractConnection.send_command
        pack_commands = AbstractConnection.pack_commands
        send_packed = AbstractConnection.send_packed_command

        def counting_send_command(self: Any, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == me:
                seen["commands"] += 1
            return send_command(self, *args, **kwargs)

        def counting_pack_commands(self: Any, commands: Any) -> Any:
            commands = list(commands)
            if threading.get_ident() == me:
                seen["commands"] += len(commands)
            return pack_commands(self, commands)

        def counting_send_packed(self: Any, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == me:
                seen["round trips"] += 1
            return send_packed(self, *args, **kwargs)

        patch.setattr(AbstractConnection, "send_command", counting_send_command)
        patch.setattr(AbstractConnection, "pack_commands", counting_pack_commands)
        patch.setattr(AbstractConnection, "send_packed_command", counting_send_packed)
        yield seen


# -- the admin page's poll -----------------------------------------------------------------


def _admin_app(make_app: Any, backend_url: str | None, jobs: int) -> tuple[Any, Any]:
    """An app whose store holds ``jobs`` finished jobs (and a live instance)."""
    app, ext = make_app(
        backend_url,
        ASYNCSTATE_KEY_PREFIX=f"bounds{jobs}:",  # both sizes side by side on one Redis
        admin_guard=lambda: None,
        ASYNCSTATE_EXECUTOR="inline",  # each start runs its job inline: 2,000 jobs in a few seconds
    )
    found = ext.app_state(app)
    # The newest jobs the admin page reads: fewer than either size here, so that a poll that
    # reads a bounded number of them reads as many at both sizes (the default is 1,000).
    found.records.recent_kept = 40
    count = define_jobs(ext)["count"]
    with app.app_context():
        found.ensure_running()  # a heartbeat: the page lists this instance
        for _ in range(jobs):
            count.start(1)
        assert len(found.store.keys(JOB_KIND)) == jobs
    return app, ext


def test_an_admin_poll_costs_the_same_with_50_and_with_2000_stored_jobs(
    make_app, backend_url, monkeypatch
) -> None:
    costs, answers = {}, {}
    for size in (50, 2000):
        app, ext = _admin_app(make_app, backend_url, size)
        web = app.test_client()
        assert web.get("/asyncstate/admin/jobs").status_code == 200  # scripts loaded, warm
        with counted(ext.app_state(app).store, monkeypatch) as seen:
            answer = web.get("/asyncstate/admin/jobs")
        assert answer.status_code == 200
        costs[size], answers[size] = dict(seen), answer.json
    print(f"one /admin/jobs poll: 50 jobs {costs[50]}; 2,000 jobs {costs[2000]}")
    assert costs[50] == costs[2000]
    for size, answer in answers.items():
        assert len(answer["jobs"]) == 40, size  # the newest 40, newest first
        created = [j["created_at"] for j in answer["jobs"]]
        assert created == sorted(created, reverse=True)
        assert answer["counts"] == {"succeeded": 40}  # over the jobs the poll read
        assert answer["counted"] == 40 and answer["window"] == 40
        assert len(answer["instances"]) == 1


def test_the_admin_page_lists_the_newest_jobs_and_counts_lost_ones_as_lost(
    make_jobs, backend_url
) -> None:
    """Counts are taken over the jobs the poll read, after the read-time ``lost`` of jobs
    whose instance is dead: a job never counts as running when the page shows it lost."""
    app, ext, jobs = make_jobs(backend_url, admin_guard=lambda: None, ASYNCSTATE_EXECUTOR="inline")
    found = ext.app_state(app)
    count = jobs["count"]
    with app.app_context():
        found.ensure_running()
        done = [count.start(1).id for _ in range(3)]
    records = found.records
    orphan = secrets.token_hex(16)
    doc = dict(records.status(done[0], internal=True) or {}, id=orphan, status="running")
    doc.update(instance="dead-instance", created_at=time.time(), reason=None)
    records.create(doc, None, False)  # a running job whose instance no longer beats
    records.list_job(orphan, doc["created_at"])
    answer = app.test_client().get("/asyncstate/admin/jobs").json
    assert [j["id"] for j in answer["jobs"]] == [orphan, *reversed(done)]
    assert answer["jobs"][0]["status"] == "lost" and answer["jobs"][0]["reason"] == "lost"
    assert answer["counts"] == {"lost": 1, "succeeded": 3}
    assert answer["counted"] == 4 and answer["window"] == records.recent_kept
    lost = app.test_client().get("/asyncstate/admin/jobs?status=lost").json
    assert [j["id"] for j in lost["jobs"]] == [orphan]
    assert lost["counts"] == answer["counts"]  # counted before the filter, as before


def test_an_expired_job_is_neither_listed_nor_counted(make_jobs, backend_url) -> None:
    """Its id stays in the list of the newest jobs until newer ones push it out; a poll
    reads it as gone and skips it: nothing is counted that is not there."""
    app, _ext, jobs = make_jobs(
        backend_url,
        admin_guard=lambda: None,
        ASYNCSTATE_EXECUTOR="inline",
        ASYNCSTATE_EXPIRES=1,
    )
    count = jobs["count"]
    with app.app_context():
        gone = count.start(1).id
    web = app.test_client()
    assert [j["id"] for j in web.get("/asyncstate/admin/jobs").json["jobs"]] == [gone]
    time.sleep(1.3)  # unread for longer than ASYNCSTATE_EXPIRES: the expiry under test
    with app.app_context():
        kept = count.start(1).id
    answer = web.get("/asyncstate/admin/jobs").json
    assert [j["id"] for j in answer["jobs"]] == [kept]
    assert answer["counts"] == {"succeeded": 1} and answer["counted"] == 1


# -- a stranger's poll of another owner's finished job ----------------------------------------


def _expires_in(store: Store, backend_url: str | None, key: str) -> float:
    """Seconds until the entry at ``key`` expires, as the backend keeps it."""
    if backend_url is None:
        slot = store._slots[key]  # type: ignore[attr-defined]
        return float(slot.expires_at - time.monotonic())
    client = redis.Redis.from_url(backend_url)
    try:
        return int(client.pttl(key)) / 1000
    finally:
        client.close()


def test_a_strangers_poll_of_a_finished_job_neither_refreshes_it_nor_costs_a_call_more(
    make_jobs, backend_url, monkeypatch
) -> None:
    app, ext, jobs = make_jobs(backend_url)
    count = jobs["count"]

    @app.post("/start")
    def start():
        return {"token": count.start(1).token}

    alice, stranger = app.test_client(), app.test_client()
    token = alice.post("/start").json["token"]
    stranger.post("/start")  # the stranger has a session (an owner) of their own
    found = ext.app_state(app)
    with app.app_context():
        handle = ext.handle(token)
        assert handle.wait(10)["status"] == "succeeded"
        unknown = found.signer.sign(secrets.token_hex(16))  # a valid token naming no job
    key = found.records.job_key(handle.id)
    time.sleep(1.2)  # the final write's full expiry is no longer fresh: a read would touch it

    before = _expires_in(found.store, backend_url, key)
    with counted(found.store, monkeypatch) as theirs:
        assert stranger.get(f"/asyncstate/progress/{token}").status_code == 404
    after = _expires_in(found.store, backend_url, key)
    assert after <= before, f"a stranger's poll restarted the entry's expiry: {before} -> {after}"

    with counted(found.store, monkeypatch) as nobodys:
        assert stranger.get(f"/asyncstate/progress/{unknown}").status_code == 404
    with counted(found.store, monkeypatch) as forged:
        assert stranger.get(f"/asyncstate/progress/{token[:-2]}xx").status_code == 404
    print(
        f"a stranger's poll: {dict(theirs)}; a token naming no job: {dict(nobodys)};"
        f" a forged token: {dict(forged)}"
    )
    assert dict(theirs) == dict(nobodys)  # another owner's job reads as no job at all
    assert theirs["_read"] == 1 and not theirs["_touch"] and not theirs["_exists"]
    assert not forged  # a bad signature never reaches the store

    with counted(found.store, monkeypatch) as owners:
        assert alice.get(f"/asyncstate/progress/{token}").status_code == 200
    assert owners["_touch"] == 1  # the owner's poll still keeps the finished job alive
    assert _expires_in(found.store, backend_url, key) > before
