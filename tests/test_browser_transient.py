"""The widget in headless Chromium when the server is briefly unavailable or overloaded.

503 (job store unavailable, queue full) and 429 (rate limit, too many event streams)
are transient: the widget shows "Reconnecting…", waits what ``Retry-After`` asks,
keeps going, and never shows a final state because of them. The answers are injected
with Playwright's request interception in front of the real example app.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.servers import AppProcess

# Failure injection (503s, 429s, dropped streams): with the reliability suite, not the quick one.
pytestmark = [pytest.mark.browser, pytest.mark.reliability]


RECONNECTING = "Reconnecting\u2026"
CANCEL_RETRYING = "Could not cancel right now, retrying\u2026"
#: classes that would mean the widget gave up or showed an end it was not told about
NEVER_BEFORE_THE_END = (
    "asyncstate--failed",
    "asyncstate--error",
    "asyncstate--lost",
    "asyncstate--notfound",
    "asyncstate--forbidden",
    "asyncstate--cancelled",
    "asyncstate--succeeded",
)

#: Runs before the page's scripts on every navigation: logs each change of the widget's
#: classes, status text and aria-valuenow, so a state shown for a moment is not missed.
RECORDER = """
(() => {
  const log = window.__asyncstateLog = [];
  const transports = window.__asyncstateTransports = [];
  const snap = () => {
    const el = document.querySelector('.asyncstate');
    if (!el) { return; }
    const status = el.querySelector('.asyncstate-status');
    const bar = el.querySelector('.asyncstate-bar');
    const button = el.querySelector('.asyncstate-cancel');
    const entry = {
      cls: el.className,
      status: status ? status.textContent : '',
      now: bar ? bar.getAttribute('aria-valuenow') : null,
      cancelDisabled: button ? button.disabled : null,
      t: Date.now(),
    };
    const last = log[log.length - 1];
    if (!last || last.cls !== entry.cls || last.status !== entry.status || last.now !== entry.now ||
        last.cancelDisabled !== entry.cancelDisabled) {
      log.push(entry);
    }
  };
  new MutationObserver(snap).observe(document, {
    subtree: true, childList: true, attributes: true, characterData: true,
  });
  // jQuery events are not DOM events: bind through jQuery, before the plugin starts
  // (this DOMContentLoaded listener runs before jQuery's own "ready" one).
  document.addEventListener('DOMContentLoaded', () => {
    if (window.jQuery) {
      window.jQuery(document).on('asyncstate:transport', (event, name) => transports.push(name));
    }
  });
})();
"""

UNAVAILABLE_BODY = json.dumps({"error": "the job store is unavailable, try again shortly"})


@pytest.fixture
def example(request, tmp_path) -> Iterator[AppProcess]:
    """The example app (in-memory store); its import of 2,000 products takes about 8 s.

    Indirect parametrisation adds environment variables (app config) to its process.
    Streams are on (the dev server is threaded: off by default), so mode "auto" opens one.
    """
    env = {"FLASK_ASYNCSTATE_MAX_STREAMS": "20", **dict(getattr(request, "param", {}))}
    with AppProcess(
        tmp_path, SESSION_DIR=str(tmp_path / "sessions"), EXAMPLE_PAUSE="0.08", **env
    ) as app:
        yield app


@pytest.fixture
def page(browser, example) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(30000)
    page = context.new_page()
    page.add_init_script(RECORDER)
    page.errors = []  # type: ignore[attr-defined]
    page.external = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on(
        "request",
        lambda req: None if req.url.startswith(example.url) else page.external.append(req.url),
    )
    yield page
    assert page.errors == [], page.errors
    assert page.external == [], page.external
    context.close()


def unavailable(route: Any, status: int = 503, retry_after: str = "1") -> None:
    route.fulfill(
        status=status,
        headers={"Retry-After": retry_after, "Cache-Control": "no-store"},
        content_type="application/json",
        body=UNAVAILABLE_BODY,
    )


def start_import(page: Any, example: AppProcess) -> str:
    """Start an import as a user does (the form's button); return the page's job URL."""
    page.goto(example.url + "/")
    page.click("#start-import")
    page.wait_for_url("**/?token=*")
    return str(page.url)


def wait_for_status_text(page: Any, text: str, timeout: float) -> None:
    """Wait until the widget's status line contains ``text``."""
    page.wait_for_function(
        "(text) => document.querySelector('.asyncstate-status').textContent.includes(text)",
        arg=text,
        timeout=timeout,
    )


def widget_log(page: Any) -> list[dict[str, Any]]:
    return list(page.evaluate("() => window.__asyncstateLog"))


def assert_no_end_before_the_last(log: list[dict[str, Any]], final: str) -> None:
    """Nothing final (nor an error state) shown before the widget reached ``final``."""
    first_final = next(i for i, e in enumerate(log) if final in e["cls"].split())
    for entry in log[:first_final]:
        shown = set(entry["cls"].split())
        assert not shown.intersection(NEVER_BEFORE_THE_END), entry
    for entry in log[first_final:]:  # and the end is the one the server sent
        shown = set(entry["cls"].split())
        assert not shown.intersection(set(NEVER_BEFORE_THE_END) - {final}), entry


def test_503_polls_show_reconnecting_keep_the_bar_and_recover(page, example) -> None:
    job_url = start_import(page, example)
    polls: list[tuple[float, int]] = []  # (time, status answered)
    failing = {"from": 3, "count": 3}  # polls 3, 4 and 5 get a 503

    def progress(route: Any) -> None:
        n = len(polls) + 1
        if failing["from"] <= n < failing["from"] + failing["count"]:
            polls.append((time.monotonic(), 503))
            unavailable(route)
        else:
            polls.append((time.monotonic(), 200))
            route.continue_()

    page.route("**/asyncstate/progress/**", progress)
    page.goto(job_url + "&mode=poll")
    widget = page.locator(".asyncstate")

    page.wait_for_selector(".asyncstate.asyncstate--reconnecting")
    assert page.locator(".asyncstate-status").inner_text() == RECONNECTING
    assert page.locator(".asyncstate-status").get_attribute("role") == "status"  # a live region
    # the 503s end, and the widget goes back to the normal display of a running job
    page.wait_for_selector(
        ".asyncstate.asyncstate--running:not(.asyncstate--reconnecting)", timeout=15000
    )
    page.wait_for_selector(".asyncstate.asyncstate--succeeded", timeout=30000)
    assert page.locator(".asyncstate-status").inner_text() == "Done"
    assert page.locator(".asyncstate-bar").get_attribute("aria-valuenow") == "100"
    assert "asyncstate--retrying" not in (widget.get_attribute("class") or "")

    log = widget_log(page)
    assert_no_end_before_the_last(log, "asyncstate--succeeded")
    first_503 = next(i for i, e in enumerate(log) if "asyncstate--reconnecting" in e["cls"].split())
    reconnecting = [e for e in log if "asyncstate--reconnecting" in e["cls"].split()]
    # while the 503s lasted: "Reconnecting…", still a running job, the bar where it was (> 0)
    bar_before = log[first_503 - 1]["now"]
    assert int(bar_before) > 0
    for entry in reconnecting:
        assert entry["status"] == RECONNECTING, entry
        assert "asyncstate--running" in entry["cls"].split(), entry
        assert entry["now"] == bar_before, entry
    # then a running job again, its bar moving on, before it succeeded
    after = log[log.index(reconnecting[-1]) + 1 :]
    running_again = [e for e in after if "asyncstate--running" in e["cls"].split()]
    assert running_again and running_again[0]["status"] == "Running"
    assert int(running_again[-1]["now"]) >= int(bar_before)

    # Retry-After: 1 was honoured: about a second between the polls after each 503,
    # not the exponential back-off (2 s, 4 s, ...) used when there is no header
    statuses = [status for _, status in polls]
    assert statuses[2:5] == [503, 503, 503] and statuses[5] == 200
    gaps = [polls[i + 1][0] - polls[i][0] for i in range(2, 5)]
    # (a loaded machine may delay one poll: the middle gap tells 1 s from 2, 4, 8 s)
    assert all(0.9 <= gap < 2.9 for gap in gaps) and sorted(gaps)[1] < 1.9, gaps


def test_auto_mode_falls_back_to_polling_when_events_answers_429(page, example) -> None:
    events: list[str] = []
    polls: list[int] = []

    def stream(route: Any) -> None:  # the server has too many open streams
        events.append(route.request.url)
        unavailable(route, status=429, retry_after="5")

    def progress(route: Any) -> None:  # and the first poll finds the job store away
        polls.append(503 if not polls else 200)
        if polls[-1] == 503:
            unavailable(route)
        else:
            route.continue_()

    page.route("**/asyncstate/events/**", stream)
    page.route("**/asyncstate/progress/**", progress)
    start_import(page, example)  # the job page is in mode "auto"
    assert page.locator(".asyncstate").get_attribute("data-asyncstate-mode") == "auto"

    page.wait_for_selector(".asyncstate.asyncstate--reconnecting", timeout=15000)
    page.wait_for_selector(".asyncstate.asyncstate--succeeded", timeout=30000)
    instance = page.evaluate(
        "() => { const i = jQuery('.asyncstate').asyncstate('instance');"
        " return {transport: i.transport, sseRefused: i.sseRefused, status: i.status}; }"
    )
    assert instance == {"transport": "poll", "sseRefused": True, "status": "succeeded"}
    assert page.evaluate("() => window.__asyncstateTransports") == ["sse", "poll"]
    # one stream tried, never again: no reconnect loop against an overloaded server
    assert len(events) == 1, events
    assert polls[0] == 503 and len(polls) >= 3  # it polled on to the end
    assert_no_end_before_the_last(widget_log(page), "asyncstate--succeeded")
    page.wait_for_timeout(500)  # what is tested is that nothing happens: no stream reopened
    assert len(events) == 1


def test_cancel_answered_503_is_retried_and_the_job_ends_cancelled(page, example) -> None:
    job_url = start_import(page, example)
    cancels: list[tuple[float, int]] = []

    def cancel(route: Any) -> None:
        if not cancels:
            cancels.append((time.monotonic(), 503))
            unavailable(route)
        else:
            cancels.append((time.monotonic(), 202))
            route.continue_()

    page.route("**/asyncstate/cancel/**", cancel)
    page.goto(job_url + "&mode=poll")
    page.wait_for_function(
        "() => +document.querySelector('.asyncstate-bar').getAttribute('aria-valuenow') > 0",
        timeout=15000,
    )
    page.click(".asyncstate-cancel")
    wait_for_status_text(page, CANCEL_RETRYING, timeout=5000)
    assert page.locator(".asyncstate-cancel").is_disabled()  # no second click while it retries
    page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    assert page.locator(".asyncstate-status").inner_text() == "Cancelled"

    assert [status for _, status in cancels] == [503, 202]
    assert 0.9 <= cancels[1][0] - cancels[0][0] < 1.9  # after Retry-After: 1
    log = widget_log(page)
    retrying = [e for e in log if CANCEL_RETRYING in e["status"]]
    assert retrying
    for entry in retrying:  # not shown as cancelling/cancelled before the server said so
        shown = set(entry["cls"].split())
        assert not shown.intersection({"asyncstate--cancelling", "asyncstate--cancelled"}), entry
        assert entry["cancelDisabled"] is True
    assert_no_end_before_the_last(log, "asyncstate--cancelled")

    token = page.locator("[data-asyncstate-token]").get_attribute("data-asyncstate-token")
    own = page.request.get(f"{example.url}/asyncstate/progress/{token}")
    assert own.status == 200 and own.json()["status"] == "cancelled"


def test_cancel_gives_up_after_its_retries_and_can_be_pressed_again(page, example) -> None:
    job_url = start_import(page, example)
    cancels: list[int] = []
    down = {"on": True}

    def cancel(route: Any) -> None:
        if down["on"]:
            cancels.append(503)
            unavailable(route)
        else:
            cancels.append(202)
            route.continue_()

    page.route("**/asyncstate/cancel/**", cancel)
    page.goto(job_url + "&mode=poll")
    # restart the widget with fewer retries (the option of the public API)
    page.evaluate("() => jQuery('.asyncstate').asyncstate({cancelRetries: 2})")
    page.wait_for_function(
        "() => +document.querySelector('.asyncstate-bar').getAttribute('aria-valuenow') > 0",
        timeout=15000,
    )
    page.click(".asyncstate-cancel")
    wait_for_status_text(page, "Could not cancel: ", timeout=10000)
    assert cancels == [503, 503, 503]  # the first try and two retries
    assert page.locator(".asyncstate-cancel").is_enabled()
    classes = (page.locator(".asyncstate").get_attribute("class") or "").split()
    assert "asyncstate--running" in classes and "asyncstate--cancelling" not in classes

    down["on"] = False  # the store is back: pressing again works
    page.click(".asyncstate-cancel")
    page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    assert cancels == [503, 503, 503, 202]
    assert_no_end_before_the_last(widget_log(page), "asyncstate--cancelled")


def test_open_stream_unavailable_event_then_drop(page, example) -> None:
    """A stream that opened, said the store is away, then dropped: polling takes over."""
    streams: list[str] = []

    def stream(route: Any) -> None:
        streams.append(route.request.url)
        doc = {
            "id": "x",
            "name": "import_products",
            "status": "running",
            "current": 1,
            "total": 2000,
            "percent": 0.05,
            "message": "1 of 2,000 products",
            "result": None,
            "error": None,
            "cancel_requested": False,
            "created_at": 1.0,
            "updated_at": 1.0,
        }
        body = (
            "retry: 60000\n\n"
            f"data: {json.dumps(doc)}\n\n"
            "event: unavailable\n"
            f"data: {json.dumps({'error': 'the job store is unavailable'})}\n\n"
        )
        # the whole body, then the connection ends: an established stream that dropped
        route.fulfill(
            status=200,
            headers={"Cache-Control": "no-store"},
            content_type="text/event-stream",
            body=body,
        )

    page.route("**/asyncstate/events/**", stream)
    start_import(page, example)
    page.wait_for_selector(".asyncstate.asyncstate--succeeded", timeout=30000)
    instance = page.evaluate(
        "() => { const i = jQuery('.asyncstate').asyncstate('instance');"
        " return {transport: i.transport, sseRefused: i.sseRefused}; }"
    )
    assert instance == {"transport": "poll", "sseRefused": False}
    assert len(streams) == 1
    log = widget_log(page)
    assert any(
        e["status"] == RECONNECTING and "asyncstate--reconnecting" in e["cls"].split() for e in log
    ), log
    assert_no_end_before_the_last(log, "asyncstate--succeeded")


@pytest.mark.parametrize(
    "example",
    # streams on (off by default on the threaded dev server), one per owner
    [{"FLASK_ASYNCSTATE_MAX_STREAMS": "20", "EXAMPLE_TUNING_MAX_STREAMS_PER_OWNER": "1"}],
    indirect=True,
)
def test_second_tab_over_the_real_stream_limit_polls(page, example) -> None:
    """No injected answer: the server itself refuses a second stream of the session with 429."""
    opened: list[tuple[str, int]] = []  # tab 1's streams, as the server answered them
    page.on(
        "response",
        lambda resp: opened.append((resp.url, resp.status)) if "/events/" in resp.url else None,
    )
    job_url = start_import(page, example)  # tab 1 (mode "auto") holds the session's one stream
    page.wait_for_function(
        "() => +document.querySelector('.asyncstate-bar').getAttribute('aria-valuenow') > 0",
        timeout=15000,
    )
    assert page.evaluate("() => jQuery('.asyncstate').asyncstate('instance').transport") == "sse"

    token = page.locator("[data-asyncstate-token]").get_attribute("data-asyncstate-token")
    stream_url = f"{example.url}/asyncstate/events/{token}"
    second = page.context.new_page()  # tab 2, same session
    second.add_init_script(RECORDER)
    refused: list[tuple[str, int, str | None]] = []

    def stream(route: Any) -> None:
        # Passed through, not answered here: the server's own answer, recorded on its way to
        # the browser (a refused EventSource is closed at once, so its response event may
        # never reach Playwright).
        response = route.fetch()
        refused.append((route.request.url, response.status, response.headers.get("retry-after")))
        route.fulfill(response=response)

    second.route("**/asyncstate/events/**", stream)
    answered: list[tuple[str, int]] = []
    second.on("response", lambda resp: answered.append((resp.url, resp.status)))
    second.on("pageerror", lambda exc: page.errors.append(str(exc)))
    second.goto(job_url)
    second.wait_for_selector(".asyncstate.asyncstate--succeeded", timeout=30000)
    page.wait_for_selector(".asyncstate.asyncstate--succeeded", timeout=30000)

    # one stream asked for, refused by the server, and never asked for again
    assert refused == [(stream_url, 429, "10")]
    assert opened == [(stream_url, 200)]  # tab 1 kept its one stream to the end
    polls = [status for url, status in answered if "/asyncstate/progress/" in url]
    assert polls and set(polls) == {200}
    assert second.evaluate("() => window.__asyncstateTransports") == ["sse", "poll"]
    assert second.evaluate("() => jQuery('.asyncstate').asyncstate('instance').sseRefused") is True
    assert page.evaluate("() => jQuery('.asyncstate').asyncstate('instance').transport") == "sse"
    assert_no_end_before_the_last(widget_log(second), "asyncstate--succeeded")
