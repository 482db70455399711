"""``flask asyncstate`` commands against a real redis-server, with jobs of two instances."""

from __future__ import annotations

import json

from support.apps import Gate, define_jobs


def test_cli_lists_shows_cancels_and_purges(make_app, make_jobs, redis_url) -> None:
    app, ext, jobs = make_jobs(redis_url)
    other_app, other_ext = make_app(redis_url)  # a second instance on the same Redis
    other_jobs = define_jobs(other_ext)
    gate = Gate()
    with app.app_context():
        done = jobs["count"].start(3)
        done.wait(10)
        running = jobs["until_cancelled"].start()
    with other_app.app_context():
        blocked = other_jobs["blocked"].start(gate.name)
    cli = app.test_cli_runner()

    listed = cli.invoke(args=["asyncstate", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[0].split() == [
        "ID",
        "NAME",
        "STATUS",
        "PERCENT",
        "AGE",
        "INSTANCE",
    ]
    for handle in (done, running, blocked):
        assert handle.id in listed.output
    assert other_ext.app_state(other_app).instance_id in listed.output

    as_json = json.loads(
        cli.invoke(args=["asyncstate", "list", "--json", "--status", "succeeded"]).output
    )
    assert [j["id"] for j in as_json] == [done.id]

    shown = cli.invoke(args=["asyncstate", "show", done.id])
    assert json.loads(shown.output)["result"] == {"rows": 3}
    missing = cli.invoke(args=["asyncstate", "show", "nope"])
    assert missing.exit_code == 1 and "no live job" in missing.output

    instances = cli.invoke(args=["asyncstate", "instances"])
    assert ext.app_state(app).instance_id in instances.output
    assert instances.output.splitlines()[0].split()[-1] == "JOBS"
    other_row = next(
        line
        for line in instances.output.splitlines()
        if line.startswith(other_ext.app_state(other_app).instance_id)
    )
    assert other_row.split()[-1] == "1"  # the blocked job, counted from the job documents

    cancelled = cli.invoke(args=["asyncstate", "cancel", running.id])
    assert cancelled.exit_code == 0 and "Cancel requested" in cancelled.output
    with app.app_context():
        assert running.wait(10)["status"] == "cancelled"
    again = cli.invoke(args=["asyncstate", "cancel", done.id])
    assert again.exit_code == 1 and "already ended: succeeded" in again.output

    purged = cli.invoke(args=["asyncstate", "purge"])
    assert "Removed 2 finished job(s)." in purged.output
    with app.app_context():
        assert done.status() is None and running.status() is None
        assert blocked.status()["status"] == "running"  # unfinished jobs stay
    gate.set()


def test_cli_says_when_there_is_nothing(make_app) -> None:
    app, _ext = make_app()
    cli = app.test_cli_runner()
    assert "No live jobs." in cli.invoke(args=["asyncstate", "list"]).output
    assert "Removed 0" in cli.invoke(args=["asyncstate", "purge", "--all"]).output
