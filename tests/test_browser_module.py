"""The plain ES module, ``<prefix>/asyncstate.mjs``, in Chromium, on pages with no jQuery:
``<asyncstate-progress>`` follows a job (polling, its event stream), cancels it, runs it
again; its events reach the page; page-wide defaults and the element's attributes give its
labels; and the core alone (``Tracker``) follows a job with no markup, as a SPA would.
Last, the pages of docs/browser.rst (docs/examples/clients.py): jQuery's, the module's and
htmx's.

A small app in this process, served on a free loopback port (werkzeug's server in a
thread); ``RUNS`` records the runs the server started, so the tests check what the server
did, not only what the page says.
"""

from __future__ import annotations

import importlib.util
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask, render_template_string, request
from markupsafe import Markup
from support.apps import make_app
from support.pages import ThreadedServer, page_factory

from flask_asyncstate import AsyncState, JobContext, JobHandle
from flask_asyncstate.templating import DEFAULT_LABELS

pytestmark = pytest.mark.browser

CSRF = "csrf-module-page-7d1e"  # the page's token: sent with every POST of the widget

#: A page with the module and one element; ``script``: the page's own module script, which
#: imports the module (instead of a <script src> of its own).
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<meta name="csrf-token" content="{{ csrf }}"><title>Module</title>
<link rel="stylesheet" href="/asyncstate/asyncstate.css">
{{ script|safe or '<script type="module" src="/asyncstate/asyncstate.mjs"></script>'|safe }}
</head>
<body>
<asyncstate-progress id="job" token="{{ token }}" interval="200"
  {%- for name, value in attributes.items() %} {{ name }}="{{ value }}"{% endfor %}>
</asyncstate-progress>
<script>
  window.__events = [];
  for (const name of ['transport', 'progress', 'done', 'error', 'result']) {
    document.addEventListener('asyncstate:' + name, (event) => window.__events.push(
      { name, target: event.target.id, status: event.detail && event.detail.status,
        detail: ['transport', 'result'].includes(name) ? event.detail : null }));
  }
</script>
</body></html>"""

#: The core without markup: a Tracker's events, in order, in window.__tracked.
TRACKER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>SPA</title>
<script type="module">
  import { Tracker } from '/asyncstate/asyncstate.mjs';
  const tracker = new Tracker({{ token|tojson }}, { interval: 200 });
  window.__tracked = [];
  for (const name of ['transport', 'progress', 'done']) {
    tracker.addEventListener(name, (event) => window.__tracked.push(
      [name, name === 'transport' ? event.detail : event.detail.status]));
  }
  tracker.start();
  window.__tracker = tracker;
</script></head><body><div id="app"></div></body></html>"""

#: Before the page's scripts: each change of the element's classes, status line and bar, in
#: window.__shown, so that a state shown for a moment is not missed.
RECORDER = """
window.__shown = [];
new MutationObserver(() => {
  const el = document.querySelector('#job');
  const status = el && el.querySelector('.asyncstate-status');
  if (!status) return;
  const bar = el.querySelector('.asyncstate-bar');
  const entry = { cls: el.className, status: status.textContent,
                  now: bar && bar.getAttribute('aria-valuenow') };
  const last = window.__shown[window.__shown.length - 1];
  if (!last || last.cls !== entry.cls || last.status !== entry.status || last.now !== entry.now)
    window.__shown.push(entry);
}).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
"""
#: Classes that would mean the element gave up, or showed an end it was not told about.
NOT_THE_END = {
    f"asyncstate--{name}"
    for name in ("failed", "error", "lost", "notfound", "forbidden", "cancelled", "succeeded")
}
UNAVAILABLE = '{"error": "the job store is unavailable, try again shortly"}'

#: Test key -> the ``job.attempt`` of every run the server started, in order.
RUNS: dict[str, list[int]] = {}


