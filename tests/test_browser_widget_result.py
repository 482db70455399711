"""The widget's result view, why a job ended, and its assets in <head>, in Chromium.

A small app in this process (thread-pool jobs) served on a free loopback port.
The result view's HTML comes from ``<prefix>/result/<token>``; pages that need
exact answers (a 404, a 503 first, made-up documents with a ``reason``) get them
from Playwright's request interception instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote

import pytest
import xstatic.pkg.jquery
from flask import Flask, render_template_string, request, send_from_directory
from markupsafe import Markup
from support.apps import make_app
from support.pages import ThreadedServer, page_factory

from flask_asyncstate import AsyncState, JobContext
from flask_asyncstate.templating import DEFAULT_LABELS, statuses, translated

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Result test</title>{{ head }}</head>
<body>{{ body }}</body></html>"""

RESULT_HTML = (
    '<p class="report">Imported <b>12</b> rows &amp; <a href="/report/1">the report</a></p>'
    "<script>window.__scriptRan = true;</script>"
)

#: Counts every assignment to window.jQuery: each copy of jQuery that runs assigns it once.
JQUERY_COUNTER = """
(() => {
  let value;
  window.__jqueryAssignments = 0;
  Object.defineProperty(window, 'jQuery', {
    configurable: true,
    get() { return value; },
    set(v) { value = v; window.__jqueryAssignments += 1; },
  });
})();
"""

#: Their plugin, in <head> after their own jQuery: it must still be there later.
THEIR_HEAD = """<script src="/vendor/jquery.js"></script>
<script>jQuery.fn.theirPlugin = function () { return 'theirs'; }; window.__theirs = jQuery;</script>"""

LISTEN = """<script>jQuery(document).on('asyncstate:result', function (event, html) {
  (window.__resultEvents = window.__resultEvents || []).push(
    {html: html, id: event.target.parentNode.id});
});</script>"""


# ------------------------------------------------------------------ the app


