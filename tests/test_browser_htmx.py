"""The htmx widget in headless Chromium: htmx and its SSE extension from npm (``node_modules``,
installed by ``npm ci`` as ``.ci/lint-js`` does; pinned in package-lock.json), served by the
test app itself. It polls, cancels, stops polling at the end, runs the job again, sends
Flask-WTF's CSRF token, and follows the stream; a reload follows the same job; a failed
poll, a refused or broken stream; its labels from Flask-Babel; its result slot.

htmx is not the script widget: every state is rendered on the server, so there is no
"Reconnecting…" and no ``Retry-After`` on the page. What htmx does instead is tested: an
answer it does not swap (a 503) leaves the last fragment in place and the next poll goes
on; its SSE extension opens a broken stream again with its own back-off.

One app for the file (a module-scoped server in a thread of this process); each test's
jobs wait on its own gate (``?gate=``), and ``STARTED`` records the jobs each gate's pages
started, so the tests check what the server did.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string, request, send_file
from flask_wtf.csrf import CSRFProtect
from markupsafe import Markup
from support.apps import GATES, Gate, make_app
from support.pages import ThreadedServer, page_factory

from flask_asyncstate import AsyncState
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
#: The French labels of the labels test, through Flask-Babel.
FRENCH = {"Running": "En cours", "Cancel": "Annuler", "Done": "Terminé"}
#: Gate name -> the tokens of the jobs its pages started.
STARTED: dict[str, list[str]] = {}


def build_app(translations: Path) -> tuple[Flask, AsyncState]:
    flask_babel = pytest.importorskip("flask_babel")
    app, ext = make_app(BABEL_TRANSLATION_DIRECTORIES=str(translations))
    CSRFProtect(app)  # the buttons must send the token
    # French for a browser that asks for it (Accept-Language), else English
    flask_babel.Babel(app, locale_selector=lambda: request.accept_languages.best_match(["fr"]))

    @ext.job
    def work(job: Any, gate_name: str) -> str:
        job.progress(1, total=4, message="step 1 of 4")
        while not GATES[gate_name].wait(0.02):
            job.check_cancelled()
        job.progress(4, total=4, message="all 4 steps")
        return "done"

    @ext.job(render_result=lambda rows: Markup('<p class="report">{} rows</p>').format(rows))
    def reported(job: Any, gate_name: str) -> int:
        job.progress(1, total=2, message="row 1 of 2")
        GATES[gate_name].wait(10)
        return 12

    jobs = {"work": work, "reported": reported}

    @app.get("/")
    def page() -> str:
        """A new job of ``?job=`` waiting on ``?gate=``, or the job of ``?token=``."""
        token = request.args.get("token")
        if token is None:
            gate = request.args["gate"]
            token = jobs[request.args.get("job", "work")].start(gate).token
            STARTED.setdefault(gate, []).append(token)
        return render_template_string(PAGE, token=token, mode=request.args.get("mode", "poll"))

    @app.get("/<any('htmx.js', 'sse.js'):name>")
    def script(name: str) -> Any:
        return send_file(SCRIPTS[name], mimetype="text/javascript")

    @app.get("/favicon.ico")
    def favicon() -> tuple[str, int]:
        return "", 204  # no 404 in the console: the tests read it for refused posts

    return app, ext


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    missing = [str(p) for p in SCRIPTS.values() if not p.exists()]
    if missing:
        pytest.fail(f"npm ci first (htmx from package-lock.json): missing {missing}")
    from babel.messages.catalog import Catalog
    from babel.messages.mofile import write_mo

    translations = tmp_path_factory.mktemp("translations")
    catalog = Catalog(locale="fr")
    for english, french in FRENCH.items():
        catalog.add(english, french)
    folder = translations / "fr" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    with open(folder / "messages.mo", "wb") as mo:
        write_mo(mo, catalog)
    with ThreadedServer(*build_app(translations)) as running:
        yield running


@pytest.fixture
def gate() -> Iterator[Gate]:
    """This test's gate: its jobs wait on it (set at the end, so none is left waiting)."""
    made = Gate()
    yield made
    made.set()


@pytest.fixture
def new_page(browser: Any, server: ThreadedServer) -> Iterator[Callable[..., Any]]:
    yield from page_factory(browser, server.url)


def _status(page: Any) -> str:
    return str(page.text_content(".asyncstate-status") or "")


def _wait_status(page: Any, text: str) -> None:
    page.wait_for_function(
        "t => (document.querySelector('.asyncstate-status') || {}).textContent === t", arg=text
    )