def build_app() -> tuple[Flask, AsyncState]:
    app, ext = make_app()

    @ext.job
    def steady(job: JobContext, key: str, steps: int = 10) -> int:
        RUNS.setdefault(key, []).append(job.attempt)
        for i in range(1, steps + 1):
            time.sleep(0.1)  # a job that takes its time, so the page sees it run
            job.progress(i, total=steps, message=f"step {i} of {steps}")
        return steps

    @ext.job
    def endless(job: JobContext, key: str) -> None:
        RUNS.setdefault(key, []).append(job.attempt)
        while not job.cancelled.wait(0.02):
            job.progress(1, total=10, message="working")
        job.check_cancelled()

    @ext.job
    def fails_once(job: JobContext, key: str) -> int:
        runs = RUNS.setdefault(key, [])
        runs.append(job.attempt)
        job.progress(1, total=2, message="row 1 of 2")
        time.sleep(0.2)  # running first, so the page sees it end
        if len(runs) == 1:
            raise ValueError("bad row 7")
        job.progress(2, total=2, message="row 2 of 2")
        return len(runs)

    @ext.job(render_result=lambda rows: Markup('<p class="report">{} rows</p>').format(rows))
    def reported(job: JobContext, key: str) -> int:
        RUNS.setdefault(key, []).append(job.attempt)
        for i in range(1, 5):
            time.sleep(0.1)  # running first, so the slot is seen empty
            job.progress(i, total=4)
        return 12

    jobs = {job.name: job for job in (steady, endless, fails_once, reported)}

    def start(name: str) -> JobHandle:
        steps = {"steps": int(request.args["steps"])} if "steps" in request.args else {}
        handle: JobHandle = jobs[name].start(request.args["key"], **steps)
        return handle

    @app.get("/element/<name>")
    def element(name: str) -> str:
        """A new job and its element (or the job of ``?token=``: a reload of its page);
        ``attributes`` (JSON) adds to the element's, ``script`` is the page's own module
        script."""
        return render_template_string(
            PAGE,
            csrf=CSRF,
            token=request.args.get("token") or start(name).token,
            attributes=json.loads(request.args.get("attributes", "{}")),
            script=request.args.get("script", ""),
        )

    @app.get("/tracker/<name>")
    def tracker(name: str) -> str:
        return render_template_string(TRACKER_PAGE, token=start(name).token)

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


def events(page: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in page.evaluate("() => window.__events") if e["name"] == name]


def no_jquery(page: Any) -> None:
    """The page ran without jQuery and never asked for it, nor for the classic script."""
    assert page.evaluate("() => typeof window.jQuery") == "undefined"
    scripts = [u.split("?", 1)[0] for u in page.requests if u.split("?", 1)[0].endswith(".js")]
    assert scripts == [], scripts
    assert not [e for e in page.console_errors if "asyncstate" in e], page.console_errors


# ------------------------------------------------------------------ the element


@pytest.mark.parametrize("mode", ["poll", "auto"])
def test_the_element_follows_a_job_to_its_end(new_page, server, key, mode) -> None:
    page = new_page()
    query = urlencode({"key": key, "attributes": json.dumps({"mode": mode})})
    page.goto(f"{server.url}/element/steady?{query}")
    element = page.locator("asyncstate-progress")
    # the markup the server's widget has, made by the element (it was empty)
    page.wait_for_selector("asyncstate-progress.asyncstate.asyncstate--running")
    parts = page.evaluate(
        "() => [...document.querySelector('#job').children].map(e => e.className)"
    )
    assert parts == [
        "asyncstate-bar",
        "asyncstate-eta",
        "asyncstate-message",
        "asyncstate-status",
        "asyncstate-cancel",
        "asyncstate-retry",
    ]
    bar = page.locator(".asyncstate-bar")
    assert bar.get_attribute("role") == "progressbar"
    assert [bar.get_attribute(f"aria-value{end}") for end in ("min", "max")] == ["0", "100"]
    assert bar.get_attribute("aria-label") == DEFAULT_LABELS["progress"]
    assert page.locator(".asyncstate-status").get_attribute("role") == "status"
    assert page.locator(".asyncstate-message").get_attribute("aria-live") == "polite"
    assert text_of(page, ".asyncstate-cancel") == DEFAULT_LABELS["cancel"]
    assert page.locator(".asyncstate-retry").is_hidden()
    page.wait_for_function(
        "() => +document.querySelector('.asyncstate-bar').getAttribute('aria-valuenow') > 0"
    )
    page.wait_for_selector("asyncstate-progress.asyncstate--succeeded", timeout=15000)
    assert text_of(page, ".asyncstate-status") == DEFAULT_LABELS["succeeded"]
    assert text_of(page, ".asyncstate-message") == "step 10 of 10"
    assert bar.get_attribute("aria-valuenow") == "100"
    assert re.fullmatch(r"\d+:\d{2} elapsed", text_of(page, ".asyncstate-eta"))
    assert page.locator(".asyncstate-cancel").is_hidden()
    assert "asyncstate--running" not in (element.get_attribute("class") or "")

    # the events bubble from the element, the payload in `detail`
    assert [e["detail"] for e in events(page, "transport")] == ["sse" if mode == "auto" else "poll"]
    done = events(page, "done")
    assert [(e["target"], e["status"]) for e in done] == [("job", "succeeded")]
    progress = events(page, "progress")
    assert len(progress) >= 2 and progress[-1]["status"] == "succeeded"
    assert events(page, "error") == []
    assert page.evaluate("() => document.querySelector('#job').widget.transport") == (
        "sse" if mode == "auto" else "poll"
    )
    assert any("/asyncstate/events/" in u for u in page.requests) is (mode == "auto")
    no_jquery(page)
    assert RUNS[key] == [1]