def build_app() -> tuple[Flask, AsyncState]:
    app, ext = make_app(ASYNCSTATE_MAX_JOBS_PER_OWNER=40, ASYNCSTATE_MAX_WORKERS=8)

    @ext.job(name="steady")
    def steady(job: JobContext, steps: int = 10, pause: float = 0.1) -> int:
        for i in range(1, steps + 1):
            job.check_cancelled()
            time.sleep(pause)  # a job that takes its time, so the page sees it run
            job.progress(i, total=steps, message=f"step {i} of {steps}")
        return steps

    @ext.job(name="broken")
    def broken(job: JobContext) -> None:
        time.sleep(0.3)  # running first, so the page sees the end happen
        raise ValueError("bad row 7")

    @ext.job(
        name="reported",
        render_result=lambda rows: Markup('<p class="real">{} rows</p>').format(rows),
    )
    def reported(job: JobContext, steps: int = 6) -> int:
        for i in range(1, steps + 1):
            time.sleep(0.4)  # long enough for a page on a loaded machine to see it run
            job.progress(i, total=steps)
        return steps * 10

    @ext.job(name="plain_text", render_result=lambda rows: f"<b>{rows}</b> & more")
    def plain_text(job: JobContext) -> int:
        time.sleep(0.3)  # running first
        return 7

    def page(body: str, head: str = "", **context: Any) -> str:
        top = render_template_string(head, **context)  # first, as a layout's <head> is
        inner = render_template_string(body, **context)
        return render_template_string(PAGE, head=Markup(top), body=Markup(inner))

    widget_macro = '{% from "asyncstate/widget.html" import asyncstate_widget %}'
    assets_macro = '{% from "asyncstate/assets.html" import asyncstate_assets %}'

    @app.get("/vendor/jquery.js")
    def vendor_jquery() -> Any:
        """The page's own copy of jQuery (not ours: another URL)."""
        return send_from_directory(xstatic.pkg.jquery.BASE_DIR, "jquery.min.js")

    @app.get("/result")
    def result() -> str:
        """A new job with a result view; its widget from the macro (no HTML yet)."""
        job = broken if request.args.get("job") == "broken" else steady
        args = () if job is broken else (int(request.args.get("steps", 8)),)
        handle = job.start(*args)
        return page(
            widget_macro + '<div id="w">{{ asyncstate_widget(token, interval=200,'
            " has_result=has_result, statuses=statuses) }}</div>" + LISTEN,
            token=handle.token,
            has_result=request.args.get("has", "1") == "1",
            statuses=statuses(),
        )

    @app.get("/ended")
    def ended() -> str:
        """A job that has ended, its result view rendered by the server with the widget."""
        handle = steady.start(1, 0.0)
        doc = handle.wait(10)
        assert doc is not None and doc["status"] == "succeeded"
        view = Markup('<p class="done-view">{} rows ready</p>').format(doc["result"])
        return page(
            widget_macro + '<div id="w">{{ asyncstate_widget(token, interval=200,'
            " has_result=True, result_html=view) }}</div>" + LISTEN,
            token=handle.token,
            view=view,
        )

    @app.get("/manual")
    def manual() -> str:
        """A widget the page starts itself, on markup the plugin makes, with onResult."""
        handle = steady.start(5)
        body = """<div id="m"></div>
<script src="/asyncstate/jquery.js"></script><script src="/asyncstate/asyncstate.js"></script>
<script>
  jQuery('#m').asyncstate({ token: {{ token|tojson }}, interval: 200, result: true,
    onResult: function (html, instance) {
      window.__onResult = { html: html, self: this.id,
                            same: instance === jQuery('#m').asyncstate('instance') };
    } });
</script>"""
        return page(body, token=handle.token)

    @app.get("/fake")
    def fake() -> str:
        """Widgets for made-up tokens: the test answers their requests itself."""
        tokens = request.args.getlist("token")
        labels = (
            translated(json.loads(request.args["labels"])) if "labels" in request.args else None
        )
        return page(
            widget_macro + "{% for token in tokens %}<div id='w-{{ token }}'>"
            "{{ asyncstate_widget(token, interval=200, include_assets=loop.first,"
            " labels=labels, has_result=True) }}</div>{% endfor %}",
            tokens=tokens,
            labels=labels,
        )

    @app.get("/assets")
    def assets() -> str:
        """Assets in <head> (the macro); ``theirs``: the page's jQuery and plugin before them;
        ``late=body``: the page's jQuery at the end of <body>; ``widget_assets``: the widget
        includes its own (jquery auto) instead of the head."""
        theirs = request.args.get("theirs") == "1"
        late = request.args.get("late")
        in_head = request.args.get("widget_assets") != "1"
        jquery: Any = request.args.get("jquery", "auto")
        jquery = {"true": True, "false": False}.get(jquery, jquery)
        head = (THEIR_HEAD if theirs else "") + (
            assets_macro + "{{ asyncstate_assets(jquery=jquery)}}" if in_head else ""
        )
        tail = '<script src="/vendor/jquery.js"></script>' if late == "body" else ""
        handle = steady.start(6)
        return page(
            widget_macro + '<div id="w">{{ asyncstate_widget(token, interval=200,'
            " include_assets=not in_head) }}</div>" + tail,
            head=head,
            token=handle.token,
            in_head=in_head,
            jquery=jquery,
        )

    @app.post("/start/<name>")
    def start(name: str) -> dict[str, Any]:
        job = {"reported": reported, "plain_text": plain_text, "steady": steady}[name]
        return {"tokens": [job.start().token for _ in range(int(request.args.get("n", 1)))]}

    @app.get("/global")
    def global_widgets() -> str:
        """Widgets from the Jinja global, for the ``token``s given; ``head=1``:
        asyncstate_assets() in <head> first."""
        return page(
            "{% for token in tokens %}<div id='g{{ loop.index }}'>"
            "{{ asyncstate_widget(token, interval=200) }}</div>{% endfor %}",
            head="{{ asyncstate_assets() }}" if request.args.get("head") else "",
            tokens=request.args.getlist("token"),
        )

    @app.get("/global-panel")
    def global_panel() -> str:
        return page(
            "{{ asyncstate_jobs(interval=200) }}",
            head="{{ asyncstate_assets(jquery=True) }}",
        )

    return app, ext


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(*build_app()) as running:
        yield running


