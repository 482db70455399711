"""Jobs that run again, in Chromium (issue 24): the retry countdown, "Try again" in the widget
and the jobs panel, "Run again" on the operator's page, and a resumed job's line.

A small app in this process, served on a free loopback port (werkzeug's server in a thread),
with jobs that fail on purpose; ``RUNS`` records the attempts the server ran, so each test
checks what the server did, not only what the page says.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask, render_template_string, request
from markupsafe import Markup
from support.apps import GATES, Gate, make_app
from support.pages import ThreadedServer, page_factory
from support.waiting import wait_until

from flask_asyncstate import AsyncState, JobContext, JobHandle
from flask_asyncstate.templating import DEFAULT_LABELS

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Again</title></head>
<body>{{ body }}</body></html>"""

#: Test key -> the ``job.attempt`` of every run the server started, in order.
RUNS: dict[str, list[int]] = {}
#: Test key -> the handle of the job a page started.
HANDLES: dict[str, JobHandle] = {}

#: Logs every text the first widget's ETA and status lines show, in order.
RECORDER = """
(() => {
  const seen = window.__seen = { eta: [], status: [] };
  const snap = () => {
    for (const key of ['eta', 'status']) {
      const el = document.querySelector('.asyncstate-' + key);
      const list = seen[key];
      if (el && (!list.length || list[list.length - 1] !== el.textContent)) {
        list.push(el.textContent);
      }
    }
  };
  new MutationObserver(snap).observe(document, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
})();
"""
COUNTDOWN = re.compile(r"^Retrying in (\d+) s \(attempt 2 of 2\)$")


# ------------------------------------------------------------------ the app


def build_app() -> tuple[Flask, AsyncState]:
    app, ext = make_app(admin_guard=lambda: None)

    def ran(job: JobContext, key: str) -> list[int]:
        runs = RUNS.setdefault(key, [])
        runs.append(job.attempt)
        return runs

    @ext.job(retries=1, backoff=3)
    def flaky(job: JobContext, key: str) -> str:
        """Its first run raises (a service is down); the retry goes through in four steps."""
        if ran(job, key) == [1]:
            raise ConnectionError("the service is down")
        for i in range(1, 5):
            job.progress(i, total=4, message=f"step {i} of 4")
        return "done"

    @ext.job
    def fails_once(job: JobContext, key: str) -> int:
        """Fails half way on its first run, succeeds on the next."""
        runs = ran(job, key)
        job.progress(1, total=2, message="row 1 of 2")
        if len(runs) == 1:
            raise ValueError("bad row 7")
        job.progress(2, total=2, message="row 2 of 2")
        return len(runs)

    @ext.job(unique=True)
    def single(job: JobContext, key: str, gate: str = "") -> None:
        """One at a time per owner: without a gate it fails, with one it waits for it."""
        ran(job, key)
        if not gate:
            raise RuntimeError("no gate given")
        GATES[gate].wait(20)

    @ext.job(resumable=True)
    def patient(job: JobContext, key: str, gate: str) -> str:
        """Runs until its gate opens or it is cancelled."""
        ran(job, key)
        job.progress(1, total=2, message="half way")
        while not job.cancelled.wait(0.05):
            if GATES[gate].is_set():
                return "released"
        return "stopped"

    jobs = {job.name: job for job in (flaky, fails_once, single, patient)}

    def start(name: str) -> JobHandle:
        """Start job ``name`` with the query's ``key`` (and ``gate``), in this session."""
        key = request.args["key"]
        gate = request.args.get("gate")
        handle: JobHandle = jobs[name].start(key, *([gate] if gate else []))
        HANDLES[key] = handle
        return handle

    def page(body: str, **context: Any) -> str:
        inner = render_template_string(body, **context)
        return render_template_string(PAGE, body=Markup(inner))

    @app.get("/widget/<name>")
    def widget(name: str) -> str:
        return page("{{ asyncstate_widget(token, interval=250) }}", token=start(name).token)

    @app.get("/start/<name>")
    def start_json(name: str) -> dict[str, str]:
        return {"token": start(name).token}

    @app.get("/panel")
    def panel() -> str:
        """A failing job started, then the session's jobs panel (labels from the query)."""
        start("fails_once")
        labels = json.loads(request.args.get("labels", "{}"))
        return page("{{ asyncstate_jobs(interval=250, labels=labels) }}", labels=labels)

    return app, ext


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(*build_app()) as running:
        yield running


@pytest.fixture
def new_page(browser, server) -> Iterator[Callable[..., Any]]:
    """``new_page(*init_scripts)``: see :func:`pages.page_factory`."""
    yield from page_factory(browser, server.url)


@pytest.fixture
def key() -> str:
    """This test's key: the runs of its jobs are ``RUNS[key]``."""
    return secrets.token_hex(6)


def text_of(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.text_content())


def progress(page: Any, server: ThreadedServer, token: str) -> dict[str, Any]:
    """The job's document as this page's session reads it."""
    answer = page.request.get(f"{server.url}/asyncstate/progress/{token}")
    assert answer.status == 200, answer.text()
    return dict(answer.json())