def test_cancel_from_the_element(new_page, server, key) -> None:
    page = new_page()
    page.goto(f"{server.url}/element/endless?key={key}")
    token = page.locator("#job").get_attribute("token")
    page.wait_for_selector("asyncstate-progress.asyncstate--running")
    with page.expect_request("**/asyncstate/cancel/**") as sent:
        page.click(".asyncstate-cancel")
    assert sent.value.method == "POST"
    assert sent.value.url == f"{server.url}/asyncstate/cancel/{token}"
    assert sent.value.headers["x-requested-with"] == "XMLHttpRequest"
    assert sent.value.headers["x-csrftoken"] == CSRF  # the page's <meta name="csrf-token">
    page.wait_for_selector("asyncstate-progress.asyncstate--cancelled", timeout=10000)
    assert text_of(page, ".asyncstate-status") == DEFAULT_LABELS["cancelled"]
    assert page.locator(".asyncstate-cancel").is_hidden()
    assert page.locator(".asyncstate-retry").is_visible()  # cancelled: it may run again
    assert [e["status"] for e in events(page, "done")] == ["cancelled"]
    answer = page.request.get(f"{server.url}/asyncstate/progress/{token}")
    assert answer.json()["status"] == "cancelled"
    no_jquery(page)


def test_try_again_from_the_element(new_page, server, key) -> None:
    page = new_page()
    page.goto(f"{server.url}/element/fails_once?key={key}")
    token = page.locator("#job").get_attribute("token")
    page.wait_for_selector("asyncstate-progress.asyncstate--failed", timeout=10000)
    assert text_of(page, ".asyncstate-status") == "Failed: ValueError: bad row 7"
    button = page.locator(".asyncstate-retry")
    assert button.is_visible() and button.text_content() == DEFAULT_LABELS["tryAgain"]

    with (
        page.expect_request("**/asyncstate/retry/**") as sent,
        page.expect_response("**/asyncstate/retry/**") as answered,
    ):
        button.click()
    assert sent.value.method == "POST"
    assert sent.value.url == f"{server.url}/asyncstate/retry/{token}"  # the same token
    assert sent.value.headers["x-csrftoken"] == CSRF
    assert answered.value.status == 202
    page.wait_for_selector("asyncstate-progress.asyncstate--succeeded", timeout=10000)
    assert text_of(page, ".asyncstate-status") == DEFAULT_LABELS["succeeded"]
    assert text_of(page, ".asyncstate-message") == "row 2 of 2"
    assert button.is_hidden()
    assert [e["status"] for e in events(page, "done")] == ["failed", "succeeded"]
    assert RUNS[key] == [1, 2]  # the server ran it again, under the same token
    no_jquery(page)