@pytest.fixture
def new_page(browser, server) -> Iterator[Callable[..., Any]]:
    """``new_page(*init_scripts)``: see :func:`pages.page_factory`."""
    yield from page_factory(browser, server.url)


class ResultAnswers:
    """Answers ``<prefix>/result/<token>`` with ``answers`` in turn (the last one repeats):
    (status, body) pairs; records each request's URL and headers."""

    def __init__(self, page: Any, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers)
        self.seen: list[dict[str, Any]] = []
        page.route("**/asyncstate/result/**", self._answer)

    def _answer(self, route: Any) -> None:
        self.seen.append({"url": route.request.url, "headers": route.request.headers})
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        route.fulfill(
            status=status,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
            body=json.dumps(body),
        )


class FakeJobs:
    """Answers the widgets' progress requests with ``docs[token]`` (edited by the test)."""

    def __init__(self, page: Any) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        page.route("**/asyncstate/progress/**", self._answer)

    def _answer(self, route: Any) -> None:
        token = unquote(route.request.url.split("/progress/", 1)[1].split("?", 1)[0])
        doc = self.docs.get(token)
        if doc is None:
            route.fulfill(status=404, content_type="application/json", body='{"error": "no"}')
            return
        route.fulfill(status=200, content_type="application/json", body=json.dumps(doc))


