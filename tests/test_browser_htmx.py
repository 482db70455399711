"""The htmx widget in headless Chromium: htmx and its SSE extension from npm (``node_modules``,
installed by ``npm ci`` as ``.ci/lint-js`` does; pinned in package-lock.json), served by the
test app itself. It polls, cancels, stops polling at the end, runs the job again, sends
Flask-WTF's CSRF token, and follows the stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import render_template_string, request, send_file
from flask_wtf.csrf import CSRFProtect
from support.apps import GATES, Gate
from support.pages import ThreadedServer, page_factory

from flask_asyncstate.templating import DEFAULT_LABELS

pytestmark = pytest.mark.browser

NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
SCRIPTS = {
    "htmx.js": NODE_MODULES / "htmx.org" / "dist" / "htmx.min.js",
    "sse.js": NODE_MODULES / "htmx-ext-sse" / "dist" / "sse.js",
}
PAGE = """<!doctype html>
<html><head><title>htmx</title>
<script src="/htmx.js"></script><script src="/sse.js"></script>
</head><body>
{{ asyncstate_widget(token, client="htmx", interval=250, mode=mode) }}
</body></html>"""


@pytest.fixture
def server(make_app: Any) -> Iterator[tuple[ThreadedServer, Gate]]:
    missing = [str(p) for p in SCRIPTS.values() if not p.exists()]
    if missing:
        pytest.fail(f"npm ci first (htmx from package-lock.json): missing {missing}")
    app, ext = make_app()
    CSRFProtect(app)  # the buttons must send the token
    gate = Gate()

    @ext.job
    def work(job: Any, gate_name: str) -> str:
        job.progress(1, total=4, message="step 1 of 4")
        while not GATES[gate_name].wait(0.02):
            job.check_cancelled()
        job.progress(4, total=4, message="all 4 steps")
        return "done"

    @app.get("/")
    def page() -> str:
        token = work.start(gate.name).token
        return render_template_string(PAGE, token=token, mode=request.args.get("mode", "poll"))

    @app.get("/<any('htmx.js', 'sse.js'):name>")
    def script(name: str) -> Any:
        return send_file(SCRIPTS[name], mimetype="text/javascript")

    @app.get("/favicon.ico")
    def favicon() -> tuple[str, int]:
        return "", 204  # no 404 in the console: the tests read it for refused posts

    with ThreadedServer(app, ext) as running:
        yield running, gate
    gate.set()


@pytest.fixture
def new_page(browser: Any, server: tuple[ThreadedServer, Gate]) -> Iterator[Callable[..., Any]]:
    yield from page_factory(browser, server[0].url)


def _status(page: Any) -> str:
    return str(page.text_content(".asyncstate-status") or "")


def _wait_status(page: Any, text: str) -> None:
    page.wait_for_function(
        "t => (document.querySelector('.asyncstate-status') || {}).textContent === t", arg=text
    )


def _count(page: Any, part: str) -> int:
    return sum(1 for url in page.requests if part in url)


def test_the_htmx_widget_polls_cancels_stops_and_runs_again(new_page, server) -> None:
    running, gate = server
    page = new_page()
    page.goto(running.url + "/")
    # rendered inline, before any poll: the job is just starting
    assert _status(page) in (DEFAULT_LABELS["queued"], DEFAULT_LABELS["running"])
    page.wait_for_selector(".asyncstate-message:text('step 1 of 4')")
    assert page.get_attribute(".asyncstate-bar", "aria-valuenow") == "25"
    page.wait_for_timeout(600)  # the widget polls every 250 ms (events come in meanwhile)
    assert _count(page, "/asyncstate/fragment/") >= 2

    page.click(".asyncstate-cancel")  # hx-post with X-Requested-With and the CSRF token
    _wait_status(page, DEFAULT_LABELS["cancelled"])
    assert page.query_selector(".asyncstate-cancel") is None
    polls = _count(page, "/asyncstate/fragment/")
    page.wait_for_timeout(1000)  # 286: htmx polls no more
    assert _count(page, "/asyncstate/fragment/") == polls
    assert [u for u in page.requests if "/asyncstate/cancel/" in u]

    page.click(".asyncstate-retry")  # "Try again": the job runs again, the widget polls again
    _wait_status(page, DEFAULT_LABELS["running"])
    gate.set()
    _wait_status(page, DEFAULT_LABELS["succeeded"])
    assert page.get_attribute(".asyncstate-bar", "aria-valuenow") == "100"
    assert page.text_content(".asyncstate-message") == "all 4 steps"
    assert page.query_selector(".asyncstate-retry") is None
    polls = _count(page, "/asyncstate/fragment/")
    page.wait_for_timeout(1000)
    assert _count(page, "/asyncstate/fragment/") == polls
    assert page.console_errors == []  # no refused post (a 403 would be logged by htmx)


def test_the_htmx_widget_follows_the_stream_with_the_sse_extension(new_page, server) -> None:
    running, gate = server
    page = new_page()
    page.goto(running.url + "/?mode=sse")
    page.wait_for_selector(".asyncstate-stream .asyncstate-message:text('step 1 of 4')")
    for _ in range(100):  # the stream is open (a sync page sees requests while it waits)
        if _count(page, "/asyncstate/events/"):
            break
        page.wait_for_timeout(50)
    assert _count(page, "/asyncstate/events/") == 1
    gate.set()
    _wait_status(page, DEFAULT_LABELS["succeeded"])
    assert page.text_content(".asyncstate-message") == "all 4 steps"
    # past EventSource's retry delay (2 s): sse-close="end" closed it for good
    page.wait_for_timeout(2500)
    assert _count(page, "/asyncstate/events/") == 1
    assert _count(page, "/asyncstate/fragment/") == 0  # no polling beside the stream
    assert page.console_errors == []
