"""The example app in headless Chromium (Debian's, driven by Playwright): bar, cancel, isolation,
on its jQuery page and on its htmx and plain-module pages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.servers import AppProcess
from support.waiting import wait_until

pytestmark = pytest.mark.browser


@pytest.fixture
def example(tmp_path) -> Iterator[AppProcess]:
    """The example app as the README runs it: embedded in-memory store, no Redis."""
    # short event streams, so the SSE run also crosses a server-asked reconnect; streams on
    # (the dev server is threaded: off by default) with a cap, as deployment.rst says
    with AppProcess(
        tmp_path,
        SESSION_DIR=str(tmp_path / "sessions"),
        EXAMPLE_TUNING_SSE_MAX_AGE="1.0",
        FLASK_ASYNCSTATE_MAX_STREAMS="20",
    ) as app:
        yield app


@pytest.mark.parametrize("mode", ["poll", "auto"])
def test_import_progress_and_cancel_in_the_browser(browser, example, tmp_path, mode) -> None:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    external: list[str] = []
    page.on(
        "request", lambda req: None if req.url.startswith(example.url) else external.append(req.url)
    )
    streams: list[str] = []  # the event streams the widget opened
    page.on(
        "request", lambda req: streams.append(req.url) if "/asyncstate/events/" in req.url else None
    )

    page.goto(example.url + "/")
    page.click("#start-import")
    page.wait_for_url("**/?token=*")
    if mode == "poll":
        page.goto(page.url + "&mode=poll")
    bar = page.locator(".asyncstate-bar")
    bar.wait_for()
    page.wait_for_function(
        "() => +document.querySelector('.asyncstate-bar').getAttribute('aria-valuenow') > 0",
        timeout=15000,
    )
    first = int(bar.get_attribute("aria-valuenow") or 0)
    page.wait_for_function(
        f"() => +document.querySelector('.asyncstate-bar').getAttribute('aria-valuenow') > {first}",
        timeout=15000,
    )
    risen = int(bar.get_attribute("aria-valuenow") or 0)
    transport = page.evaluate("() => jQuery('.asyncstate').data('asyncstate').transport")
    assert transport == ("sse" if mode == "auto" else "poll")
    if mode == "auto":  # past the 1 s stream lifetime: reconnected, still pushed, still rising
        # Playwright hands events to Python only while it works: wait in the page, check here
        wait_until(
            lambda: page.wait_for_timeout(50) or len(streams) >= 2,
            10,
            interval=0,
            message=lambda: f"the widget reopens its stream (opened {streams})",
        )
        page.wait_for_function(
            f"() => +document.querySelector('.asyncstate-bar').getAttribute('aria-valuenow') > {risen}",
            timeout=15000,
        )
        assert page.evaluate("() => jQuery('.asyncstate').data('asyncstate').transport") == "sse"
    assert 0 < first < risen < 100
    assert "of 2,000 products" in page.locator(".asyncstate-message").inner_text()

    page.click(".asyncstate-cancel")
    page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    assert "Cancelled" in page.locator(".asyncstate-status").inner_text()
    page.screenshot(path=str(tmp_path / f"cancelled-{mode}.png"), full_page=True)

    token = page.locator("[data-asyncstate-token]").get_attribute("data-asyncstate-token")
    own = page.request.get(f"{example.url}/asyncstate/progress/{token}")
    assert own.status == 200 and own.json()["status"] == "cancelled"

    other = browser.new_context()  # another browser: another session cookie
    response = other.request.get(f"{example.url}/asyncstate/progress/{token}")
    assert response.status == 404
    assert response.headers["content-type"].startswith("application/json")
    other_page = other.new_page()
    other_page.goto(f"{example.url}/?token={token}")
    other_page.wait_for_selector(".asyncstate.asyncstate--notfound", timeout=15000)
    other.close()

    page.goto(example.url + "/my-jobs")
    page.wait_for_selector("#jobs .asyncstate-job .asyncstate--cancelled", timeout=15000)
    assert page.locator("#jobs .asyncstate-job .asyncstate--cancelled").count() == 1
    assert errors == [] and external == []
    context.close()
    print(
        f"{mode}: aria-valuenow rose {first} -> {risen} over {transport}, cancelled;"
        f" screenshot {tmp_path / f'cancelled-{mode}.png'}"
    )


@pytest.fixture(scope="module")
def shared_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    """One example app for the tests of its htmx and module pages (a session each)."""
    tmp = tmp_path_factory.mktemp("example")
    with AppProcess(
        tmp, SESSION_DIR=str(tmp / "sessions"), FLASK_ASYNCSTATE_MAX_STREAMS="20"
    ) as app:
        yield app


@pytest.mark.parametrize("client", ["htmx", "module"])
def test_the_htmx_and_module_pages_follow_and_cancel_the_import(
    browser, shared_example, client
) -> None:
    """The example's other two pages (streams on: htmx's SSE extension, the element's
    mode "auto"): the bar rises, Cancel stops the import, a reload shows it cancelled."""
    url = shared_example.url
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))

    page.goto(f"{url}/{client}")
    page.click("#start-import")
    page.wait_for_url(f"**/{client}?token=*")
    above = "(n) => +document.querySelector('.asyncstate-bar').getAttribute('aria-valuenow') > n"
    page.wait_for_function(above, arg=0, timeout=15000)
    first = int(page.locator(".asyncstate-bar").get_attribute("aria-valuenow") or 0)
    page.wait_for_function(above, arg=first, timeout=15000)
    assert "of 2,000 products" in page.locator(".asyncstate-message").inner_text()
    assert any("/asyncstate/events/" in u for u in requests)  # the stream, either way
    if client == "module":
        assert (
            page.evaluate("() => document.querySelector('asyncstate-progress').widget.transport")
            == "sse"
        )

    page.click(".asyncstate-cancel")
    page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    assert page.locator(".asyncstate-status").inner_text() == "Cancelled"
    page.reload()
    page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    token = page.url.split("token=", 1)[1]
    assert page.request.get(f"{url}/asyncstate/progress/{token}").json()["status"] == "cancelled"
    assert page.evaluate("() => typeof window.jQuery") == "undefined"
    assert not [u for u in requests if not u.startswith(url)]  # nothing off the app
    assert errors == []
    context.close()
