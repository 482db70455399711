"""Structured progress in Chromium (issue 26): a parent's totals, the steps of a job and its
trail, in the module's element, the jQuery widget, the htmx widget, the jobs panel and the
operator's page; cancelling a parent from the widget ends its children.

One app in this process, served on a free loopback port (werkzeug's server in a thread).
Every job waits on gates (``gate(key, name)``) that the test opens, so each state the page
shows is one the test made; ``PARENTS[key]`` and ``CHILDREN[key]`` are the ids of the jobs
a test started, so the tests check what the server did, not only what the page says.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask, render_template_string, request, send_file
from support.apps import make_app
from support.pages import ThreadedServer, page_factory
from support.waiting import wait_until

from flask_asyncstate import AsyncState, JobContext
from flask_asyncstate.templating import DEFAULT_LABELS

pytestmark = pytest.mark.browser

HOSTILE = '<img src=x onerror="window.__ran = 1"><b>bold</b> &amp; done'
STEPS = ["plan", "convert", "archive"]
NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
SCRIPTS = {
    "htmx.js": NODE_MODULES / "htmx.org" / "dist" / "htmx.min.js",
    "sse.js": NODE_MODULES / "htmx-ext-sse" / "dist" / "sse.js",
}

#: Gate name -> the Event a job waits on.
GATES: dict[str, threading.Event] = {}
#: Test key -> the parent job's id; the ids of its children, in the order spawned.
PARENTS: dict[str, str] = {}
CHILDREN: dict[str, list[str]] = {}
#: Test key -> the ids of the grandchildren (children of the child of ``archive``).
GRANDCHILDREN: dict[str, list[str]] = {}
#: Seconds the server holds back the htmx fragment's answers: "polls", "details" (=1).
SLOW: dict[str, float] = {}
#: Set when a poll of the fragment is being held back.
POLL_IN_FLIGHT = threading.Event()

HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Structure</title>"""

#: The module's element; ``steps`` lists the job's stages (those to come too).
MODULE_PAGE = (
    HEAD
    + """<link rel="stylesheet" href="/asyncstate/asyncstate.css">
<script type="module" src="/asyncstate/asyncstate.mjs"></script></head><body>
<asyncstate-progress id="job" token="{{ token }}" interval="200"
  {%- if steps %} steps="{{ steps|tojson|forceescape }}"{% endif %}></asyncstate-progress>
</body></html>"""
)

#: The server-rendered widget with the jQuery plugin, its own labels.
JQUERY_PAGE = (
    HEAD
    + """</head><body>
{{ asyncstate_widget(token, interval=200, steps=steps, labels=labels) }}
</body></html>"""
)

HTMX_PAGE = (
    HEAD
    + """<script src="/htmx.js"></script><script src="/sse.js"></script></head><body>
{{ asyncstate_widget(token, client="htmx", interval=250, steps=steps, mode=mode) }}
</body></html>"""
)

PANEL_PAGE = HEAD + "</head><body>{{ asyncstate_jobs(interval=200) }}</body></html>"


def gate(key: str, name: str) -> threading.Event:
    return GATES.setdefault(f"{key}:{name}", threading.Event())


def open_gate(key: str, name: str) -> None:
    gate(key, name).set()