def document(status: str, **fields: Any) -> dict[str, Any]:
    """A progress document (made up) with the contract's fields."""
    doc: dict[str, Any] = {
        "id": "job-" + status,
        "name": "steady",
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


def slot(page: Any, scope: str = "#w") -> dict[str, Any]:
    return dict(
        page.evaluate(
            "(scope) => { const el = document.querySelector(scope + ' .asyncstate-result');"
            " return el ? {html: el.innerHTML, hidden: el.hidden, shown: el.offsetHeight > 0}"
            " : null; }",
            scope,
        )
    )


def text_of(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.text_content())


# ------------------------------------------------------------------ the result view


def test_the_result_view_appears_when_the_job_succeeds(new_page, server) -> None:
    page = new_page()
    answers = ResultAnswers(page, (200, {"html": RESULT_HTML}))
    page.goto(server.url + "/result?steps=8")
    widget = page.locator("#w .asyncstate")
    assert widget.get_attribute("data-asyncstate-result") == "true"
    page.wait_for_selector("#w .asyncstate--running")
    assert slot(page) == {"html": "", "hidden": True, "shown": False}
    assert answers.seen == []  # nothing asked while it runs
    page.wait_for_selector("#w .asyncstate--succeeded")
    page.wait_for_selector("#w .asyncstate-result:not([hidden]) .report")
    shown = slot(page)
    assert shown["hidden"] is False and shown["shown"] is True
    assert shown["html"].startswith('<p class="report">Imported <b>12</b> rows &amp; <a href=')
    assert page.locator("#w .asyncstate-result a").get_attribute("href") == "/report/1"
    assert page.evaluate("() => window.__scriptRan") is None  # inserted, never run
    assert page.evaluate("() => window.__resultEvents") == [{"html": RESULT_HTML, "id": "w"}]
    # one request, to the job's own URL, with the widget's usual header
    assert len(answers.seen) == 1
    token = widget.get_attribute("data-asyncstate-token")
    url = answers.seen[0]["url"]
    assert url.split("?", 1)[0] == f"{server.url}/asyncstate/result/{token}"
    assert answers.seen[0]["headers"].get("x-requested-with") == "XMLHttpRequest"
    page.wait_for_timeout(600)
    assert len(answers.seen) == 1
    assert text_of(page, "#w .asyncstate-status") == DEFAULT_LABELS["succeeded"]
    # the order of the parts: the view under the message, above the status line
    order = page.evaluate(
        "() => [...document.querySelector('#w .asyncstate').children].map(e => e.className)"
    )
    assert order.index("asyncstate-message") < order.index("asyncstate-result")
    assert order.index("asyncstate-result") < order.index("asyncstate-status")


def test_a_result_rendered_by_the_server_is_shown_at_once_and_not_fetched(new_page, server) -> None:
    page = new_page()
    answers = ResultAnswers(page, (200, {"html": "<p class='other'>not this</p>"}))
    page.goto(server.url + "/ended")
    assert slot(page)["html"] == '<p class="done-view">1 rows ready</p>'
    assert slot(page)["hidden"] is False  # rendered, before any poll
    page.wait_for_selector("#w .asyncstate--succeeded")
    page.wait_for_timeout(600)
    assert answers.seen == []
    assert page.locator("#w .other").count() == 0
    assert page.evaluate("() => window.__resultEvents") is None


def test_a_404_leaves_the_slot_hidden_and_other_ends_ask_nothing(new_page, server) -> None:
    page = new_page()
    answers = ResultAnswers(page, (404, {"error": "no result view for this job"}))
    page.goto(server.url + "/result?steps=4")
    page.wait_for_selector("#w .asyncstate--succeeded")
    page.wait_for_timeout(700)
    assert len(answers.seen) == 1  # a 404 is an answer: not tried again
    assert slot(page) == {"html": "", "hidden": True, "shown": False}
    assert text_of(page, "#w .asyncstate-status") == DEFAULT_LABELS["succeeded"]
    assert "asyncstate--error" not in (page.locator("#w .asyncstate").get_attribute("class") or "")
    assert page.evaluate("() => window.__resultEvents") is None

    # a job that failed has nothing to show: no request
    failed = new_page()
    failed_answers = ResultAnswers(failed, (200, {"html": RESULT_HTML}))
    failed.goto(server.url + "/result?job=broken")
    failed.wait_for_selector("#w .asyncstate--failed")
    failed.wait_for_timeout(500)
    assert failed_answers.seen == []
    assert slot(failed)["hidden"] is True

    # a widget without a result view never asks either
    plain = new_page()
    plain_answers = ResultAnswers(plain, (200, {"html": RESULT_HTML}))
    plain.goto(server.url + "/result?steps=3&has=0")
    assert plain.locator("#w .asyncstate").get_attribute("data-asyncstate-result") is None
    plain.wait_for_selector("#w .asyncstate--succeeded")
    plain.wait_for_timeout(500)
    assert plain_answers.seen == []
    assert slot(plain)["hidden"] is True


def test_a_transient_failure_is_tried_again(new_page, server) -> None:
    page = new_page()
    answers = ResultAnswers(
        page, (503, {"error": "the job store is unavailable"}), (200, {"html": "<em>late</em>"})
    )
    page.goto(server.url + "/result?steps=3")
    page.wait_for_selector("#w .asyncstate-result:not([hidden]) em")
    assert len(answers.seen) == 2
    assert slot(page)["html"] == "<em>late</em>"


def test_on_result_and_a_slot_made_by_the_plugin(new_page, server) -> None:
    page = new_page()
    ResultAnswers(page, (200, {"html": "<span class='made'>42</span>"}))
    page.goto(server.url + "/manual")
    page.wait_for_selector("#m.asyncstate--running")
    assert slot(page, "#m") == {"html": "", "hidden": True, "shown": False}
    page.wait_for_selector("#m .asyncstate-result:not([hidden]) .made")
    assert page.evaluate("() => window.__onResult") == {
        "html": "<span class='made'>42</span>",
        "self": "m",
        "same": True,
    }


# ------------------------------------------------------------------ why it ended

REASONS = {
    # token: (document, status text, classes it has)
    "sd-cancelled": (
        document("cancelled", reason="shutdown"),
        "Stopped by a server restart",
        ["asyncstate--cancelled", "asyncstate--reason-shutdown"],
    ),
    "sd-lost": (
        document("lost", reason="shutdown"),
        "Stopped by a server restart",
        ["asyncstate--lost", "asyncstate--reason-shutdown"],
    ),
    "timeout": (
        document("failed", reason="timeout", error={"type": "JobTimeout", "message": "ran 30 s"}),
        "Stopped: it took too long",
        ["asyncstate--failed", "asyncstate--reason-timeout"],
    ),
    "user": (
        document("cancelled", reason="user", cancel_requested=True),
        DEFAULT_LABELS["cancelled"],
        ["asyncstate--cancelled", "asyncstate--reason-user"],
    ),
    "error": (
        document("failed", reason="error", error={"type": "ValueError", "message": "bad row"}),
        DEFAULT_LABELS["failed"] + ": ValueError: bad row",
        ["asyncstate--failed", "asyncstate--reason-error"],
    ),
    "lost": (
        document("lost", reason="lost"),
        DEFAULT_LABELS["lost"],
        ["asyncstate--lost", "asyncstate--reason-lost"],
    ),
}


def test_the_reason_a_job_ended(new_page, server) -> None:
    page = new_page()
    fake = FakeJobs(page)
    ResultAnswers(page, (404, {"error": "no"}))
    for token, (doc, _text, _classes) in REASONS.items():
        fake.docs[token] = doc
    fake.docs["live"] = document("running", percent=40.0, current=4, total=10)
    page.goto(server.url + "/fake?" + "&".join(f"token={t}" for t in [*REASONS, "live"]))
    for token, (_doc, text, classes) in REASONS.items():
        widget = page.locator(f"#w-{token} .asyncstate")
        page.wait_for_selector(f"#w-{token} .{classes[0]}")
        assert text_of(page, f"#w-{token} .asyncstate-status") == text, token
        found = (widget.get_attribute("class") or "").split()
        assert all(c in found for c in classes), (token, found)
        assert len([c for c in found if c.startswith("asyncstate--reason-")]) == 1, found
        assert page.locator(f"#w-{token} .asyncstate-bar").get_attribute("aria-valuetext") == text

    # a running job has no reason yet; stopped by a restart while the page watched
    live = page.locator("#w-live .asyncstate")
    page.wait_for_selector("#w-live .asyncstate--running")
    assert "reason" not in (live.get_attribute("class") or "")
    fake.docs["live"] = document("cancelled", reason="shutdown", percent=40.0, updated_at=1001.0)
    page.wait_for_selector("#w-live .asyncstate--reason-shutdown")
    assert text_of(page, "#w-live .asyncstate-status") == DEFAULT_LABELS["reasonShutdown"]
    assert page.locator("#w-live .asyncstate-cancel").is_hidden()

    # a reason that is no word is no class
    odd = new_page()
    fake_odd = FakeJobs(odd)
    fake_odd.docs["odd"] = document("cancelled", reason='x y"><b>')
    odd.goto(server.url + "/fake?token=odd")
    odd.wait_for_selector("#w-odd .asyncstate--cancelled")
    assert "reason" not in (odd.locator("#w-odd .asyncstate").get_attribute("class") or "")
    assert text_of(odd, "#w-odd .asyncstate-status") == DEFAULT_LABELS["cancelled"]


def test_reason_labels_can_be_replaced(new_page, server) -> None:
    page = new_page()
    fake = FakeJobs(page)
    fake.docs["a"] = document("cancelled", reason="shutdown")
    fake.docs["b"] = document("failed", reason="timeout", error={"type": "JobTimeout"})
    labels = {"reasonShutdown": "Redeployed, start it again", "reasonTimeout": "Too slow"}
    page.goto(server.url + "/fake?token=a&token=b&labels=" + quote(json.dumps(labels)))
    page.wait_for_selector("#w-a .asyncstate--reason-shutdown")
    page.wait_for_selector("#w-b .asyncstate--reason-timeout")
    assert text_of(page, "#w-a .asyncstate-status") == "Redeployed, start it again"
    assert text_of(page, "#w-b .asyncstate-status") == "Too slow"


# ------------------------------------------------------------------ assets in <head>


def jquery_files(page: Any) -> list[str]:
    return [u.split("?", 1)[0] for u in page.requests if u.split("?", 1)[0].endswith("jquery.js")]


def test_assets_in_head_keep_the_pages_own_jquery_and_plugin(new_page, server) -> None:
    for widget_assets in ("0", "1"):  # asyncstate_assets in <head>, or the widget's own
        page = new_page(JQUERY_COUNTER)
        page.goto(f"{server.url}/assets?theirs=1&widget_assets={widget_assets}")
        page.wait_for_selector("#w .asyncstate--succeeded")
        state = page.evaluate(
            """() => ({
                same: window.jQuery === window.__theirs,
                theirs: typeof jQuery.fn.theirPlugin === 'function' && jQuery('body').theirPlugin(),
                ours: typeof jQuery.fn.asyncstate,
                version: jQuery.fn.jquery,
                assignments: window.__jqueryAssignments,
                dollar: window.$ === window.jQuery,
            })"""
        )
        assert state == {
            "same": True,
            "theirs": "theirs",
            "ours": "function",
            "version": page.evaluate("() => window.__theirs.fn.jquery"),
            "assignments": 1,  # one copy of jQuery ran
            "dollar": True,
        }, widget_assets
        assert jquery_files(page) == [server.url + "/vendor/jquery.js"], page.requests
        assert page.locator("link[href$='/asyncstate.css']").count() == 1
        assert page.locator("script[src$='/asyncstate.js']").count() == 1
        if widget_assets == "0":
            assert page.locator("head script[src$='/asyncstate.js']").count() == 1


def test_assets_in_head_load_our_jquery_when_the_page_has_none(new_page, server) -> None:
    for jquery in ("auto", "true"):
        page = new_page(JQUERY_COUNTER)
        page.goto(f"{server.url}/assets?jquery={jquery}")
        page.wait_for_selector("#w .asyncstate--succeeded")
        assert page.evaluate("() => window.__jqueryAssignments") == 1
        assert jquery_files(page) == [server.url + "/asyncstate/jquery.js"], page.requests
        # in <head>, before the plugin: the plugin found it at once
        order = page.evaluate(
            "() => [...document.head.querySelectorAll('script[src]')].map(s => s.src)"
        )
        loaded = [u.rsplit("/", 1)[1] for u in order if not u.endswith("/jquery-auto.js")]
        assert loaded == ["jquery.js", "asyncstate.js"], order  # (after the "auto" loader)


def test_jquery_loaded_after_the_plugin_is_an_error_that_says_so(new_page, server) -> None:
    """jquery=False in <head> and the page's own jQuery at the end of <body>: the plugin needs
    jQuery before it, says so at once (it does not wait for a late one), and starts nothing."""
    page = new_page(JQUERY_COUNTER)
    page.goto(server.url + "/assets?jquery=false&late=body")
    page.wait_for_load_state("load")
    page.wait_for_timeout(500)  # a widget would have polled by now
    assert len(page.errors) == 1 and "load jQuery before it" in page.errors[0], page.errors
    page.errors.clear()  # the one page error expected here
    assert page.evaluate("() => window.__jqueryAssignments") == 1
    assert page.evaluate("() => typeof jQuery.fn.asyncstate") == "undefined"
    assert not [u for u in page.requests if "/asyncstate/progress/" in u], page.requests
    assert page.locator("#w .asyncstate--running, #w .asyncstate--queued").count() == 0


# ------------------------------------------------------------------ with the Python side


def result_requests(page: Any) -> list[str]:
    return [u for u in page.requests if "/asyncstate/result/" in u]


def test_the_jinja_global_and_the_result_route(new_page, server) -> None:
    page = new_page()
    token = page.request.post(server.url + "/start/reported").json()["tokens"][0]
    page.goto(server.url + "/global?token=" + token)
    widget = page.locator("#g1 .asyncstate")
    assert widget.get_attribute("data-asyncstate-result") == "true"  # the job has a view
    # while it runs the slot is hidden: both read at one moment (the job may end at any time)
    running = page.wait_for_function(
        "() => { const w = document.querySelector('#g1 .asyncstate--running');"
        " return w ? {hidden: w.querySelector('.asyncstate-result').hidden} : null; }"
    )
    assert running.json_value() == {"hidden": True}
    page.wait_for_selector("#g1 .asyncstate-result:not([hidden]) .real")
    assert slot(page, "#g1")["html"] == '<p class="real">60 rows</p>'
    assert len(result_requests(page)) == 1

    # reloaded after the end: the server renders the view with the widget; nothing fetched
    page.requests.clear()
    page.reload()
    assert slot(page, "#g1") == {
        "html": '<p class="real">60 rows</p>',
        "hidden": False,
        "shown": True,
    }
    page.wait_for_selector("#g1 .asyncstate--succeeded")
    page.wait_for_timeout(500)
    assert result_requests(page) == []

    # a plain str from render_result is escaped by the server: text, never markup
    other = page.request.post(server.url + "/start/plain_text").json()["tokens"][0]
    page.goto(server.url + "/global?token=" + other)
    page.wait_for_selector("#g1 .asyncstate-result:not([hidden])")
    assert slot(page, "#g1")["html"] == "&lt;b&gt;7&lt;/b&gt; &amp; more"
    assert page.locator("#g1 .asyncstate-result b").count() == 0

    # a job without a result view: no slot attribute, no request
    page.requests.clear()
    plain = page.request.post(server.url + "/start/steady").json()["tokens"][0]
    page.goto(server.url + "/global?token=" + plain)
    assert page.locator("#g1 .asyncstate").get_attribute("data-asyncstate-result") is None
    page.wait_for_selector("#g1 .asyncstate--succeeded", timeout=30000)
    page.wait_for_timeout(400)
    assert result_requests(page) == []


def test_asyncstate_assets_once_per_page(new_page, server) -> None:
    for head in ("1", ""):
        page = new_page(JQUERY_COUNTER)
        tokens = page.request.post(server.url + "/start/reported?n=2").json()["tokens"]
        page.goto(f"{server.url}/global?head={head}&token={tokens[0]}&token={tokens[1]}")
        for name in ("g1", "g2"):
            page.wait_for_selector(f"#{name} .asyncstate-result:not([hidden]) .real")
        assert page.locator("script[src$='/asyncstate.js']").count() == 1
        assert page.locator("link[href$='/asyncstate.css']").count() == 1
        assert page.evaluate("() => window.__jqueryAssignments") == 1
        assert jquery_files(page) == [server.url + "/asyncstate/jquery.js"]
        in_head = page.locator("head script[src$='/asyncstate.js']").count()
        assert in_head == (1 if head else 0), head
        assert page.locator("#g2 script, #g2 link").count() == 0  # the second one: none

    # the panel: every job that shows a result has its slot, filled for those done
    panel = new_page()
    done = panel.request.post(server.url + "/start/reported").json()["tokens"][0]
    panel.goto(server.url + "/global?token=" + done)
    panel.wait_for_selector("#g1 .asyncstate-result:not([hidden])")
    panel.request.post(server.url + "/start/reported")
    panel.request.post(server.url + "/start/steady")
    panel.goto(server.url + "/global-panel")
    jobs = panel.locator(".asyncstate-jobs > .asyncstate-job")
    assert jobs.count() == 3
    flags = [
        jobs.nth(i).locator(".asyncstate").get_attribute("data-asyncstate-result") for i in range(3)
    ]
    assert flags == [None, "true", "true"]  # newest first: steady, reported, reported
    assert panel.locator("script[src$='/asyncstate.js']").count() == 1
    assert panel.locator("head script[src$='/jquery.js']").count() == 1  # jquery=True
    for i in (1, 2):
        jobs.nth(i).locator(".asyncstate-result:not([hidden]) .real").wait_for()