def _count(page: Any, part: str) -> int:
    return sum(1 for url in page.requests if part in url)


def _wait_count(page: Any, part: str, at_least: int) -> None:
    """Until the page asked ``part`` ``at_least`` times (Playwright hands the requests to
    Python only while it works: wait in the page a little at a time)."""
    for _ in range(100):
        if _count(page, part) >= at_least:
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"{part}: {_count(page, part)} requests, wanted {at_least}")


def _token(page: Any) -> str:
    """The job's token, from the URL the fragment polls."""
    found = re.search(r"/fragment/([^?\"]+)", page.get_attribute(".asyncstate", "hx-get") or "")
    assert found, page.content()
    return found.group(1)


def test_the_htmx_widget_polls_cancels_stops_and_runs_again(new_page, server, gate) -> None:
    page = new_page()
    page.goto(f"{server.url}/?gate={gate.name}")
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


def test_a_reload_follows_the_same_job(new_page, server, gate) -> None:
    page = new_page()
    page.goto(f"{server.url}/?gate={gate.name}")
    page.wait_for_selector(".asyncstate-message:text('step 1 of 4')")
    token = _token(page)
    page.goto(f"{server.url}/?token={token}")  # the job's own page, as a redirect leaves it
    page.reload()
    # rendered with the page as it is now: no "Queued" first, the bar where it was
    assert _status(page) == DEFAULT_LABELS["running"]
    assert page.get_attribute(".asyncstate-bar", "aria-valuenow") == "25"
    assert _token(page) == token
    seen = _count(page, "/asyncstate/fragment/")
    _wait_count(page, "/asyncstate/fragment/", seen + 1)  # and it polls again
    gate.set()
    _wait_status(page, DEFAULT_LABELS["succeeded"])
    assert STARTED[gate.name] == [token]  # the reload started none
    assert page.console_errors == []


def test_a_503_poll_leaves_the_widget_as_it_was_and_the_next_poll_goes_on(
    new_page, server, gate
) -> None:
    """htmx swaps nothing on an error status: the last fragment stays (no "Reconnecting…",
    no Retry-After: htmx polls on at its interval), and the next poll brings the job back."""
    page = new_page()
    polls: list[int] = []

    def fragment(route: Any) -> None:
        polls.append(503 if 2 <= len(polls) + 1 <= 4 else 200)  # polls 2, 3 and 4 fail
        if polls[-1] == 503:
            route.fulfill(
                status=503,
                headers={"Retry-After": "1", "Cache-Control": "no-store"},
                content_type="application/json",
                body='{"error": "the job store is unavailable, try again shortly"}',
            )
        else:
            route.continue_()

    page.route("**/asyncstate/fragment/**", fragment)
    page.goto(f"{server.url}/?gate={gate.name}")
    _wait_count(page, "/asyncstate/fragment/", 4)
    assert polls[1:4] == [503, 503, 503]
    classes = (page.get_attribute(".asyncstate", "class") or "").split()
    assert "asyncstate--running" in classes  # as the last good answer left it
    assert page.text_content(".asyncstate-message") == "step 1 of 4"
    assert page.get_attribute(".asyncstate-bar", "aria-valuenow") == "25"
    gate.set()
    _wait_status(page, DEFAULT_LABELS["succeeded"])
    assert polls[4:] and set(polls[4:]) == {200}  # on at its interval, to the 286 of the end
    # htmx reports each one on the console (htmx:responseError), and nothing else
    assert len(page.console_errors) >= 3
    assert all("503" in e or "Response Status Error" in e for e in page.console_errors)


def test_a_stream_over_the_limits_hands_over_to_polling(
    new_page, server, gate, monkeypatch
) -> None:
    """The server refuses the stream (too many open): the htmx widget polls, and its SSE
    extension never opens it again (a 429 it would open again and again)."""
    monkeypatch.setattr(server.ext.app_state(server.app).streams, "acquire", lambda owner: None)
    page = new_page()
    page.goto(f"{server.url}/?gate={gate.name}&mode=sse")
    _wait_count(page, "/asyncstate/fragment/", 2)
    assert page.query_selector(".asyncstate-stream .asyncstate[hx-get]") is not None
    gate.set()
    _wait_status(page, DEFAULT_LABELS["succeeded"])
    page.wait_for_timeout(800)  # past the extension's first retry (after 0.5 s)
    assert _count(page, "/asyncstate/events/") == 1
    assert page.text_content(".asyncstate-message") == "all 4 steps"
    assert page.console_errors == []