def build_app() -> tuple[Flask, AsyncState]:
    app, ext = make_app(ASYNCSTATE_MAX_WORKERS=16, admin_guard=lambda: None)

    def wait_for(job: JobContext, key: str, name: str) -> None:
        while not gate(key, name).wait(0.02):
            job.check_cancelled()

    @ext.job
    def piece(job: JobContext, key: str, number: int, fails: bool) -> int:
        wait_for(job, key, f"piece{number}")
        if fails:
            raise ValueError(f"piece {number} is broken")
        return number

    @ext.job(label="Export")
    def batch(job: JobContext, key: str, count: int, failing: list[int]) -> None:
        PARENTS[key] = job.id
        for number in range(count):
            child = job.spawn(piece, key, number, number in failing)
            CHILDREN.setdefault(key, []).append(child.id)
        job.wait_children()
        job.check_cancelled()

    @ext.job(label="Part")
    def part(job: JobContext, key: str) -> None:
        GRANDCHILDREN.setdefault(key, []).append(job.spawn(piece, key, 5, False).id)
        job.wait_children()

    @ext.job(label="Archive")
    def archive(job: JobContext, key: str) -> None:
        """A child that has a child of its own."""
        PARENTS[key] = job.id
        CHILDREN.setdefault(key, []).append(job.spawn(part, key).id)
        job.wait_children()

    @ext.job
    def staged(job: JobContext, key: str) -> None:
        job.log(HOSTILE)
        for name in STEPS:
            with job.stage(name):
                job.log(f"{name} begun")
                wait_for(job, key, name)

    starters: dict[str, Callable[[str], Any]] = {
        "batch": lambda key: batch.start(key, int(request.args.get("count", 3)), [1]),
        "staged": lambda key: staged.start(key),
        "nested": lambda key: archive.start(key),
    }
    pages = {"module": MODULE_PAGE, "jquery": JQUERY_PAGE, "htmx": HTMX_PAGE}

    @app.get("/<client>/<kind>")
    def page(client: str, kind: str) -> str:
        """A new job, shown by ``client``; ``labels`` (JSON): the widget's own."""
        token = starters[kind](request.args["key"]).token
        labels = json.loads(request.args.get("labels", "null"))
        steps = STEPS if kind == "staged" else None  # its stages, to come ones too
        mode = request.args.get("mode", "poll")
        return render_template_string(
            pages[client], token=token, steps=steps, labels=labels, mode=mode
        )

    @app.get("/panel/<kind>")
    def panel(kind: str) -> str:
        starters[kind](request.args["key"])
        return render_template_string(PANEL_PAGE)

    @app.before_request
    def held_back() -> None:
        if SLOW and request.path.startswith("/asyncstate/fragment/"):
            details = request.args.get("details") == "1"
            if not details:
                POLL_IN_FLIGHT.set()
            time.sleep(SLOW.get("details" if details else "polls", 0.0))

    @app.get("/<any('htmx.js', 'sse.js'):name>")
    def script(name: str) -> Any:
        return send_file(SCRIPTS[name], mimetype="text/javascript")

    return app, ext


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    missing = [str(p) for p in SCRIPTS.values() if not p.exists()]
    if missing:
        pytest.fail(f"npm ci first (htmx from package-lock.json): missing {missing}")
    with ThreadedServer(*build_app()) as running:
        yield running
    for event in GATES.values():
        event.set()


@pytest.fixture
def new_page(browser, server) -> Iterator[Callable[..., Any]]:
    yield from page_factory(browser, server.url)


@pytest.fixture
def key() -> Iterator[str]:
    """This test's key; its gates are opened at the end, so no job outlives the test."""
    key = secrets.token_hex(6)
    yield key
    for name, event in GATES.items():
        if name.startswith(f"{key}:"):
            event.set()
    for name in [*STEPS, *(f"piece{i}" for i in range(10))]:
        open_gate(key, name)


def goto(page: Any, server: ThreadedServer, path: str, key: str, **query: Any) -> None:
    page.goto(f"{server.url}{path}?{urlencode({'key': key, **query})}")


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.text_content())


def wait_text(page: Any, selector: str, wanted: str, timeout: float = 15000) -> None:
    """Until the first ``selector`` reads ``wanted`` exactly."""
    page.wait_for_function(
        "([sel, text]) => { const n = document.querySelector(sel);"
        " return !!n && n.textContent.trim() === text; }",
        arg=[selector, wanted],
        timeout=timeout,
    )


def steps_of(page: Any) -> list[tuple[str, str, str | None, str]]:
    """Each step shown: (name, its state class, aria-current, its hidden status word)."""
    return [
        tuple(step)
        for step in page.evaluate(
            """() => [...document.querySelectorAll('.asyncstate-stages > li')].map((li) => [
              li.querySelector('.asyncstate-stage-name').textContent,
              [...li.classList].find((c) => c.startsWith('asyncstate-stage--')),
              li.getAttribute('aria-current'),
              li.querySelector('.asyncstate-visually-hidden').textContent])"""
        )
    ]


def statuses(server: ThreadedServer, ids: list[str]) -> list[str]:
    with server.app.app_context():
        return [server.ext.app_state().records.status(i)["status"] for i in ids]


# ------------------------------------------------------------------ totals


