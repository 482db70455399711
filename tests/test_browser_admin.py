"""The operator's page, ``<prefix>/admin``, in Chromium: two instances sharing one redis-server.

Instance A is an app in this process served on a free loopback port (the page comes
from it); instance B is a separate OS process (tests/support/admin_procs.py) on the same
redis-server. Both start jobs; the page lists both instances and every job, filters
by status, and cancels one job of B's while A's keeps running.
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Iterator
from typing import Any, Self

import pytest
from flask import Flask
from support.admin_procs import run_instance
from support.apps import define_jobs, make_app
from support.pages import VISIBILITY, ThreadedServer
from support.waiting import wait_until

from flask_asyncstate import AsyncState, JobContext
from flask_asyncstate.templating import DEFAULT_LABELS

pytestmark = pytest.mark.browser

spawn = multiprocessing.get_context("spawn")
MARKUP = '<b class="injected">bold</b><img src="/x.png" onerror="window.__ran = 1">'


class InstanceA(ThreadedServer):
    """The app serving the page, on a free loopback port, in a thread of this process."""

    def __init__(self, redis_url: str) -> None:
        app, ext = make_app(redis_url, admin_guard=lambda: None)
        self.jobs = define_jobs(ext)

        @ext.job(name="marked")
        def marked(job: JobContext) -> None:
            job.progress(1, total=4, message=MARKUP)
            job.cancelled.wait(120)
            job.check_cancelled()

        self.jobs["marked"] = marked
        super().__init__(app, ext)


class InstanceB:
    """The second instance: its own OS process, two jobs started there."""

    def __init__(self, redis_url: str) -> None:
        self.out = spawn.Queue()
        self.stop = spawn.Event()
        self.proc = spawn.Process(
            target=run_instance, args=(redis_url, self.out, self.stop), daemon=True
        )

    def __enter__(self) -> Self:
        self.proc.start()
        kind, self.ids = self.out.get(timeout=60)
        assert kind == "started"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


@pytest.fixture
def instances(redis_url: str) -> Iterator[tuple[InstanceA, InstanceB]]:
    with InstanceB(redis_url) as b, InstanceA(redis_url) as a:
        yield a, b


@pytest.fixture
def page(browser, instances) -> Iterator[Any]:
    a, _b = instances
    context = browser.new_context()
    context.set_default_timeout(20000)
    page = context.new_page()
    page.add_init_script(VISIBILITY)
    page.errors = []
    page.external = []
    page.listed = []  # the URLs of the page's list requests
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))

    def seen(req: Any) -> None:
        if not req.url.startswith(a.url):
            page.external.append(req.url)
        if "/asyncstate/admin/jobs" in req.url:
            page.listed.append(req.url)

    page.on("request", seen)
    yield page
    assert page.errors == [], page.errors
    assert page.external == [], page.external
    context.close()


def row(page: Any, job_id: str) -> Any:
    return page.locator(f"tr.asyncstate-admin-job[data-job-id='{job_id}']")


def cells(page: Any, job_id: str) -> dict[str, str]:
    """The row's cells by their class, as text."""
    return dict(
        page.evaluate(
            """(id) => {
                const tr = document.querySelector(`tr.asyncstate-admin-job[data-job-id="${id}"]`);
                const out = {};
                for (const td of tr.children) {
                  out[td.classList[0].replace('asyncstate-admin-', '')] = td.textContent;
                }
                return out;
            }""",
            job_id,
        )
    )


def visible_job_ids(page: Any) -> list[str]:
    return list(
        page.evaluate(
            "() => [...document.querySelectorAll('tr.asyncstate-admin-job')]"
            ".filter(tr => !tr.hidden).map(tr => tr.dataset.jobId)"
        )
    )


def wait_status(page: Any, job_id: str, status: str, timeout: float = 20000) -> None:
    page.wait_for_selector(
        f"tr.asyncstate-admin-job[data-job-id='{job_id}'][data-status='{status}']",
        state="attached",
        timeout=timeout,
    )


