"""The widget's labels, elapsed/ETA line, page title, notification and jobs panel in Chromium.

A small app in this process (a thread-pool job that takes 40 steps of 0.1 s) served
on a free loopback port; pages that need exact documents (clock formats, several
widgets) get them from Playwright's request interception instead of a real job.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote

import pytest
from flask import Flask, render_template_string, request
from markupsafe import Markup
from support.apps import make_app
from support.pages import VISIBILITY, ThreadedServer, page_factory

from flask_asyncstate import AsyncState, JobContext
from flask_asyncstate.templating import DEFAULT_LABELS, translated

pytestmark = pytest.mark.browser

TITLE = "Labels test"
SEP = " \u00b7 "
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>{{ title }}</title></head>
<body>{{ body }}</body></html>"""

#: A stand-in for window.Notification that records what the widget shows.
NOTIFICATIONS = """
(() => {
  const shown = window.__notifications = [];
  window.__permissionRequests = 0;
  function FakeNotification(title, options) {
    shown.push({ title: title, options: options || null });
  }
  FakeNotification.permission = %s;
  FakeNotification.requestPermission = () => {
    window.__permissionRequests += 1;
    return Promise.resolve(FakeNotification.permission);
  };
  window.Notification = FakeNotification;
})();
"""

#: Logs every text the first .asyncstate-eta shows, with the time it appeared.
ETA_RECORDER = """
(() => {
  const log = window.__etaLog = [];
  const snap = () => {
    const el = document.querySelector('.asyncstate-eta');
    const widget = document.querySelector('.asyncstate');
    if (!el) { return; }
    const text = el.textContent;
    if (!log.length || log[log.length - 1].text !== text) {
      log.push({ text: text, t: performance.now(), cls: widget ? widget.className : '' });
    }
  };
  new MutationObserver(snap).observe(document, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
})();
"""


# ------------------------------------------------------------------ the app


def build_app() -> tuple[Flask, AsyncState]:
    app, ext = make_app(ASYNCSTATE_MAX_JOBS_PER_OWNER=20, ASYNCSTATE_MAX_WORKERS=8)

    @ext.job(name="steady")
    def steady(job: JobContext, steps: int = 40, pause: float = 0.1) -> int:
        for i in range(1, steps + 1):
            job.check_cancelled()
            time.sleep(pause)  # a job that takes its time, evenly
            job.progress(i, total=steps, message=f"step {i} of {steps}")
        return steps

    def page(body: str, **context: Any) -> str:
        inner = render_template_string(body, **context)
        return render_template_string(PAGE, title=TITLE, body=Markup(inner))

    def options() -> dict[str, Any]:
        """Jinja-global options from the query string: labels (JSON), notify, interval."""
        out: dict[str, Any] = {}
        if "labels" in request.args:
            out["labels"] = json.loads(request.args["labels"])
        if request.args.get("notify"):
            out["notify"] = True
        if "interval" in request.args:
            out["interval"] = int(request.args["interval"])
        return out

    @app.get("/widget")
    def widget() -> str:
        """A new job, and its widget from the Jinja global."""
        handle = steady.start(int(request.args.get("steps", 40)))
        return page("{{ asyncstate_widget(token, **opts) }}", token=handle.token, opts=options())

    @app.get("/macro")
    def macro() -> str:
        """A new job, and its widget from the macro imported directly (no labels)."""
        handle = steady.start(int(request.args.get("steps", 40)))
        return page(
            '{% from "asyncstate/widget.html" import asyncstate_widget %}'
            "{{ asyncstate_widget(token) }}",
            token=handle.token,
        )

    @app.get("/manual")
    def manual() -> str:
        """Three jobs, their widgets started by a script with plugin options."""
        tokens = [steady.start(20).token for _ in range(3)]
        body = """
<div id="a" data-asyncstate-manual data-asyncstate-token="{{ tokens[0] }}"
     data-asyncstate-labels="{{ {'cancel': 'From attribute', 'running': 'Attr running'}|tojson|forceescape }}">
  <div class="asyncstate-bar" role="progressbar" aria-label="Progress"><div class="asyncstate-fill"></div></div>
  <p class="asyncstate-status" role="status"></p>
  <button type="button" class="asyncstate-cancel">Cancel</button>
</div>
<div id="b"></div>
<div id="c" data-asyncstate-manual data-asyncstate-token="{{ tokens[2] }}"
     data-asyncstate-labels="{{ {'running': 'Attr beats defaults'}|tojson|forceescape }}"></div>
<script src="/asyncstate/jquery.js"></script>
<script src="/asyncstate/asyncstate.js"></script>
<script>
  $.fn.asyncstate.defaults.labels = { succeeded: 'Global done', running: 'Global running' };
  $('#a').asyncstate({ labels: { cancel: 'From option' } });
  $('#b').asyncstate({ token: {{ tokens[1]|tojson }},
                       texts: { running: 'Texts running', cancel: 'Texts cancel',
                                progress: 'Texts bar' } });
  $('#c').asyncstate();
</script>"""
        return page(body, tokens=tokens)

    @app.get("/fake")
    def fake() -> str:
        """Widgets for made-up tokens: the test answers their progress requests itself."""
        tokens = request.args.getlist("token")
        notify = request.args.getlist("notify")
        labels = json.loads(request.args["labels"]) if "labels" in request.args else None
        return page(
            '{% from "asyncstate/widget.html" import asyncstate_widget %}'
            '{% for token in tokens %}<div id="w-{{ token }}">'
            "{{ asyncstate_widget(token, interval=200, include_assets=loop.first,"
            " labels=labels, notify=token in notify) }}</div>{% endfor %}",
            tokens=tokens,
            notify=notify,
            labels=labels,
        )

    @app.post("/start")
    def start() -> dict[str, Any]:
        return {"tokens": [steady.start(10).token for _ in range(int(request.args["n"]))]}

    @app.get("/panel")
    def panel() -> str:
        overrides = json.loads(request.args["labels"]) if "labels" in request.args else None
        return page(
            '{% from "asyncstate/jobs.html" import asyncstate_jobs %}'
            "{{ asyncstate_jobs(jobs, labels=labels) }}",
            jobs=ext.jobs(),
            labels=translated(overrides),
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
        route.fulfill(
            status=200,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
            body=json.dumps(doc),
        )


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
        "cancel_requested": False,
        "created_at": 1000.0,
        "updated_at": 1000.0,
        "started_at": None,
        "rate": None,
        "eta": None,
    }
    doc.update(fields)
    return doc