@pytest.mark.parametrize("client", ["module", "jquery"])
def test_a_parents_totals_appear_and_update_with_the_failed_count(
    new_page, server, key, client
) -> None:
    page = new_page()
    # the jQuery widget counts "files": its own label, from the template
    labels = {"children": "{done} of {total} files"} if client == "jquery" else None
    done = DEFAULT_LABELS["children"] if labels is None else labels["children"]
    goto(page, server, f"/{client}/batch", key, labels=json.dumps(labels))
    totals = ".asyncstate-children"
    wait_text(page, totals, done.format(done=0, total=3))
    # a parent with no progress of its own: its children's done / total on the bar
    assert page.locator(".asyncstate-bar").get_attribute("aria-valuenow") == "0"
    open_gate(key, "piece0")
    wait_text(page, totals, done.format(done=1, total=3))
    assert page.locator(".asyncstate-bar").get_attribute("aria-valuenow") == "33"
    open_gate(key, "piece1")  # this one fails
    failed = DEFAULT_LABELS["childrenFailed"].format(count=1)
    wait_text(page, totals, f"{done.format(done=2, total=3)}, {failed}")
    open_gate(key, "piece2")
    page.wait_for_selector(".asyncstate--succeeded")
    wait_text(page, totals, f"{done.format(done=3, total=3)}, {failed}")
    assert statuses(server, CHILDREN[key]) == ["succeeded", "failed", "succeeded"]
    # a job with no stages and no trail shows neither
    assert page.locator(".asyncstate-stages, .asyncstate-trail").count() == 0
    if client == "jquery":
        assert page.evaluate("() => typeof window.jQuery") == "function"


def test_cancel_on_a_parent_ends_it_and_every_child_cancelled(new_page, server, key) -> None:
    page = new_page()
    goto(page, server, "/module/batch", key, count=4)
    wait_text(page, ".asyncstate-children", DEFAULT_LABELS["children"].format(done=0, total=4))
    wait_until(lambda: len(CHILDREN.get(key, [])) == 4, 10)
    wait_until(lambda: statuses(server, CHILDREN[key]) == ["running"] * 4, 10)
    page.click(".asyncstate-cancel")
    page.wait_for_selector(".asyncstate--cancelled")
    assert statuses(server, [PARENTS[key]]) == ["cancelled"]
    # the server cancelled the unfinished children: none ran to its end
    wait_until(lambda: statuses(server, CHILDREN[key]) == ["cancelled"] * 4, 10)
    assert page.locator(".asyncstate-cancel").is_hidden()


# ------------------------------------------------------------------ stages


@pytest.mark.parametrize("client", ["module", "jquery"])
def test_the_steps_list_moves_its_current_step_in_place(new_page, server, key, client) -> None:
    page = new_page()
    goto(page, server, f"/{client}/staged", key)
    page.wait_for_selector(".asyncstate-stages > li[aria-current='step']")
    stages = page.locator(".asyncstate-stages")
    assert stages.evaluate("(n) => n.tagName") == "OL"
    assert stages.get_attribute("aria-label") == DEFAULT_LABELS["stages"]
    current, to_come, done = (
        DEFAULT_LABELS[k] for k in ("stageCurrent", "stageToCome", "stageDone")
    )
    assert steps_of(page) == [
        ("plan", "asyncstate-stage--current", "step", current),
        ("convert", "asyncstate-stage--todo", None, to_come),  # named by steps=, not begun
        ("archive", "asyncstate-stage--todo", None, to_come),
    ]
    # the status words are in the text (for screen readers), out of sight
    hidden = page.locator(".asyncstate-stages .asyncstate-visually-hidden").first
    assert hidden.bounding_box()["width"] <= 1
    page.evaluate(
        "() => document.querySelectorAll('.asyncstate-stages > li')"
        ".forEach((li, i) => { li.__mark = i; })"
    )
    open_gate(key, "plan")
    page.wait_for_selector(".asyncstate-stages > li:nth-child(2)[aria-current='step']")
    assert steps_of(page) == [
        ("plan", "asyncstate-stage--done", None, done),
        ("convert", "asyncstate-stage--current", "step", current),
        ("archive", "asyncstate-stage--todo", None, to_come),
    ]
    # updated in place: the same items, not new ones
    marks = page.evaluate(
        "() => [...document.querySelectorAll('.asyncstate-stages > li')].map((li) => li.__mark)"
    )
    assert marks == [0, 1, 2]
    open_gate(key, "convert")
    open_gate(key, "archive")
    page.wait_for_selector(".asyncstate--succeeded")
    assert steps_of(page) == [(name, "asyncstate-stage--done", None, done) for name in STEPS]