def test_the_operators_page_lists_filters_and_cancels_across_instances(
    page: Any, instances: tuple[InstanceA, InstanceB]
) -> None:
    a, b = instances
    app: Flask = a.app
    ext: AsyncState = a.ext
    with app.app_context():
        a_running = a.jobs["until_cancelled"].start(120.0)
        a_marked = a.jobs["marked"].start()
        a_done = a.jobs["count"].start(3)
        assert a_done.wait(10)["status"] == "succeeded"
        a_instance = ext.app_state().records.instance_id
        wait_until(
            lambda: (a_marked.status() or {}).get("message") == MARKUP,
            10,
            message="the marked job's message",
        )
    b_running, b_done, b_instance = b.ids["running"], b.ids["done"], b.ids["instance"]
    assert a_instance != b_instance

    page.goto(a.url + "/asyncstate/admin")
    assert page.title() == "Background jobs"
    for job_id in (a_running.id, a_marked.id, a_done.id, b_running, b_done):
        row(page, job_id).wait_for()
    # both instances, with their heartbeat
    for instance, pid in ((a_instance, None), (b_instance, b.proc.pid)):
        inst = page.locator(f"tr.asyncstate-admin-instance[data-instance-id='{instance}']")
        inst.wait_for()
        assert inst.locator(".asyncstate-admin-instance-id").text_content() == instance
        assert inst.locator(".asyncstate-admin-instance-role").text_content() == "web"
        if pid is not None:
            assert inst.locator(".asyncstate-admin-instance-pid").text_content() == str(pid)
        beat = inst.locator(".asyncstate-admin-instance-beat").text_content() or ""
        assert re.fullmatch(r"\d+ s ago", beat), beat
    assert page.locator("tr.asyncstate-admin-instance").count() == 2

    # every job, newest first, on the instance that runs it
    listed = page.evaluate(
        "() => [...document.querySelectorAll('tr.asyncstate-admin-job')].map(tr => tr.dataset.jobId)"
    )
    assert sorted(listed) == sorted([a_running.id, a_marked.id, a_done.id, b_running, b_done])
    created = {}
    with app.app_context():
        for doc in ext.app_state().records.all_jobs():
            created[doc["id"]] = doc["created_at"]
    assert listed == sorted(listed, key=lambda i: -created[i])
    running = cells(page, b_running)
    assert running["name"] == "until_cancelled"
    assert running["status"] == DEFAULT_LABELS["running"]
    assert running["instance"] == b_instance
    assert running["owner"] == "\u2014"  # started outside a request: no owner
    assert re.fullmatch(r"\d+ s", running["age"]), running
    assert running["actions"] == DEFAULT_LABELS["cancel"]
    assert "asyncstate--indeterminate" in (
        row(page, b_running).locator(".asyncstate-admin-bar").get_attribute("class") or ""
    )  # no total: a sliding bar
    done = cells(page, a_done.id)
    assert done["status"] == DEFAULT_LABELS["succeeded"]
    assert done["instance"] == a_instance
    assert done["progress"] == "100%"
    assert done["message"] == "3 of 3 rows"
    assert row(page, a_done.id).locator(".asyncstate-admin-cancel").is_hidden()
    marked = cells(page, a_marked.id)
    assert marked["message"] == MARKUP  # the server's text, as text
    assert marked["progress"] == "25%"
    assert page.locator(".injected").count() == 0
    assert page.evaluate("() => window.__ran") is None
    counts = {
        f.get_attribute("data-status"): f.locator(".asyncstate-admin-count").text_content()
        for f in page.locator(".asyncstate-admin-filter").all()
    }
    assert counts[""] == "5" and counts["running"] == "3" and counts["succeeded"] == "2"
    assert counts["queued"] == "0"

    # the filter: running jobs only, asked of the server as such, kept in the address
    running_ids = sorted([a_running.id, a_marked.id, b_running])
    page.locator(".asyncstate-admin-filter[data-status='running']").click()
    assert sorted(visible_job_ids(page)) == running_ids  # at once
    page.wait_for_function(
        "() => document.querySelectorAll('tr.asyncstate-admin-job').length === 3"
    )
    assert sorted(visible_job_ids(page)) == running_ids
    assert (
        page.locator(".asyncstate-admin-filter[data-status='running']").get_attribute(
            "aria-pressed"
        )
        == "true"
    )
    assert (
        page.locator(".asyncstate-admin-filter[data-status='']").get_attribute("aria-pressed")
        == "false"
    )
    assert page.url.endswith("#status=running")
    assert any(u.split("?", 1)[1].startswith("status=running") for u in page.listed if "?" in u)
    page.reload()  # the filter survives a reload
    row(page, b_running).wait_for()
    page.wait_for_function(
        "() => document.querySelectorAll('tr.asyncstate-admin-job').length === 3"
    )
    assert sorted(visible_job_ids(page)) == running_ids
    page.locator(".asyncstate-admin-filter[data-status='']").click()
    page.wait_for_function(
        "() => document.querySelectorAll('tr.asyncstate-admin-job').length === 5"
    )

    # cancel B's job from A's page: that row ends cancelled, A's jobs keep running
    row(page, b_running).locator(".asyncstate-admin-cancel").click()
    wait_status(page, b_running, "cancelled", timeout=15000)
    kind, ended = b.out.get(timeout=15)
    assert kind == "ended" and ended["status"] == "cancelled" and ended["reason"] == "user"
    after = cells(page, b_running)
    assert after["status"] == DEFAULT_LABELS["cancelled"]
    assert row(page, b_running).locator(".asyncstate-admin-cancel").is_hidden()
    page.wait_for_timeout(2500)  # another poll or so: nothing else changed
    assert row(page, a_running.id).get_attribute("data-status") == "running"
    assert row(page, a_marked.id).get_attribute("data-status") == "running"
    with app.app_context():
        assert a_running.status()["status"] == "running"
        assert not a_running.status()["cancel_requested"]

    # hidden tab: no polling; visible again: at once
    page.evaluate("() => __setHidden(true)")
    page.wait_for_timeout(300)
    before = len(page.listed)
    page.wait_for_timeout(4500)  # two intervals and more
    assert len(page.listed) == before
    page.evaluate("() => __setHidden(false)")
    wait_until(lambda: len(page.listed) > before, 5, message="a poll once visible again")

    with app.app_context():
        a_running.cancel()
        a_marked.cancel()
        a_running.wait(10)
        a_marked.wait(10)


def test_a_failed_cancel_says_so_in_its_row(
    page: Any, instances: tuple[InstanceA, InstanceB]
) -> None:
    a, b = instances
    page.route(
        "**/asyncstate/admin/cancel/**",
        lambda route: route.fulfill(
            status=404, content_type="application/json", body='{"error": "no such job"}'
        ),
    )
    page.goto(a.url + "/asyncstate/admin")
    target = row(page, b.ids["running"])
    target.wait_for()
    target.locator(".asyncstate-admin-cancel").click()
    note = target.locator(".asyncstate-admin-note")
    note.wait_for()
    assert note.text_content() == DEFAULT_LABELS["cancelFailed"] + ": no such job"
    assert target.locator(".asyncstate-admin-cancel").is_enabled()  # try again later
    page.wait_for_timeout(2500)  # a poll meanwhile: the job still runs, the note stays
    assert target.get_attribute("data-status") == "running"
    assert note.text_content() == DEFAULT_LABELS["cancelFailed"] + ": no such job"