def q(value: Any) -> str:
    """``value`` as JSON, quoted for a query string."""
    return quote(json.dumps(value))


def text_of(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.text_content())


def wait_text(page: Any, selector: str, text: str, timeout: float = 20000) -> None:
    page.wait_for_function(
        "([sel, text]) => { const el = document.querySelector(sel);"
        " return !!el && el.textContent === text; }",
        arg=[selector, text],
        timeout=timeout,
    )


def wait_title(page: Any, pattern: str, timeout: float = 20000) -> str:
    page.wait_for_function(
        "(pattern) => new RegExp(pattern).test(document.title)", arg=pattern, timeout=timeout
    )
    return str(page.title())


# ------------------------------------------------------------------ labels


def test_the_script_route_gives_the_default_labels(new_page, server) -> None:
    page = new_page()
    page.goto(server.url + "/macro?steps=5")
    page.wait_for_selector(".asyncstate--succeeded")
    assert page.evaluate("() => window.asyncstateLabels") == DEFAULT_LABELS
    assert page.evaluate("() => jQuery.fn.asyncstate.labels") == DEFAULT_LABELS
    assert not [e for e in page.console_errors if "flask-asyncstate" in e], page.console_errors


def test_labels_given_to_a_widget_replace_its_texts(new_page, server) -> None:
    labels = {
        "cancel": "Stop the import",
        "running": "Working on it",
        "progress": "Import progress",
        "succeeded": "All \"done\" <b>&</b> 'fine'",
    }
    page = new_page()
    page.goto(server.url + "/widget?steps=20&labels=" + q(labels))
    widget = page.locator(".asyncstate")
    given = json.loads(widget.get_attribute("data-asyncstate-labels") or "{}")
    assert {key: given[key] for key in labels} == labels  # the attribute survives its escaping
    assert text_of(page, ".asyncstate-cancel") == "Stop the import"  # rendered, before any JS
    wait_text(page, ".asyncstate-status", "Working on it")
    assert text_of(page, ".asyncstate-cancel") == "Stop the import"
    assert page.locator(".asyncstate-bar").get_attribute("aria-label") == "Import progress"
    page.wait_for_selector(".asyncstate--succeeded")
    assert text_of(page, ".asyncstate-status") == labels["succeeded"]  # text, never markup
    assert page.locator(".asyncstate-status b").count() == 0
    assert page.locator(".asyncstate-bar").get_attribute("aria-valuetext") == labels["succeeded"]


