"""Structured progress (issue 26): child jobs counted by atomic counters, stages, a trail;
on both stores with the thread pool. Children on RQ workers: tests/test_structure_workers.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from support.waiting import wait_until

from flask_asyncstate import JobCancelled, testing
from flask_asyncstate.records import MAX_CHILDREN


def _define(ext: Any, seen: dict[str, Any]) -> dict[str, Any]:
    @ext.job
    def convert(job: Any, n: int) -> int:
        if n % 10 == 7:
            raise ValueError(f"file {n} is broken")
        time.sleep(0.005)
        return n

    @ext.job
    def export(job: Any, files: int) -> dict[str, int]:
        with job.stage("convert"):
            for n in range(files):
                job.spawn(convert, n)
            job.log(f"{files} files queued")
            counts = job.wait_children(30)
        with job.stage("zip"):
            job.log("zipped")
        seen["counts"] = counts
        return counts

    @ext.job
    def endless(job: Any) -> None:
        while not job.cancelled.wait(0.01):
            pass
        raise JobCancelled("asked")

    @ext.job
    def fan_out(job: Any, count: int) -> dict[str, int]:
        seen["children"] = []
        for _ in range(count):
            seen["children"].append(job.spawn(endless).id)
        seen["spawned"] = True
        return job.wait_children(30)

    return {"convert": convert, "export": export, "endless": endless, "fan_out": fan_out}


def test_a_parents_totals_are_exact_with_two_hundred_children(
    make_app: Any, backend_url: str | None
) -> None:
    app, ext = make_app(backend_url, ASYNCSTATE_MAX_WORKERS=4)
    seen: dict[str, Any] = {}
    jobs = _define(ext, seen)
    http = testing.client(app)

    @app.post("/export")
    def start() -> dict[str, str]:
        return {"token": jobs["export"].start(200).token}

    token = http.post("/export").get_json()["token"]
    polls: list[dict[str, Any]] = []

    def ended() -> bool:
        polls.append(http.get(f"/asyncstate/progress/{token}").get_json())
        return polls[-1]["status"] in ("succeeded", "failed")

    wait_until(ended, 60, interval=0.02)
    doc = polls[-1]
    expected = {
        "total": 200,
        "queued": 0,
        "running": 0,
        "succeeded": 180,
        "failed": 20,
        "cancelled": 0,
        "lost": 0,
    }
    assert doc["status"] == "succeeded" and doc["children"] == expected, doc
    assert seen["counts"] == expected
    assert [s["name"] for s in doc["stages"]] == ["convert", "zip"]
    assert [s["status"] for s in doc["stages"]] == ["done", "done"] and doc["stage"] is None
    assert [line["text"] for line in doc["log"]] == ["200 files queued", "zipped"]
    middle = [p for p in polls if p["children"] and 0 < p["children"]["queued"] < 200]
    # while it ran: a parent with no progress of its own showed its children's
    assert all(p["total"] == p["children"]["total"] for p in middle)
    assert all(
        p["current"] == p["total"] - p["children"]["queued"] - p["children"]["running"]
        for p in middle
    )
    # the children are the owner's, but not in their jobs list: the parent stands for them
    listed = http.get("/asyncstate/jobs").get_json()
    assert [j["name"] for j in listed] == ["export"]
    print(f"200 children: {doc['children']}; {len(polls)} polls, {len(middle)} while running")


def test_cancelling_the_parent_cancels_every_unfinished_child(
    make_app: Any, backend_url: str | None
) -> None:
    app, ext = make_app(backend_url, ASYNCSTATE_MAX_WORKERS=8)
    seen: dict[str, Any] = {}
    jobs = _define(ext, seen)
    with app.app_context():
        parent = jobs["fan_out"].start(12)  # 7 run at once, 5 wait for a thread
        wait_until(
            lambda: (
                seen.get("spawned")
                and ((parent.status() or {}).get("children") or {}).get("running") == 7
            ),
            10,
        )
        asked = time.monotonic()
        assert parent.cancel() is True
        doc = parent.wait(10)
        took = time.monotonic() - asked
        children = [ext.app_state().job_handle(c).wait(5) for c in seen["children"]]
    assert {c["status"] for c in children} == {"cancelled"}
    assert doc["status"] in ("cancelled", "succeeded")
    counts = ext.app_state().records.child_counts(parent.id)
    assert counts["cancelled"] == 12 and counts["running"] == counts["queued"] == 0, counts
    print(f"parent and 12 children cancelled in {1000 * took:.0f} ms")


def test_stages_and_the_trail_are_bounded_text(make_app: Any) -> None:
    app, ext = make_app()
    errors: list[str] = []

    @ext.job
    def steps(job: Any) -> None:
        job.stage("download")
        job.stage("unpack")  # the previous one is done
        for i in range(30):
            job.log(f"line {i} <b>not html</b>")
        job.log("x" * 2000)  # cut, not refused
        for bad in ("", 3, "a" * 201, "\ud800"):
            try:
                job.stage(bad)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                errors.append(type(exc).__name__)
        try:
            with job.stage("import"):
                raise RuntimeError("bad row")
        except RuntimeError:
            pass
        job.stage("report")
        raise ValueError("gave up")

    with app.app_context():
        doc = steps.start().wait(10)
    assert doc["status"] == "failed"
    assert [(s["name"], s["status"]) for s in doc["stages"]] == [
        ("download", "done"),
        ("unpack", "done"),
        ("import", "failed"),
        ("report", "failed"),  # the job's end ends the running stage
    ]
    assert len(doc["log"]) == 20 and doc["log"][0]["text"] == "line 11 <b>not html</b>"
    assert len(doc["log"][-1]["text"]) == 500
    assert errors == ["TypeError", "TypeError", "ValueError", "ValueError"]


def test_children_are_bounded(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_asyncstate import records

    monkeypatch.setattr(records, "MAX_CHILDREN", 3)
    app, ext = make_app()
    made: list[str] = []
    refused: list[str] = []

    @ext.job
    def leaf(job: Any) -> None:
        pass

    @ext.job
    def many(job: Any) -> None:
        for _ in range(5):
            try:
                made.append(job.spawn(leaf).id)
            except ValueError as exc:
                refused.append(str(exc))
        job.wait_children(5)

    with app.app_context():
        doc = many.start().wait(10)
    assert doc["status"] == "succeeded" and len(made) == 3 and len(refused) == 2
    assert doc["children"]["total"] == 3
    assert MAX_CHILDREN == 10_000  # the real bound


def test_wait_children_ends_on_a_cancel_of_the_parent(make_app: Any) -> None:
    app, ext = make_app(ASYNCSTATE_MAX_WORKERS=3)
    seen: dict[str, Any] = {}
    jobs = _define(ext, seen)
    with app.app_context():
        parent = jobs["fan_out"].start(2)
        wait_until(lambda: ((parent.status() or {}).get("children") or {}).get("running") == 2, 5)
        threading.Timer(0.1, parent.cancel).start()
        doc = parent.wait(5)
    assert doc["status"] in ("succeeded", "cancelled")