def test_a_refused_try_again_says_why(new_page, server, key) -> None:
    page = new_page()
    page.route(
        "**/asyncstate/retry/**",
        lambda route: route.fulfill(
            status=409, content_type="application/json", body='{"error": "not now"}'
        ),
    )
    page.goto(f"{server.url}/element/fails_once?key={key}")
    page.wait_for_selector("asyncstate-progress.asyncstate--failed", timeout=10000)
    page.click(".asyncstate-retry")
    page.wait_for_function(
        "(text) => document.querySelector('.asyncstate-message').textContent === text",
        arg=f"{DEFAULT_LABELS['tryAgainFailed']}: not now",
    )
    assert page.locator(".asyncstate-retry").is_enabled()  # may be pressed again
    errors = events(page, "error")
    assert len(errors) == 1 and RUNS[key] == [1]


def test_labels_from_the_page_and_from_the_element(new_page, server, key) -> None:
    """Three layers: the server's defaults, the page's (``defaults.labels``, set by the
    module script that imports the module), the element's ``labels`` attribute."""
    script = (
        '<script type="module">'
        "import { defaults } from '/asyncstate/asyncstate.mjs';"
        " defaults.labels = { succeeded: 'All imported', running: 'Page running' };"
        "</script>"
    )
    attributes = {"labels": json.dumps({"running": "Importing", "cancel": "Stop it"})}
    page = new_page()
    query = urlencode({"key": key, "attributes": json.dumps(attributes), "script": script})
    page.goto(f"{server.url}/element/steady?{query}")
    page.wait_for_function(
        "() => document.querySelector('.asyncstate-status').textContent === 'Importing'"
    )
    assert text_of(page, ".asyncstate-cancel") == "Stop it"
    page.wait_for_selector("asyncstate-progress.asyncstate--succeeded", timeout=15000)
    assert text_of(page, ".asyncstate-status") == "All imported"
    assert page.locator(".asyncstate-bar").get_attribute("aria-label") == "Progress"


def shown(page: Any) -> list[dict[str, Any]]:
    """What the element showed, each change (see RECORDER), up to its first end."""
    log = list(page.evaluate("() => window.__shown"))
    for entry in log:
        ended = NOT_THE_END & set(entry["cls"].split())
        if ended:
            return log[: log.index(entry)]
    return log


def test_a_reload_follows_the_same_job(new_page, server, key) -> None:
    page = new_page()
    page.goto(f"{server.url}/element/steady?key={key}&steps=30")
    token = page.locator("#job").get_attribute("token")
    page.goto(f"{server.url}/element/steady?{urlencode({'key': key, 'token': token})}")
    above = "(n) => +document.querySelector('.asyncstate-bar').getAttribute('aria-valuenow') > n"
    page.wait_for_function(above, arg=0)
    before = int(page.locator(".asyncstate-bar").get_attribute("aria-valuenow") or 0)
    page.reload()
    page.wait_for_function(above, arg=before - 1)  # from where it was, not from the start
    assert page.locator("#job").get_attribute("token") == token
    assert "asyncstate--running" in (page.locator("#job").get_attribute("class") or "")
    page.wait_for_selector("asyncstate-progress.asyncstate--succeeded", timeout=15000)
    assert text_of(page, ".asyncstate-message") == "step 30 of 30"
    assert RUNS[key] == [1]  # the reload started nothing
    no_jquery(page)


