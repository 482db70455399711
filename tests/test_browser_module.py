"""The plain ES module, ``<prefix>/asyncstate.mjs``, in Chromium, on pages with no jQuery:
``<asyncstate-progress>`` follows a job (polling, its event stream), cancels it, runs it
again; its events reach the page; page-wide defaults and the element's attributes give its
labels; and the core alone (``Tracker``) follows a job with no markup, as a SPA would.
Last, the pages of docs/browser.rst (docs/examples/clients.py), jQuery's and the module's.

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
  for (const name of ['transport', 'progress', 'done', 'error']) {
    document.addEventListener('asyncstate:' + name, (event) => window.__events.push(
      { name, target: event.target.id, status: event.detail && event.detail.status,
        detail: name === 'transport' ? event.detail : null }));
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

    jobs = {job.name: job for job in (steady, endless, fails_once)}

    def start(name: str) -> JobHandle:
        handle: JobHandle = jobs[name].start(request.args["key"])
        return handle

    @app.get("/element/<name>")
    def element(name: str) -> str:
        """A new job and its element; ``attributes`` (JSON) adds to the element's, ``script``
        is the page's own module script."""
        return render_template_string(
            PAGE,
            csrf=CSRF,
            token=start(name).token,
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


@pytest.mark.parametrize("client", ["jquery", "module"])
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
    errors = [e for e in page.console_errors if "asyncstate" in e]  # (not the favicon's 404)
    assert not errors, page.console_errors