def test_the_macro_without_labels_is_english(new_page, server) -> None:
    page = new_page()
    page.goto(server.url + "/macro?steps=15")
    widget = page.locator(".asyncstate")
    assert widget.get_attribute("data-asyncstate-labels") is None
    assert page.locator(".asyncstate-bar").get_attribute("aria-label") == "Progress"
    assert text_of(page, ".asyncstate-cancel") == "Cancel"
    assert page.locator(".asyncstate-eta").count() == 1
    wait_text(page, ".asyncstate-status", "Running")
    page.wait_for_selector(".asyncstate--succeeded")
    assert text_of(page, ".asyncstate-status") == "Done"


def test_plugin_options_attribute_and_defaults_in_order(new_page, server) -> None:
    page = new_page()
    page.goto(server.url + "/manual")
    # #a: the option beats the attribute for the button; the attribute's "running" stays
    wait_text(page, "#a .asyncstate-status", "Attr running")
    assert text_of(page, "#a .asyncstate-cancel") == "From option"
    assert page.locator("#a .asyncstate-eta").count() == 1  # added to markup that lacked it
    # #b: the older ``texts`` option, on markup the plugin made itself
    wait_text(page, "#b .asyncstate-status", "Texts running")
    assert text_of(page, "#b .asyncstate-cancel") == "Texts cancel"
    assert page.locator("#b .asyncstate-bar").get_attribute("aria-label") == "Texts bar"
    # #c: the element's attribute beats $.fn.asyncstate.defaults.labels
    wait_text(page, "#c .asyncstate-status", "Attr beats defaults")
    assert text_of(page, "#c .asyncstate-cancel") == DEFAULT_LABELS["cancel"]
    # $.fn.asyncstate.defaults.labels reach every widget that does not say otherwise
    for name in "abc":
        page.wait_for_selector(f"#{name}.asyncstate--succeeded")
        assert text_of(page, f"#{name} .asyncstate-status") == "Global done"