def test_503_polls_show_reconnecting_keep_the_bar_and_recover(new_page, server, key) -> None:
    page = new_page(RECORDER)
    polls: list[tuple[float, int]] = []

    def progress(route: Any) -> None:
        status = 503 if len(polls) in (2, 3) else 200  # polls 3 and 4
        polls.append((time.monotonic(), status))
        if status == 503:
            route.fulfill(
                status=503,
                headers={"Retry-After": "1", "Cache-Control": "no-store"},
                content_type="application/json",
                body=UNAVAILABLE,
            )
        else:
            route.continue_()

    page.route("**/asyncstate/progress/**", progress)
    page.goto(f"{server.url}/element/steady?key={key}&steps=25")
    page.wait_for_selector("asyncstate-progress.asyncstate--reconnecting")
    assert text_of(page, ".asyncstate-status") == DEFAULT_LABELS["reconnecting"]
    page.wait_for_selector("asyncstate-progress.asyncstate--succeeded", timeout=15000)
    assert text_of(page, ".asyncstate-status") == DEFAULT_LABELS["succeeded"]

    log = shown(page)  # nothing final before the end the server sent
    reconnecting = [e for e in log if "asyncstate--reconnecting" in e["cls"].split()]
    assert reconnecting, log
    for entry in reconnecting:  # a running job still, its bar where it was (> 0)
        assert entry["status"] == DEFAULT_LABELS["reconnecting"], entry
        assert "asyncstate--running" in entry["cls"].split(), entry
        assert entry["now"] == reconnecting[0]["now"] and int(entry["now"]) > 0, entry
    statuses = [status for _, status in polls]
    assert statuses[2:5] == [503, 503, 200]
    assert 0.9 <= polls[3][0] - polls[2][0] < 1.9  # Retry-After: 1, not the back-off
    assert [(e["status"], e["target"]) for e in events(page, "error")] == [(503, "job")] * 2
    assert RUNS[key] == [1]


def test_a_stream_the_server_refuses_falls_back_to_polls(
    new_page, server, key, monkeypatch
) -> None:
    """The server's own 429 (too many open streams): one stream asked for, then polls."""
    monkeypatch.setattr(server.ext.app_state(server.app).streams, "acquire", lambda owner: None)
    page = new_page()
    query = urlencode({"key": key, "attributes": json.dumps({"mode": "auto"})})
    page.goto(f"{server.url}/element/steady?{query}")
    page.wait_for_selector("asyncstate-progress.asyncstate--succeeded", timeout=15000)
    assert [e["detail"] for e in events(page, "transport")] == ["sse", "poll"]
    widget = page.evaluate(
        "() => { const w = document.querySelector('#job').widget;"
        " return {transport: w.transport, sseRefused: w.sseRefused}; }"
    )
    assert widget == {"transport": "poll", "sseRefused": True}
    page.wait_for_timeout(300)  # what is tested is that nothing happens: no stream reopened
    assert sum("/asyncstate/events/" in u for u in page.requests) == 1
    assert sum("/asyncstate/progress/" in u for u in page.requests) >= 2
    assert events(page, "error") == []  # a refused stream is no error of the job
    no_jquery(page)


def test_a_stream_that_says_unavailable_then_drops_hands_over_to_polls(
    new_page, server, key
) -> None:
    """An open stream: a document, then the store away, then the connection ends."""
    streams: list[str] = []
    doc = {
        "id": "x",
        "name": "steady",
        "status": "running",
        "current": 1,
        "total": 10,
        "percent": 10.0,
        "message": "step 1 of 10",
        "cancel_requested": False,
        "created_at": 1.0,
        "updated_at": 1.0,
    }
    body = f"retry: 60000\n\ndata: {json.dumps(doc)}\n\nevent: unavailable\ndata: {UNAVAILABLE}\n\n"

    def stream(route: Any) -> None:
        streams.append(route.request.url)
        route.fulfill(status=200, content_type="text/event-stream", body=body)

    page = new_page(RECORDER)
    page.route("**/asyncstate/events/**", stream)
    query = urlencode({"key": key, "attributes": json.dumps({"mode": "auto"})})
    page.goto(f"{server.url}/element/steady?{query}")
    page.wait_for_selector("asyncstate-progress.asyncstate--succeeded", timeout=15000)
    log = shown(page)
    assert any(
        e["status"] == DEFAULT_LABELS["reconnecting"] and "asyncstate--reconnecting" in e["cls"]
        for e in log
    ), log
    assert [e["detail"] for e in events(page, "transport")] == ["sse", "poll"]
    assert page.evaluate("() => document.querySelector('#job').widget.sseRefused") is False
    assert len(streams) == 1
    assert [e["status"] for e in events(page, "error")] == [503]  # the unavailable event
    no_jquery(page)


