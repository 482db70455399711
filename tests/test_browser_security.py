"""The widget is no script gadget, in Chromium: markup a page lets through (a "sanitized"
comment keeping data-* attributes, as DOMPurify's defaults do) cannot point the plugin at
another origin; plus the bar of a job cancelled while queued, and the job's display label.

The app is served on a free loopback port; a SECOND loopback server on another port is
another origin: it records every request it gets and answers as an attacker would (JSONP
script, a result view with ``<img onerror>``, CORS allowing everything). The hostile
markup points the widget at it: it must get no request, none of its scripts may run, the
page's CSRF token must never reach it, and the console says why the widget was refused.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlencode

import pytest
from flask import Flask, render_template_string, request
from markupsafe import Markup
from support.apps import make_app
from support.pages import ThreadedServer, page_factory

from flask_asyncstate import AsyncState, JobContext
from flask_asyncstate.testing import job_gate

pytestmark = pytest.mark.browser

PREFIX = "/jobs-api"  # the app's own prefix: a custom one, not the default
CSRF = "csrf-secret-4f1c9a77e2"  # the page's CSRF token: must never leave the app

#: What the other origin's scripts and result HTML do when they run: a window flag.
EVIL_SCRIPT = "window.__evil = (window.__evil || []).concat(['script']);"
EVIL_HTML = (
    '<img src="/evil-missing.png" onerror="window.__evil = (window.__evil || [])'
    ".concat(['result-html']); window.__stolen ="
    " document.querySelector('meta[name=csrf-token]').content\">"
)

COMMENT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<meta name="csrf-token" content="{{ csrf }}"><title>A post</title>
{%- if assets_first %}{{ asyncstate_assets() }}{% endif %}</head>
<body><h1>A post</h1>
<div class="comment">{{ comment|safe }}</div>
{%- if not assets_first %}{{ asyncstate_assets() }}{% endif %}
{{ script|safe }}
</body></html>"""

CUSTOM_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<base href="{{ base }}"><meta name="csrf-token" content="{{ csrf }}"><title>Imports</title>
<link rel="stylesheet" href="{{ origin }}{{ prefix }}/asyncstate.css">
<script src="{{ origin }}{{ prefix }}/jquery.js"></script>
<script src="{{ origin }}{{ prefix }}/asyncstate.js"></script></head>
<body>
{%- from "asyncstate/widget.html" import asyncstate_widget %}
<div id="a">{{ asyncstate_widget(done, prefix=prefix, include_assets=False, has_result=True,
                                  mode="auto", interval=200) }}</div>
<div id="b">{{ asyncstate_widget(running, prefix=prefix, include_assets=False,
                                  interval=200) }}</div>
</body></html>"""

WIDGET_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Widget</title>{{ asyncstate_assets() }}</head>
<body>{% for token in tokens %}<div id="w{{ loop.index }}">
{{ asyncstate_widget(token, interval=200, notify=notify) }}</div>{% endfor %}</body></html>"""

ADMIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Admin</title>
{% if base %}<base href="{{ base }}">{% endif %}
<script type="application/json" id="asyncstate-admin-config">{{ config|tojson }}</script></head>
<body><main id="asyncstate-admin"><p id="asyncstate-admin-notice"></p>
<div id="asyncstate-admin-filters"></div>
<table id="asyncstate-admin-jobs"><tbody></tbody></table><p id="asyncstate-admin-jobs-empty"></p>
<table id="asyncstate-admin-instances"><tbody></tbody></table>
<p id="asyncstate-admin-instances-empty"></p></main>
<script src="{{ origin }}{{ prefix }}/jquery.js"></script>
<script src="{{ origin }}{{ prefix }}/asyncstate-admin.js"></script></body></html>"""

#: Stands in for the browser's Notification: records what the widget shows.
NOTIFICATIONS = """
(() => {
  window.__notes = [];
  function FakeNotification(title, options) {
    window.__notes.push({ title: title, body: options && options.body });
  }
  FakeNotification.permission = 'granted';
  FakeNotification.requestPermission = () => Promise.resolve('granted');
  window.Notification = FakeNotification;
})();
"""


# ------------------------------------------------------------------ the other origin


class OtherOrigin:
    """A second server on another loopback port (so another origin), in a thread: records
    every request (method, path, headers, body) and answers like an attacker's server."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.thread.join(10)
        self.httpd.server_close()

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def seen(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        other = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("latin-1") if length else ""
                with other.lock:
                    other.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": dict(self.headers.items()),
                            "body": body,
                        }
                    )

            def _send(self, status: int, content_type: str, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin") or "*")
                self.send_header("Access-Control-Allow-Credentials", "true")
                self.send_header("Access-Control-Allow-Headers", "X-Requested-With, X-CSRFToken")
                self.send_header("Access-Control-Allow-Methods", "GET, POST")
                self.end_headers()
                self.wfile.write(data)

            def do_OPTIONS(self) -> None:
                self._record()
                self._send(204, "text/plain", "")

            def do_GET(self) -> None:
                self._record()
                path = self.path
                if path.endswith(".js") or "jQuery" in path or "callback=" in path:
                    self._send(200, "application/javascript", EVIL_SCRIPT)  # JSONP, a script
                elif "/result/" in path:
                    self._send(200, "application/json", json.dumps({"html": EVIL_HTML}))
                elif "/events/" in path:
                    body = "data: " + json.dumps(_doc(path)) + "\n\n"
                    self._send(200, "text/event-stream", body)
                elif "/progress/" in path:
                    self._send(200, "application/json", json.dumps(_doc(path)))
                else:
                    self._send(404, "application/json", '{"error": "not found"}')

            def do_POST(self) -> None:
                self._record()
                doc = dict(_doc(self.path), cancel_requested=True)
                self._send(202, "application/json", json.dumps(doc))

        return Handler


def _doc(path: str) -> dict[str, Any]:
    """The other origin's progress document: succeeded for a token starting "done"."""
    token = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    status = "succeeded" if token.startswith("done") else "running"
    return document(status, percent=100.0 if status == "succeeded" else 40.0)


def document(status: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "job-" + status,
        "name": "import_products",
        "status": status,
        "current": 0,
        "total": None,
        "percent": None,
        "message": None,
        "result": None,
        "error": None,
        "reason": None,
        "cancel_requested": False,
        "created_at": 1000.0,
        "updated_at": 1000.0,
        "started_at": 1000.0,
        "rate": None,
        "eta": None,
    }
    doc.update(fields)
    return doc


# ------------------------------------------------------------------ the apps


def build_app() -> tuple[Flask, AsyncState, list[dict[str, Any]]]:
    """The app under test, its blueprint under a custom prefix; ``seen`` lists the
    requests it got under that prefix (path and X-CSRFToken header)."""
    app, ext = make_app(
        ASYNCSTATE_URL_PREFIX=PREFIX,
        ASYNCSTATE_MAX_WORKERS=4,
        admin_guard=lambda: None,
    )
    seen: list[dict[str, Any]] = []

    @app.before_request
    def record() -> None:
        if request.path.startswith(PREFIX + "/"):
            seen.append({"path": request.path, "csrf": request.headers.get("X-CSRFToken")})

    @ext.job(
        name="reported",
        render_result=lambda rows: Markup('<p class="real-result">{} rows</p>').format(rows),
    )
    def reported(job: JobContext) -> int:
        for i in range(1, 4):
            time.sleep(0.1)  # the page sees it run first
            job.progress(i, total=3)
        return 30

    @ext.job(name="endless")
    def endless(job: JobContext) -> None:
        while not job.cancelled.wait(0.02):
            job.progress(1, total=10)
        job.check_cancelled()

    @app.get("/comment")
    def comment() -> str:
        """A post with a user's comment, "sanitized" (as given: the test's markup), and the
        app's assets in <head> (``assets=after``: after the comment, in <body>)."""
        return render_template_string(
            COMMENT_PAGE,
            csrf=CSRF,
            comment=request.args.get("c", ""),
            script=request.args.get("script", ""),
            assets_first=request.args.get("assets") != "after",
        )

    @app.get("/custom")
    def custom() -> str:
        """Two real jobs, their widgets on the app's own (custom) prefix; the page's <base>
        points at another origin (``base``: say, the app's CDN)."""
        done = reported.start()
        running = endless.start()
        return render_template_string(
            CUSTOM_PAGE,
            base=request.args["base"],
            origin=request.host_url.rstrip("/"),
            prefix=PREFIX,
            csrf=CSRF,
            done=done.token,
            running=running.token,
        )

    @app.get("/admin-page")
    def admin_page() -> str:
        """The operator's page's script, its config naming the prefix ``prefix``; ``base``:
        a <base> pointing elsewhere."""
        config = {
            "prefix": request.args["prefix"],
            "csrfToken": CSRF,
            "statuses": {"all": ["running"], "final": []},
            "labels": {},
            "interval": 500,
        }
        return render_template_string(
            ADMIN_PAGE,
            config=config,
            origin=request.host_url.rstrip("/"),
            prefix=PREFIX,
            base=request.args.get("base"),
        )

    @app.get("/widgets")
    def widgets() -> str:
        """Widgets for the ``token``s given (made up: the test answers their requests)."""
        return render_template_string(
            WIDGET_PAGE,
            tokens=request.args.getlist("token"),
            notify=request.args.get("notify") == "1",
        )

    return app, ext, seen


def build_queue_app() -> tuple[Flask, AsyncState]:
    """One worker, held by a first job at checkpoint "hold": a second job stays queued."""
    app, ext = make_app(ASYNCSTATE_MAX_WORKERS=1, ASYNCSTATE_MAX_JOBS_PER_OWNER=10)

    @ext.job(name="holder")
    def holder(job: JobContext) -> str:
        job.checkpoint("hold")
        return "released"

    @ext.job(name="waiter")
    def waiter(job: JobContext) -> str:
        return "ran"

    @app.get("/queued")
    def queued() -> str:
        holder.start()
        second = waiter.start()
        return render_template_string(
            WIDGET_PAGE.replace("{% for", '<p id="second">{{ second }}</p>{% for'),
            tokens=[second.token],
            second=second.id,
            notify=False,
        )

    return app, ext


class AppServer(ThreadedServer):
    def __init__(self) -> None:
        app, ext, self.seen = build_app()
        super().__init__(app, ext)


@pytest.fixture(scope="module")
def other() -> Iterator[OtherOrigin]:
    with OtherOrigin() as running:
        yield running


@pytest.fixture(scope="module")
def server() -> Iterator[AppServer]:
    with AppServer() as running:
        yield running


@pytest.fixture
def new_page(browser, server, other) -> Iterator[Callable[..., Any]]:
    """``new_page(*init_scripts)`` (pages.page_factory: no page error, no request off the
    app); ``page.warnings`` lists its console warnings. The other origin starts empty."""
    other.clear()
    server.seen.clear()
    pages = page_factory(browser, server.url)
    make = next(pages)
    made_pages: list[Any] = []

    def made(*init_scripts: str) -> Any:
        page = make(*init_scripts)
        made_pages.append(page)
        page.warnings = []
        page.on(
            "console",
            lambda msg: page.warnings.append(msg.text) if msg.type == "warning" else None,
        )
        return page

    yield made
    try:
        next(pages, None)
    finally:
        close_all(made_pages)


def close_all(pages: list[Any]) -> None:
    """Close the pages' contexts, also when the checks after a test failed: a page left
    open would go on polling during the next test."""
    for page in pages:
        with contextlib.suppress(Exception):  # closed already
            page.context.close()


def comment_url(server: AppServer, comment: str, **params: str) -> str:
    return server.url + "/comment?" + urlencode(dict(params, c=comment))


def assert_untouched(page: Any, other: OtherOrigin) -> None:
    """Nothing reached the other origin, nothing of its ran, the CSRF token stayed home."""
    seen = other.seen()
    assert seen == [], seen
    assert page.evaluate("window.__evil === undefined && window.__stolen === undefined")
    assert CSRF not in json.dumps(seen)


def assert_refused(page: Any) -> None:
    refusals = [w for w in page.warnings if "flask-asyncstate" in w and "prefix" in w]
    assert refusals, page.warnings


# ------------------------------------------------------------------ hostile markup


def hostile(other: str) -> dict[str, str]:
    host = other.split("://", 1)[1]
    return {
        # the JSONP the finding reproduced: "??" makes jQuery load a script from there
        "jsonp": f'<p data-asyncstate-token="t" data-asyncstate-prefix="{other}/j??">hi</p>',
        "absolute": f'<p data-asyncstate-token="t" data-asyncstate-prefix="{other}/api">hi</p>',
        "protocol-relative": (
            f'<p data-asyncstate-token="t" data-asyncstate-prefix="//{host}/api">hi</p>'
        ),
        "backslash": f'<p data-asyncstate-token="t" data-asyncstate-prefix="/\\{host}/api">hi</p>',
        # a tab the URL parser drops: "/<TAB>/host" is "//host"
        "tab": f'<p data-asyncstate-token="t" data-asyncstate-prefix="/&#9;/{host}/api">hi</p>',
        "event-stream": (
            f'<p data-asyncstate-token="t" data-asyncstate-mode="auto"'
            f' data-asyncstate-prefix="{other}/api">hi</p>'
        ),
    }


@pytest.mark.parametrize(
    "kind", ["jsonp", "absolute", "protocol-relative", "backslash", "tab", "event-stream"]
)
def test_a_prefix_off_the_site_from_markup_is_refused(new_page, server, other, kind) -> None:
    page = new_page()
    page.goto(comment_url(server, hostile(other.url)[kind]))
    page.wait_for_load_state("load")
    page.wait_for_timeout(1500)  # the widget polls at once: it would have asked by now
    assert_untouched(page, other)
    assert_refused(page)
    # and nothing else happened: no markup, no instance
    assert page.evaluate(
        "jQuery('.comment p').asyncstate('instance') === null"
        " && jQuery('.comment p').children().length === 0"
    )


def test_a_result_view_from_another_origin_is_never_shown(new_page, server, other) -> None:
    comment = (
        f'<div class="c" data-asyncstate-token="done-1" data-asyncstate-result="true"'
        f' data-asyncstate-prefix="{other.url}/api"></div>'
    )
    page = new_page()
    page.goto(comment_url(server, comment))
    page.wait_for_load_state("load")
    page.wait_for_timeout(2000)  # progress, then the result view: time for both
    assert_untouched(page, other)
    assert page.locator(".comment img").count() == 0
    assert_refused(page)


def test_a_cancel_click_never_sends_the_csrf_token_elsewhere(new_page, server, other) -> None:
    comment = (
        f'<div class="c" data-asyncstate-token="run-1" data-asyncstate-prefix="{other.url}/api">'
        '<p class="asyncstate-status"></p><button type="button" class="asyncstate-cancel">'
        "Cancel</button></div>"
    )
    page = new_page()
    page.goto(comment_url(server, comment))
    page.wait_for_load_state("load")
    page.wait_for_timeout(1000)
    page.locator(".comment button").click()
    page.wait_for_timeout(1000)
    assert_untouched(page, other)
    assert_refused(page)


def test_a_prefix_off_the_site_from_an_option_is_refused(new_page, server, other) -> None:
    script = (
        '<div id="mine"></div><script>jQuery(function () {'
        f" jQuery('#mine').asyncstate({{token: 'done-2', result: true, mode: 'auto',"
        f" prefix: {json.dumps(other.url + '/api')}}});"
        " window.__mine = jQuery('#mine').asyncstate('instance'); });</script>"
    )
    page = new_page()
    page.goto(comment_url(server, "", script=script))
    page.wait_for_load_state("load")
    page.wait_for_timeout(1500)
    assert_untouched(page, other)
    assert_refused(page)
    assert page.evaluate("window.__mine === null")


def test_a_clobbered_current_script_loads_no_script_from_elsewhere(new_page, server, other) -> None:
    """``<img name="currentScript">`` in a comment before the assets: jquery-auto.js must
    not take its jQuery URL from that image (DOM clobbering of document.currentScript)."""
    comment = f'<img name="currentScript" data-src="{other.url}/evil.js" alt="">'
    widget = '<p data-asyncstate-token="t" data-asyncstate-prefix="/jobs-api">w</p>'
    page = new_page()
    page.goto(comment_url(server, comment + widget, assets="after"))
    page.wait_for_load_state("load")
    page.wait_for_timeout(1000)
    assert_untouched(page, other)
    # the page's own jQuery came from the app, and its widgets still start
    assert page.evaluate("typeof window.jQuery") == "function"
    page.wait_for_selector(".comment p.asyncstate--notfound")


def test_the_admin_page_refuses_a_prefix_off_the_site(new_page, server, other) -> None:
    page = new_page()
    page.goto(server.url + "/admin-page?" + urlencode({"prefix": other.url + "/j??"}))
    page.wait_for_load_state("load")
    page.wait_for_timeout(1500)
    assert_untouched(page, other)
    refusals = [w for w in page.warnings if "asyncstate-admin.js" in w and "prefix" in w]
    assert refusals, page.warnings
    page.evaluate("window.asyncstateAdmin.refresh()")  # asked: still nothing
    page.wait_for_timeout(500)
    assert_untouched(page, other)


def test_the_admin_page_works_on_its_own_prefix(new_page, server, other) -> None:
    """The same page on the site's own prefix polls the app, never elsewhere, even with a
    <base> that points at another origin."""
    page = new_page()
    page.goto(server.url + "/admin-page?" + urlencode({"prefix": PREFIX, "base": other.url + "/"}))
    page.wait_for_function("window.asyncstateAdmin && window.asyncstateAdmin.config.prefix")
    page.wait_for_timeout(800)
    assert any(r["path"] == PREFIX + "/admin/jobs" for r in server.seen), server.seen
    assert other.seen() == []
    assert page.warnings == []


# ------------------------------------------------------------------ the site's own prefix


def test_a_same_origin_custom_prefix_still_works(new_page, server, other) -> None:
    """A path on the site is the prefix; every request (poll, event stream, result view,
    cancel with the CSRF token) goes to the page's own origin, even with a <base> that
    points elsewhere (the app's CDN, say)."""
    page = new_page()
    page.goto(server.url + "/custom?" + urlencode({"base": other.url + "/cdn/"}))
    page.wait_for_selector("#a .asyncstate--succeeded")
    page.wait_for_selector("#a .asyncstate-result:not([hidden]) .real-result")
    assert page.locator("#a .real-result").text_content() == "30 rows"
    page.wait_for_selector("#b .asyncstate--running")
    page.locator("#b .asyncstate-cancel").click()
    page.wait_for_selector("#b .asyncstate--cancelled")
    assert other.seen() == []
    paths = [r["path"] for r in server.seen]
    kinds = {p[len(PREFIX) :].split("/")[1] for p in paths}
    assert {"events", "result", "progress", "cancel"} <= kinds, paths
    cancels = [r for r in server.seen if r["path"].startswith(PREFIX + "/cancel/")]
    assert cancels and all(r["csrf"] == CSRF for r in cancels), cancels
    assert page.warnings == []


# ------------------------------------------------------------------ a job cancelled while queued


@pytest.fixture(scope="module")
def queue_server() -> Iterator[ThreadedServer]:
    with ThreadedServer(*build_queue_app()) as running:
        yield running


@pytest.fixture
def queue_page(browser, queue_server) -> Iterator[Any]:
    pages = page_factory(browser, queue_server.url)
    page = next(pages)()
    yield page
    try:
        next(pages, None)
    finally:
        close_all([page])


def test_a_job_cancelled_while_queued_shows_an_empty_bar(queue_page, queue_server) -> None:
    """A job cancelled before it ever ran did nothing: its bar is empty (it was full and
    grey, which reads as "finished")."""
    page = queue_page
    with job_gate("hold", queue_server.app) as gate:
        page.goto(queue_server.url + "/queued")
        gate.wait()  # the one worker is held: the second job waits for it
        page.wait_for_selector("#w1 .asyncstate--queued")
        page.locator("#w1 .asyncstate-cancel").click()
        page.wait_for_selector("#w1 .asyncstate--cancelled")
        page.wait_for_timeout(600)  # the fill's width transition (0.3 s)
        bar = page.evaluate(
            "() => { const fill = document.querySelector('#w1 .asyncstate-fill');"
            " return { style: fill.style.width,"
            " width: fill.getBoundingClientRect().width }; }"
        )
        assert bar == {"style": "0%", "width": 0}, bar


# ------------------------------------------------------------------ the job's display label


def test_the_admin_page_shows_the_jobs_label(new_page, server) -> None:
    jobs = [
        document("running", id="a" * 32, label="Import of products.csv", percent=40.0),
        document("queued", id="b" * 32, name="export_orders"),  # no label: its name
        document("running", id="c" * 32, name="sync", label=""),  # empty: its name
    ]
    answer = {"now": 1010.0, "counts": {"running": 2, "queued": 1}, "jobs": jobs, "instances": []}
    page = new_page()
    page.route(
        f"**{PREFIX}/admin/jobs*",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(answer)
        ),
    )
    page.goto(server.url + PREFIX + "/admin")
    page.wait_for_selector("tr.asyncstate-admin-job >> nth=2")
    rows = page.evaluate(
        "() => Array.from(document.querySelectorAll('tr.asyncstate-admin-job')).map(tr => ({"
        " name: tr.querySelector('.asyncstate-admin-name').textContent,"
        " bar: tr.querySelector('.asyncstate-bar').getAttribute('aria-label'),"
        " cancel: tr.querySelector('.asyncstate-admin-cancel').getAttribute('aria-label') }))"
    )
    assert [r["name"] for r in rows] == ["Import of products.csv", "export_orders", "sync"]
    assert rows[0]["bar"].endswith(": Import of products.csv")
    assert rows[0]["cancel"].endswith("Import of products.csv")
    assert rows[1]["cancel"].endswith("export_orders")


def test_the_end_notification_shows_the_jobs_label(new_page, server) -> None:
    answers = {
        "t1": [document("running"), document("succeeded", label="Import of products.csv")],
        "t2": [document("running"), document("succeeded")],  # no label: its name
    }

    def answer(route: Any) -> None:
        token = route.request.url.split("/progress/", 1)[1].split("?", 1)[0]
        docs = answers[token]
        doc = docs.pop(0) if len(docs) > 1 else docs[0]
        route.fulfill(status=200, content_type="application/json", body=json.dumps(doc))

    page = new_page(NOTIFICATIONS)
    page.route("**/progress/**", answer)
    page.goto(server.url + "/widgets?token=t1&token=t2&notify=1")
    page.wait_for_selector("#w1 .asyncstate--succeeded")
    page.wait_for_selector("#w2 .asyncstate--succeeded")
    bodies = sorted(n["body"] for n in page.evaluate("window.__notes"))
    assert bodies == ["Import of products.csv", "import_products"]