def test_placeholders_are_filled_in(new_page, server) -> None:
    labels = dict(DEFAULT_LABELS, retrying="Trouble; again in {seconds}s ({unknown})")
    page = new_page()
    failures = {"left": 1}

    def answer(route: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            route.fulfill(status=500, content_type="application/json", body='{"error": "x"}')
        else:
            route.fulfill(
                status=200, content_type="application/json", body=json.dumps(document("queued"))
            )

    page.route("**/asyncstate/progress/**", answer)
    page.goto(server.url + "/fake?token=t1&labels=" + q(labels))
    # interval 200 ms, first failure: back-off 400 ms, shown rounded up to whole seconds
    wait_text(page, ".asyncstate-status", "Trouble; again in 1s ({unknown})")
    wait_text(page, ".asyncstate-status", "Queued")


# ------------------------------------------------------------------ elapsed and ETA


def test_elapsed_and_eta_of_a_running_job(new_page, server) -> None:
    page = new_page(ETA_RECORDER)
    page.goto(server.url + "/widget?steps=40")
    page.wait_for_selector(".asyncstate--succeeded", timeout=30000)
    page.wait_for_timeout(1500)  # the line must not change any more: its timer is stopped
    log = page.evaluate("() => window.__etaLog")
    running = [e for e in log if "asyncstate--running" in e["cls"] and e["text"]]
    pattern = re.compile(r"^(\d+):(\d\d) elapsed(?: \u00b7 about (\d+) s left)?$")
    samples = []
    for entry in running:
        found = pattern.match(entry["text"])
        assert found, entry
        samples.append((int(found[1]) * 60 + int(found[2]), found[3], entry["t"]))
    elapsed = [s[0] for s in samples]
    left = [int(s[1]) for s in samples if s[1] is not None]
    assert len(left) >= 3, log
    assert elapsed == sorted(elapsed) and elapsed[-1] >= elapsed[0] + 2, log
    assert left[0] > left[-1], log  # the ETA shrinks as the job goes on
    # 40 steps at 10 a second: 4 s, more on a loaded machine (the first steps set the rate)
    assert left[0] <= 10, log
    gaps = [b[2] - a[2] for a, b in itertools.pairwise(samples)]
    assert max(gaps) < 2000, log  # redrawn every second, not only when a document comes
    final = log[-1]["text"]
    # the job's own time (4 s, more on a loaded machine), no ETA part
    assert re.fullmatch(r"0:(0[3-9]|1\d) elapsed", final), log
    assert text_of(page, ".asyncstate-eta") == final


def test_elapsed_and_eta_formats(new_page, server) -> None:
    page = new_page()
    fake = FakeJobs(page)
    custom = dict(
        DEFAULT_LABELS,
        elapsed="Time: {time}",
        etaSeconds="{seconds} seconds to go",
        etaMinutes="{minutes} minutes to go",
    )
    fake.docs["plain"] = fake.docs["custom"] = document("queued")
    page.goto(server.url + "/fake?token=plain")
    wait_text(page, ".asyncstate-status", "Queued")
    eta = "#w-plain .asyncstate-eta"
    assert text_of(page, eta) == ""  # nothing while queued
    assert not page.locator(eta).is_visible()

    def show(**fields: Any) -> None:
        fake.docs["plain"] = document("running", **fields)

    def wait_eta(pattern: str) -> str:
        page.wait_for_function(
            "([sel, pattern]) => new RegExp(pattern).test(document.querySelector(sel).textContent)",
            arg=[eta, pattern],
        )
        return text_of(page, eta)

    show(started_at=None, updated_at=1001.0, eta=30.0)  # running but no start time: nothing
    page.wait_for_selector("#w-plain .asyncstate--running")
    page.wait_for_timeout(500)
    assert text_of(page, eta) == ""
    # Times from a server clock far from the browser's (1970): only their differences count.
    # (updated_at only grows: the widget ignores a document older than the one it shows.)
    show(started_at=5000.0 - 3725.2, updated_at=5000.0, eta=600.0, percent=50.0)
    wait_eta(r"^1:02:0\d elapsed \u00b7 about 10 min left$")
    show(started_at=5001.0 - 42.3, updated_at=5001.0, eta=45.9)
    first = wait_eta(r"^0:4\d elapsed \u00b7 about \d+ s left$")
    assert 44 <= int(first.split("about ")[1].split(" ")[0]) <= 46
    # the same document polled again and again: elapsed keeps counting, the ETA counts down
    later = wait_eta(r"^0:4[4-9] elapsed")
    assert int(later.split("about ")[1].split(" ")[0]) < 46
    show(started_at=4912.0, updated_at=5002.0, eta=89.0)
    wait_eta(r"^1:3\d elapsed \u00b7 about 1 min left$")  # Math.round(89 / 60)
    show(started_at=4912.0, updated_at=5003.0, eta=150.0)
    wait_eta(r"^1:3\d elapsed \u00b7 about [23] min left$")
    show(started_at=4912.0, updated_at=5004.0, eta=0.2)
    wait_eta(r"^1:3\d elapsed \u00b7 about 1 s left$")  # rounded up, at least 1
    show(started_at=4912.0, updated_at=5005.0, eta=None)
    wait_eta(r"^1:3\d elapsed$")  # no ETA without an estimate
    fake.docs["plain"] = document("succeeded", started_at=5000.0, updated_at=5042.7, percent=100)
    page.wait_for_selector("#w-plain .asyncstate--succeeded")
    assert text_of(page, eta) == "0:42 elapsed"
    page.wait_for_timeout(1200)
    assert text_of(page, eta) == "0:42 elapsed"  # final: frozen

    # custom labels with their own placeholders
    other = new_page()
    fake2 = FakeJobs(other)
    fake2.docs["custom"] = document("running", started_at=1000.0, updated_at=1007.0, eta=12.1)
    other.goto(server.url + "/fake?token=custom&labels=" + q(custom))
    other.wait_for_function(
        "() => /^Time: 0:0[7-9] \u00b7 1[0-3] seconds to go$/"
        ".test(document.querySelector('.asyncstate-eta').textContent)"
    )
    fake2.docs["custom"] = document("running", started_at=1000.0, updated_at=1008.0, eta=300.0)
    other.wait_for_function(
        "() => /^Time: 0:0\\d \u00b7 5 minutes to go$/"
        ".test(document.querySelector('.asyncstate-eta').textContent)"
    )


# ------------------------------------------------------------------ page title


def test_the_title_shows_progress_while_hidden(new_page, server) -> None:
    page = new_page(VISIBILITY)
    page.goto(server.url + "/widget?steps=40")
    page.wait_for_function(
        "() => +document.querySelector('.asyncstate-bar').getAttribute('aria-valuenow') > 0"
    )
    assert page.title() == TITLE  # visible: the page's own title
    page.evaluate("() => __setHidden(true)")
    first = wait_title(page, rf"^\d+%{SEP}{TITLE}$")
    start = int(first.split("%")[0])
    page.wait_for_function(
        "(start) => parseInt(document.title, 10) > start && /%/.test(document.title)",
        arg=start,
    )
    page.wait_for_selector(".asyncstate--succeeded", timeout=30000)
    assert page.title() == f"Done{SEP}{TITLE}"
    assert page.evaluate("() => __setHidden(false)") == TITLE  # restored at once
    page.evaluate("() => __setHidden(true)")
    page.wait_for_timeout(300)
    assert page.title() == TITLE  # the end was seen: nothing more to say


def test_one_widget_owns_the_title_and_destroy_restores_it(new_page, server) -> None:
    page = new_page(VISIBILITY)
    fake = FakeJobs(page)
    fake.docs["a"] = document("running", percent=30.0, current=3, total=10, started_at=1000.0)
    fake.docs["b"] = document("running", percent=60.0, current=6, total=10, started_at=1000.0)
    page.goto(server.url + "/fake?token=a&token=b")
    page.wait_for_selector("#w-a .asyncstate--running")
    page.wait_for_selector("#w-b .asyncstate--running")
    page.evaluate("() => __setHidden(true)")
    owner_title = wait_title(page, rf"^(30|60)%{SEP}{TITLE}$")
    titles = page.evaluate(
        """() => new Promise((resolve) => {
             const seen = new Set([document.title]);
             const timer = setInterval(() => seen.add(document.title), 20);
             setTimeout(() => { clearInterval(timer); resolve([...seen]); }, 1500);
           })"""
    )
    assert titles == [owner_title]  # both poll five times a second: still one owner
    owner, other = ("a", "b") if owner_title.startswith("30") else ("b", "a")

    # the page sets its own title meanwhile: ours goes in front of the new one
    page.evaluate("() => { document.title = 'Renamed page'; }")
    wait_title(page, rf"^(30|60)%{SEP}Renamed page$")

    # a running widget does not take the title from a running owner; one that ends does
    fake.docs[other] = document("succeeded", percent=100, started_at=1000.0, updated_at=1005.0)
    page.wait_for_selector(f"#w-{other} .asyncstate--succeeded")
    wait_title(page, rf"^Done{SEP}Renamed page$")
    page.wait_for_timeout(600)  # the owner keeps polling, the unseen end keeps the title
    assert page.title() == f"Done{SEP}Renamed page"

    # destroying the title's widget restores the page's title; the other one takes over
    restored = page.evaluate(
        "(id) => { jQuery('#w-' + id + ' .asyncstate').asyncstate('destroy');"
        " return document.title; }",
        other,
    )
    assert restored == "Renamed page"
    wait_title(page, rf"^\d+%{SEP}Renamed page$")
    assert page.evaluate("() => __setHidden(false)") == "Renamed page"
    page.evaluate(f"() => jQuery('#w-{owner} .asyncstate').asyncstate('destroy')")
    page.evaluate("() => __setHidden(true)")
    page.wait_for_timeout(500)
    assert page.title() == "Renamed page"  # no widget left to show


# ------------------------------------------------------------------ notifications


def test_notify_shows_one_notification_at_the_end(new_page, server) -> None:
    page = new_page(NOTIFICATIONS % "'granted'", permissions=["notifications"])
    page.goto(server.url + "/widget?steps=10&notify=1")
    assert page.locator(".asyncstate").get_attribute("data-asyncstate-notify") == "true"
    page.wait_for_selector(".asyncstate--running")
    assert page.evaluate("() => window.__notifications") == []  # nothing before the end
    page.wait_for_selector(".asyncstate--succeeded")
    page.wait_for_timeout(1500)  # no second one later
    shown = page.evaluate("() => window.__notifications")
    assert shown == [{"title": "Done", "options": {"body": "step 10 of 10"}}]
    assert page.evaluate("() => window.__permissionRequests") == 0


def test_notify_needs_the_option_the_permission_and_an_end_seen(new_page, server) -> None:
    page = new_page(NOTIFICATIONS % "'granted'", permissions=["notifications"])
    fake = FakeJobs(page)
    for token in ("yes", "no", "over"):
        fake.docs[token] = document("running", percent=10.0, started_at=1000.0)
    fake.docs["over"] = document("failed", error={"type": "ValueError", "message": "x"})
    page.goto(server.url + "/fake?token=yes&token=no&token=over&notify=yes&notify=over")
    page.wait_for_selector("#w-yes .asyncstate--running")
    page.wait_for_selector("#w-no .asyncstate--running")
    page.wait_for_selector("#w-over .asyncstate--failed")  # ended before the page: no notice
    fake.docs["yes"] = document("failed", error={"type": "ValueError", "message": "bad row"})
    fake.docs["no"] = document("succeeded", percent=100)
    page.wait_for_selector("#w-yes .asyncstate--failed")
    page.wait_for_selector("#w-no .asyncstate--succeeded")
    page.wait_for_timeout(500)
    shown = page.evaluate("() => window.__notifications")
    assert shown == [{"title": "Failed", "options": {"body": "steady"}}]  # no message: the name

    # permission not given (yet): nothing, and the widget never asks by itself
    undecided = new_page(NOTIFICATIONS % "'default'")
    fake2 = FakeJobs(undecided)
    fake2.docs["yes"] = document("running", percent=10.0)
    undecided.goto(server.url + "/fake?token=yes&notify=yes")
    undecided.wait_for_selector(".asyncstate--running")
    fake2.docs["yes"] = document("succeeded", percent=100, message="all rows")
    undecided.wait_for_selector(".asyncstate--succeeded")
    undecided.wait_for_timeout(300)
    assert undecided.evaluate("() => window.__notifications") == []
    assert undecided.evaluate("() => window.__permissionRequests") == 0


# ------------------------------------------------------------------ the jobs panel


def test_the_jobs_panel_shows_one_widget_per_job(new_page, server) -> None:
    page = new_page()
    page.goto(server.url + "/panel")
    assert text_of(page, ".asyncstate-jobs .asyncstate-jobs-empty") == DEFAULT_LABELS["noJobs"]
    assert page.locator(".asyncstate-job").count() == 0
    started = page.request.post(server.url + "/start?n=2").json()["tokens"]
    assert len(started) == 2
    listed = page.request.get(server.url + "/asyncstate/jobs").json()

    page.goto(server.url + "/panel")
    jobs = page.locator(".asyncstate-jobs > .asyncstate-job")
    assert jobs.count() == 2
    assert page.locator(".asyncstate-jobs-empty").count() == 0
    assert [jobs.nth(i).get_attribute("data-job-id") for i in range(2)] == [
        job["id"] for job in listed
    ]  # newest first, as /asyncstate/jobs lists them
    for i in range(2):
        job = jobs.nth(i)
        assert job.locator(".asyncstate-job-name").text_content() == "steady"
        assert job.locator(".asyncstate").count() == 1
        # (tokens are signed anew each time, so compare what they name: the ids above)
        assert job.locator(".asyncstate").get_attribute("data-asyncstate-token")
        assert job.locator(".asyncstate-cancel").text_content() == DEFAULT_LABELS["cancel"]
    # the assets once, with the first widget
    assert page.locator("script[src$='/asyncstate.js']").count() == 1
    assert page.locator("script[src$='/jquery.js']").count() == 1
    assert page.locator("link[href$='/asyncstate.css']").count() == 1
    for i in range(2):
        jobs.nth(i).locator(".asyncstate.asyncstate--succeeded").wait_for()

    # another session has no jobs; the empty text is a label too
    other = new_page()
    other.goto(server.url + "/panel?labels=" + q({"noJobs": "Nothing running here"}))
    assert text_of(other, ".asyncstate-jobs-empty") == "Nothing running here"