def token_of(page: Any, widget: str = ".asyncstate") -> str:
    return str(page.locator(widget).first.get_attribute("data-asyncstate-token"))


# ------------------------------------------------------------------ the tests


def test_a_retry_wait_counts_down_then_the_bar_completes(new_page, server, key) -> None:
    page = new_page(RECORDER)
    page.goto(f"{server.url}/widget/flaky?key={key}")
    page.wait_for_selector(".asyncstate.asyncstate--queued.asyncstate--retry-scheduled")
    page.wait_for_selector(".asyncstate.asyncstate--succeeded", timeout=15000)

    seen = page.evaluate("() => window.__seen")
    counted = [int(m[1]) for m in map(COUNTDOWN.match, seen["eta"]) if m]
    # a 3 s back-off (up to a quarter more): 4 or 3 first (2 on a busy machine that showed
    # the waiting document late), then each second one less, down to 1
    assert counted and counted[0] in (2, 3, 4), seen["eta"]
    assert counted == list(range(counted[0], 0, -1)), seen["eta"]
    assert "Failed, will try again: ConnectionError: the service is down" in seen["status"]
    assert text_of(page, ".asyncstate-status") == DEFAULT_LABELS["succeeded"]
    assert page.locator(".asyncstate-bar").get_attribute("aria-valuenow") == "100"
    assert re.fullmatch(r"\d+:\d{2} elapsed", text_of(page, ".asyncstate-eta"))
    assert page.locator(".asyncstate-retry").is_hidden()
    doc = progress(page, server, token_of(page))
    assert (doc["status"], doc["attempt"], doc["max_attempts"], doc["result"]) == (
        "succeeded",
        2,
        2,
        "done",
    )
    assert RUNS[key] == [1, 2]
    print(f"countdown shown: {counted}; status lines: {seen['status']}")


def test_try_again_runs_the_failed_job_again_on_the_same_page(new_page, server, key) -> None:
    page = new_page()
    page.goto(f"{server.url}/widget/fails_once?key={key}")
    url, token = page.url, token_of(page)
    page.evaluate("() => { window.__samePage = true; }")
    page.wait_for_selector(".asyncstate.asyncstate--failed")
    assert text_of(page, ".asyncstate-status") == "Failed: ValueError: bad row 7"
    button = page.locator(".asyncstate-retry")
    assert button.is_visible() and button.text_content() == DEFAULT_LABELS["tryAgain"]
    assert page.locator(".asyncstate-cancel").is_hidden()
    # the run again must fire "done" once more (bound now: after the first end)
    page.evaluate(
        "() => { window.__done = [];"
        " $(document).on('asyncstate:done', (e, doc) => window.__done.push(doc.status)); }"
    )

    with (
        page.expect_request("**/asyncstate/retry/**") as sent,
        page.expect_response("**/asyncstate/retry/**") as answered,
    ):
        button.click()
    assert sent.value.method == "POST"
    assert sent.value.url == f"{server.url}/asyncstate/retry/{token}"  # the same token
    assert sent.value.headers["x-requested-with"] == "XMLHttpRequest"
    assert answered.value.status == 202
    assert answered.value.json()["attempt"] == 2
    page.wait_for_selector(".asyncstate.asyncstate--succeeded", timeout=15000)

    assert page.evaluate("() => window.__samePage") is True and page.url == url  # no navigation
    assert page.evaluate("() => window.__done") == ["succeeded"]
    assert text_of(page, ".asyncstate-status") == DEFAULT_LABELS["succeeded"]
    assert text_of(page, ".asyncstate-message") == "row 2 of 2"
    assert button.is_hidden()
    doc = progress(page, server, token)
    assert (doc["status"], doc["attempt"], doc["result"], doc["error"]) == ("succeeded", 2, 2, None)
    assert RUNS[key] == [1, 2]  # the server ran it twice, the second time to the end


def test_a_refused_try_again_says_why_and_can_be_pressed_again(new_page, server, key) -> None:
    page = new_page()
    page.goto(f"{server.url}/widget/single?key={key}")
    token = token_of(page)
    page.wait_for_selector(".asyncstate.asyncstate--failed")
    gate = Gate()
    blocker = page.request.get(f"{server.url}/start/single?key={key}-other&gate={gate.name}")
    assert blocker.status == 200, blocker.text()  # the same owner: holds the unique place
    button = page.locator(".asyncstate-retry")

    with page.expect_response("**/asyncstate/retry/**") as answered:
        button.click()
    assert answered.value.status == 409
    reason = answered.value.json()["error"]
    message = page.locator(".asyncstate-message")
    assert message.text_content() == f"{DEFAULT_LABELS['tryAgainFailed']}: {reason}"
    assert button.is_visible() and button.is_enabled()
    assert "asyncstate--failed" in (page.locator(".asyncstate").get_attribute("class") or "")

    quota = "You already have 20 jobs in progress. Wait for one to finish."
    page.route(
        "**/asyncstate/retry/**",
        lambda route: route.fulfill(
            status=429, content_type="application/json", body=json.dumps({"error": quota})
        ),
    )
    button.click()
    page.wait_for_function(
        "(text) => document.querySelector('.asyncstate-message').textContent === text",
        arg=f"{DEFAULT_LABELS['tryAgainFailed']}: {quota}",
    )
    page.unroute("**/asyncstate/retry/**")
    assert RUNS[key] == [1]  # refused twice: nothing ran

    gate.set()
    wait_until(
        lambda: progress(page, server, blocker.json()["token"])["status"] == "succeeded",
        10,
        message="the blocking job ends",
    )
    with page.expect_response("**/asyncstate/retry/**") as answered:
        button.click()
    assert answered.value.status == 202
    page.wait_for_function(  # the second run, followed to its end: it failed again
        "() => { const w = jQuery('.asyncstate').data('asyncstate');"
        " return w.finished && w.doc.status === 'failed' && w.doc.attempt === 2; }",
        timeout=10000,
    )
    assert RUNS[key] == [1, 2]
    assert progress(page, server, token)["attempt"] == 2
    assert text_of(page, ".asyncstate-status") == "Failed: RuntimeError: no gate given"
    assert button.is_visible() and button.is_enabled()  # offered again
    assert message.text_content() == ""  # the refusal went with the new run