# ------------------------------------------------------------------ the trail


def test_the_trail_opens_on_demand_and_shows_hostile_text_as_text(new_page, server, key) -> None:
    page = new_page()
    goto(page, server, "/module/staged", key)
    trail = page.locator("details.asyncstate-trail")
    trail.wait_for(state="attached")
    summary = trail.locator("summary")
    assert summary.text_content() == DEFAULT_LABELS["showDetails"]
    assert trail.get_attribute("open") is None
    assert page.locator(".asyncstate-log").is_hidden()  # closed until asked
    summary.click()
    lines = page.locator(".asyncstate-log-text")
    lines.nth(1).wait_for()
    assert lines.all_text_contents() == [HOSTILE, "plan begun"]
    assert page.locator(".asyncstate-trail img, .asyncstate-trail b").count() == 0
    assert page.evaluate("() => window.__ran") is None
    times = page.locator(".asyncstate-log time")
    assert all(t.startswith("0:0") for t in times.all_text_contents())  # since it began
    assert times.first.get_attribute("datetime").endswith("Z")
    open_gate(key, "plan")  # a new line: the trail stays open, and shows it
    lines.nth(2).wait_for()
    assert lines.all_text_contents() == [HOSTILE, "plan begun", "convert begun"]
    assert trail.get_attribute("open") == ""


# ------------------------------------------------------------------ htmx


#: Where an htmx widget says whether its trail is open: the URL it polls, or its stream's.
FOLLOWED = """(mode) => { const node = mode === 'poll'
  ? document.querySelector('.asyncstate[hx-get]') : document.querySelector('[sse-connect]');
  const url = node && node.getAttribute(mode === 'poll' ? 'hx-get' : 'sse-connect');
  return url && new URL(url, location.href).searchParams.get('details'); }"""


@pytest.mark.parametrize("mode", ["poll", "sse"])
def test_the_htmx_widget_lists_the_steps_and_keeps_its_trail_as_left(
    new_page, server, key, mode
) -> None:
    page = new_page()
    goto(page, server, "/htmx/staged", key, mode=mode)
    page.wait_for_selector(".asyncstate-stages > li[aria-current='step']")
    assert [s[:3] for s in steps_of(page)] == [
        ("plan", "asyncstate-stage--current", "step"),
        ("convert", "asyncstate-stage--todo", None),
        ("archive", "asyncstate-stage--todo", None),
    ]
    assert page.evaluate(FOLLOWED, mode) is None
    page.click(".asyncstate-trail summary")
    # the server renders it open, and the polls (or the stream) that follow keep it so
    page.wait_for_function(f"() => ({FOLLOWED})({json.dumps(mode)}) === '1'")
    open_gate(key, "plan")
    page.wait_for_selector(".asyncstate-stages > li:nth-child(2)[aria-current='step']")
    assert page.locator("details.asyncstate-trail").get_attribute("open") == ""
    texts = page.locator(".asyncstate-log-text").all_text_contents()
    assert texts == [HOSTILE, "plan begun", "convert begun"]
    assert page.locator(".asyncstate-trail img").count() == 0
    assert page.evaluate("() => window.__ran") is None
    page.click(".asyncstate-trail summary")  # closed again: it stays closed
    page.wait_for_function(f"() => ({FOLLOWED})({json.dumps(mode)}) === null")
    open_gate(key, "convert")
    page.wait_for_selector(".asyncstate-stages > li:nth-child(3)[aria-current='step']")
    assert page.locator("details.asyncstate-trail").get_attribute("open") is None
    assert page.locator(".asyncstate-stream").count() == (1 if mode == "sse" else 0)