def test_the_result_slot_of_the_element(new_page, server, key) -> None:
    page = new_page()
    query = urlencode({"key": key, "attributes": json.dumps({"result": "true"})})
    page.goto(f"{server.url}/element/reported?{query}")
    page.wait_for_selector("asyncstate-progress.asyncstate--running")
    slot = page.locator(".asyncstate-result")
    assert slot.is_hidden() and slot.inner_html() == ""
    page.wait_for_selector(".asyncstate-result:not([hidden]) .report", timeout=10000)
    assert text_of(page, ".asyncstate-result") == "12 rows"
    assert text_of(page, ".asyncstate-status") == DEFAULT_LABELS["succeeded"]
    html = '<p class="report">12 rows</p>'
    assert [e["detail"] for e in events(page, "result")] == [html]
    # the slot between the message and the status line, as in the server's markup
    parts = page.evaluate(
        "() => [...document.querySelector('#job').children].map(e => e.className)"
    )
    assert parts.index("asyncstate-message") < parts.index("asyncstate-result")
    assert parts.index("asyncstate-result") < parts.index("asyncstate-status")
    results = [u for u in page.requests if "/asyncstate/result/" in u]
    token = page.locator("#job").get_attribute("token")
    assert [u.split("?", 1)[0] for u in results] == [f"{server.url}/asyncstate/result/{token}"]

    page.goto(f"{server.url}/element/reported?{urlencode({'key': key, 'token': token})}&{query}")
    page.wait_for_selector(".asyncstate-result:not([hidden]) .report")  # fetched again
    assert RUNS[key] == [1]
    no_jquery(page)


# ------------------------------------------------------------------ the core alone


def test_the_core_alone_follows_a_job(new_page, server, key) -> None:
    page = new_page()
    page.goto(f"{server.url}/tracker/steady?key={key}")
    page.wait_for_function("() => window.__tracker && window.__tracker.finished", timeout=15000)
    tracked = page.evaluate("() => window.__tracked")
    assert tracked[0] == ["transport", "poll"]
    assert tracked[-2:] == [["progress", "succeeded"], ["done", "succeeded"]]
    assert all(name == "progress" for name, _ in tracked[1:-1]) and len(tracked) >= 4
    assert page.evaluate("() => document.querySelector('#app').children.length") == 0
    assert page.evaluate("() => window.__tracker.doc.result") == 10
    no_jquery(page)


# ------------------------------------------------------------------ the pages of the docs

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "clients.py"


@pytest.fixture(scope="module")
def example() -> Iterator[ThreadedServer]:
    """docs/examples/clients.py as its run line says, with a job of two seconds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLASK_SECRET_KEY", "docs-example-clients")
        spec = importlib.util.spec_from_file_location("docs_example_clients", EXAMPLE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    module.STEPS, module.PAUSE = 20, 0.1
    with ThreadedServer(module.app, module.asyncstate) as running:
        yield running


@pytest.fixture
def example_page(browser, example) -> Iterator[Callable[..., Any]]:
    yield from page_factory(browser, example.url)


@pytest.mark.parametrize("client", ["jquery", "module", "htmx"])
def test_the_pages_of_the_docs_show_a_job_to_its_end(example_page, example, client) -> None:
    page = example_page()
    page.goto(f"{example.url}/{client}")
    page.click("button")
    page.wait_for_url("**?token=*")
    page.wait_for_selector(".asyncstate.asyncstate--running")
    assert not page.locator("#done").is_visible()
    page.wait_for_selector(".asyncstate.asyncstate--succeeded", timeout=15000)
    assert page.locator("#done").is_visible()  # the page's own handler of the done event
    assert text_of(page, ".asyncstate-message") == "20 of 20 products"
    # the module page's defaults.labels, set by the script that imports the module
    done = "Imported" if client == "module" else DEFAULT_LABELS["succeeded"]
    assert text_of(page, ".asyncstate-status") == done
    assert page.evaluate("() => typeof window.jQuery") == (
        "function" if client == "jquery" else "undefined"
    )
    # htmx: polls of the server's fragment, no script of ours
    ours = [u for u in page.requests if re.search(r"/asyncstate/asyncstate\.m?js", u)]
    assert bool(ours) is (client != "htmx")
    assert any("/asyncstate/fragment/" in u for u in page.requests) is (client == "htmx")
    errors = [e for e in page.console_errors if "asyncstate" in e]  # (not the favicon's 404)
    assert not errors, page.console_errors