def test_the_jobs_panel_offers_try_again(new_page, server, key) -> None:
    labels = {"tryAgain": "<b>Once more</b> & again"}
    page = new_page()
    page.goto(f"{server.url}/panel?key={key}&labels={quote(json.dumps(labels))}")
    job = page.locator(".asyncstate-job").first
    job.locator(".asyncstate.asyncstate--failed").wait_for()
    button = job.locator(".asyncstate-retry")
    assert button.text_content() == labels["tryAgain"]  # a label is text, never markup
    assert job.locator(".asyncstate-retry b").count() == 0

    button.click()
    job.locator(".asyncstate.asyncstate--succeeded").wait_for(timeout=15000)
    assert button.is_hidden()
    assert RUNS[key] == [1, 2]
    listed = page.request.get(f"{server.url}/asyncstate/jobs").json()
    assert [(j["id"], j["status"], j["attempt"]) for j in listed] == [
        (job.get_attribute("data-job-id"), "succeeded", 2)
    ]


def test_the_operators_page_runs_a_failed_job_again(new_page, server, key) -> None:
    job = server.ext.registered_job("fails_once")
    assert job is not None
    with server.app.app_context():  # no request: a job of no owner, as a cron job's
        handle = job.start(key)
        assert handle.wait(10)["status"] == "failed"
    page = new_page()
    page.goto(f"{server.url}/asyncstate/admin")
    row = page.locator(f"tr.asyncstate-admin-job[data-job-id='{handle.id}']")
    row.wait_for()
    page.wait_for_selector(
        f"tr.asyncstate-admin-job[data-job-id='{handle.id}'][data-status='failed']"
    )
    button = row.locator(".asyncstate-admin-retry")
    assert button.is_visible() and button.text_content() == "Run again"
    assert button.get_attribute("aria-label") == "Run job fails_once again"
    assert row.locator(".asyncstate-admin-cancel").is_hidden()

    with page.expect_response("**/asyncstate/admin/retry/**") as answered:
        button.click()
    assert answered.value.status == 202
    page.wait_for_selector(
        f"tr.asyncstate-admin-job[data-job-id='{handle.id}'][data-status='succeeded']",
        state="attached",
        timeout=15000,
    )
    assert button.is_hidden()
    assert row.locator(".asyncstate-admin-note").text_content() == ""
    assert RUNS[key] == [1, 2]
    with server.app.app_context():
        assert handle.status()["attempt"] == 2


def test_a_resumed_job_says_so_beside_its_status(new_page, server, key) -> None:
    gate = Gate()
    page = new_page()
    page.goto(f"{server.url}/widget/patient?key={key}&gate={gate.name}")
    page.wait_for_selector(".asyncstate.asyncstate--running")
    assert page.locator(".asyncstate--resumed").count() == 0
    handle = HANDLES[key]
    with server.app.app_context():
        state = server.ext.app_state()
        local = state.local_jobs.get(handle.id)
        # what a deploy does to a resumable job: back to the queue, for any instance
        assert state.lifecycle.resume_later(local.ctx, local.job) is True
    resumed = f"{DEFAULT_LABELS['running']} \u00b7 {DEFAULT_LABELS['resumed']}"
    page.wait_for_function(
        "(text) => document.querySelector('.asyncstate-status').textContent === text",
        arg=resumed,
        timeout=10000,
    )
    assert "asyncstate--resumed" in (page.locator(".asyncstate").get_attribute("class") or "")
    wait_until(lambda: RUNS[key] == [1, 2], 5, message=lambda: f"a second run: {RUNS[key]}")

    page.click(".asyncstate-cancel")
    page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=10000)
    assert text_of(page, ".asyncstate-status") == DEFAULT_LABELS["cancelled"]  # no resume line
    assert page.locator(".asyncstate--resumed").count() == 0
    assert page.locator(".asyncstate-retry").is_visible()  # cancelled: it can run again
    gate.set()  # the first run's thread, forgotten by the resume, ends too