def test_a_poll_in_flight_when_the_trail_is_opened_does_not_close_it_again(
    new_page, server, key
) -> None:
    """The summary is clicked while a poll is in flight, and the poll's answer comes first
    (polls answered after 0.3 s, the click's after 0.8 s): the click's request replaces
    the poll (hx-sync), whose answer would otherwise swap the root first and leave the
    click's answer no target in the page, the trail closed for good."""
    page = new_page()
    goto(page, server, "/htmx/staged", key, mode="poll")
    page.wait_for_selector(".asyncstate-trail summary")
    SLOW["polls"], SLOW["details"] = 0.3, 0.8
    try:
        POLL_IN_FLIGHT.clear()
        wait_until(POLL_IN_FLIGHT.is_set, 10, message="a poll in flight")
        page.click(".asyncstate-trail summary")
        page.wait_for_function(f"() => ({FOLLOWED})('poll') === '1'", timeout=5000)
        page.wait_for_timeout(1500)  # polls that follow keep it open
        assert page.evaluate(FOLLOWED, "poll") == "1"
        assert page.locator("details.asyncstate-trail").get_attribute("open") == ""
    finally:
        SLOW.clear()


# ------------------------------------------------------------------ panel and admin


def test_the_jobs_panel_shows_a_parent_with_its_totals(new_page, server, key) -> None:
    page = new_page()
    goto(page, server, "/panel/batch", key)
    totals = ".asyncstate-job .asyncstate-children"
    wait_text(page, totals, DEFAULT_LABELS["children"].format(done=0, total=3))
    open_gate(key, "piece0")
    wait_text(page, totals, DEFAULT_LABELS["children"].format(done=1, total=3))
    # the parent stands for its children: one entry
    assert page.locator(".asyncstate-job").count() == 1
    assert text(page, ".asyncstate-job-name") == "Export"


def test_the_operators_page_lists_children_under_their_parent(new_page, server, key) -> None:
    page = new_page()
    goto(page, server, "/module/batch", key)
    wait_until(lambda: len(CHILDREN.get(key, [])) == 3, 10)
    parent, children = PARENTS[key], CHILDREN[key]
    open_gate(key, "piece1")  # one child ends (failed), the others run
    wait_until(lambda: statuses(server, [children[1]]) == ["failed"], 10)
    admin = new_page()
    admin.goto(f"{server.url}/asyncstate/admin")
    rows = f"tr[data-job-id='{parent}'], tr[data-parent-id='{parent}']"
    admin.wait_for_function(f'() => document.querySelectorAll("{rows}").length === 4')
    order = admin.evaluate(
        """(rows) => { const all = [...document.querySelectorAll('tr.asyncstate-admin-job')];
          const ours = [...document.querySelectorAll(rows)];
          return ours.map((tr) => [all.indexOf(tr), tr.dataset.jobId, tr.className]); }""",
        rows,
    )
    # the parent, then its children right under it, newest first
    first = order[0][0]
    assert [o[0] for o in order] == [first, first + 1, first + 2, first + 3]
    assert [o[1] for o in order] == [parent, *reversed(children)]
    assert "asyncstate-admin-job--parent" in order[0][2]
    assert all("asyncstate-admin-job--child" in o[2] for o in order[1:])
    part_of = admin.locator(f"tr[data-parent-id='{parent}'] .asyncstate-admin-visually-hidden")
    assert set(part_of.all_text_contents()) == {"(part of Export)"}
    child_name = admin.locator(f"tr[data-parent-id='{parent}'] .asyncstate-admin-name-text")
    assert set(child_name.all_text_contents()) == {"piece"}
    failed = DEFAULT_LABELS["childrenFailed"].format(count=1)
    totals = f"{DEFAULT_LABELS['children'].format(done=1, total=3)}, {failed}"
    wait_text(admin, f"tr[data-job-id='{parent}'] .asyncstate-admin-children", totals)


def test_the_operators_page_lists_grandchildren_under_their_parent(new_page, server, key) -> None:
    """A child may spawn too: its children follow it, right under its parent's."""
    page = new_page()
    goto(page, server, "/module/nested", key)
    wait_until(lambda: len(GRANDCHILDREN.get(key, [])) == 1, 10)
    ids = [PARENTS[key], CHILDREN[key][0], GRANDCHILDREN[key][0]]
    admin = new_page()
    admin.goto(f"{server.url}/asyncstate/admin")
    admin.wait_for_function(
        "(ids) => ids.every((id) => document.querySelector(`tr[data-job-id='${id}']`))", arg=ids
    )
    order = admin.evaluate(
        """(ids) => { const all = [...document.querySelectorAll('tr.asyncstate-admin-job')];
          return ids.map((id) => all.indexOf(document.querySelector(`tr[data-job-id='${id}']`)));
        }""",
        ids,
    )
    assert order == [order[0], order[0] + 1, order[0] + 2], order