def test_a_refused_then_broken_stream_is_opened_again(new_page, server, gate) -> None:
    """The stream answered 503 (the store away as it opened), then one that said the store
    is away and dropped: htmx's SSE extension opens it again each time (its back-off, then
    EventSource's ``retry``), the widget as it was meanwhile, and follows the job to its end."""
    page = new_page()
    streams: list[str] = []
    unavailable = 'event: unavailable\ndata: {"error": "the job store is unavailable"}\n\n'

    def events(route: Any) -> None:
        streams.append(route.request.url)
        if len(streams) == 1:
            route.fulfill(status=503, content_type="application/json", body='{"error": "away"}')
        elif len(streams) == 2:
            body = "retry: 300\n\n" + unavailable  # then the connection ends
            route.fulfill(status=200, content_type="text/event-stream", body=body)
        else:
            route.continue_()

    page.route("**/asyncstate/events/**", events)
    page.goto(f"{server.url}/?gate={gate.name}&mode=sse")
    _wait_count(page, "/asyncstate/events/", 3)
    page.wait_for_selector(".asyncstate-stream .asyncstate-message:text('step 1 of 4')")
    gate.set()
    _wait_status(page, DEFAULT_LABELS["succeeded"])
    assert len(streams) == 3
    assert _count(page, "/asyncstate/fragment/") == 0  # the stream, never polls
    # the refused stream, and htmx's log of its two htmx:sseError events; nothing else
    errors = page.console_errors
    assert "503" in errors[0] and set(errors[1:]) <= {"[object Event]"}, errors


def test_the_htmx_widget_follows_the_stream_with_the_sse_extension(new_page, server, gate) -> None:
    page = new_page()
    page.goto(f"{server.url}/?gate={gate.name}&mode=sse")
    page.wait_for_selector(".asyncstate-stream .asyncstate-message:text('step 1 of 4')")
    _wait_count(page, "/asyncstate/events/", 1)  # the stream is open
    assert _count(page, "/asyncstate/events/") == 1
    gate.set()
    _wait_status(page, DEFAULT_LABELS["succeeded"])
    assert page.text_content(".asyncstate-message") == "all 4 steps"
    # past EventSource's retry delay (2 s): sse-close="end" closed it for good
    page.wait_for_timeout(2500)
    assert _count(page, "/asyncstate/events/") == 1
    assert _count(page, "/asyncstate/fragment/") == 0  # no polling beside the stream
    assert page.console_errors == []


def test_the_labels_are_the_servers_in_the_browsers_language(new_page, server, gate) -> None:
    """No labels in the page: every fragment is rendered with Flask-Babel's translations,
    in the language the browser asks for."""
    page = new_page()
    page.set_extra_http_headers({"Accept-Language": "fr-FR,fr;q=0.9"})  # htmx's requests too
    page.goto(f"{server.url}/?gate={gate.name}")
    _wait_count(page, "/asyncstate/fragment/", 1)
    _wait_status(page, "En cours")
    assert page.text_content(".asyncstate-cancel") == "Annuler"
    assert page.get_attribute(".asyncstate-bar", "aria-label") == "work"  # the job's name
    gate.set()
    _wait_status(page, "Terminé")
    assert page.query_selector(".asyncstate-retry") is None


def test_the_result_slot_with_the_end_and_after_a_reload(new_page, server, gate) -> None:
    page = new_page()
    page.goto(f"{server.url}/?gate={gate.name}&job=reported")
    page.wait_for_selector(".asyncstate-message:text('row 1 of 2')")
    assert page.is_hidden(".asyncstate-result")  # nothing to show while it runs
    token = _token(page)
    gate.set()
    page.wait_for_selector(".asyncstate-result:not([hidden]) .report")
    assert page.text_content(".asyncstate-result .report") == "12 rows"
    assert _status(page) == DEFAULT_LABELS["succeeded"]
    # the final fragment (286) carried it: no other request for it
    assert _count(page, "/asyncstate/result/") == 0

    polls = _count(page, "/asyncstate/fragment/")
    page.goto(f"{server.url}/?token={token}")  # later: rendered with the page, no poll
    assert page.text_content(".asyncstate-result .report") == "12 rows"
    assert page.get_attribute(".asyncstate", "hx-get") is None
    page.wait_for_timeout(400)
    assert _count(page, "/asyncstate/fragment/") == polls
    assert page.console_errors == []
