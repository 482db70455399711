"""An app built the way a real user's is (``tests/real_app``), under gunicorn, in Chromium.

Two gunicorn servers of the app share the test's redis-server and ``SECRET_KEY``:
the main one with 2 gthread workers, a second instance with one. Each test signs
in its own users in a browser context of its own (cookies are per host, not per
port, so one context signed in on one server is signed in on both: one site
behind a load balancer). The app: Flask-Login, ``CSRFProtect`` on everything,
Flask-Session on Redis, the blueprint behind ``login_required``, the operator's
page for the user "admin" only, its own jQuery and a jQuery plugin of its own in
``<head>`` before ``asyncstate_assets()``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from support.gunicorn_server import GunicornServer
from support.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.reliability]

TESTS = Path(__file__).resolve().parent

#: An export: STEPS sections of DELAY s (8 s), long enough to reload, cancel and look at it.
STEPS = 80
DELAY = 0.1

#: Counts what ran as jQuery: every assignment to window.jQuery (each copy of jQuery that
#: runs makes one) and every script whose src ends with jquery.js that loaded (ran).
JQUERY_COUNTER = """
(() => {
  let value;
  window.__jqueryAssignments = 0;
  window.__jqueryScripts = [];
  Object.defineProperty(window, 'jQuery', {
    configurable: true,
    get() { return value; },
    set(v) { value = v; window.__jqueryAssignments += 1; },
  });
  document.addEventListener('load', (event) => {
    const el = event.target;
    if (el && el.tagName === 'SCRIPT' && /jquery\\.js$/.test(el.src)) {
      window.__jqueryScripts.push(el.src);
    }
  }, true);
})();
"""

JQUERY_STATE = """() => ({
  version: window.jQuery && window.jQuery.fn.jquery,
  highlight: typeof (window.jQuery && window.jQuery.fn.highlight),
  plugin: typeof (window.jQuery && window.jQuery.fn.asyncstate),
  widgetOnIt: !!(window.jQuery && window.jQuery('.asyncstate').data('asyncstate')),
  assignments: window.__jqueryAssignments,
  executed: window.__jqueryScripts,
  tags: Array.from(document.scripts).map(s => s.src).filter(s => /jquery\\.js$/.test(s)),
})"""

PERCENT = "() => +document.querySelector('.asyncstate-bar').getAttribute('aria-valuenow')"


class RealAppServer(GunicornServer):
    """:class:`GunicornServer` serving ``real_app.wsgi:app`` instead of the example app."""

    def command(self) -> list[str]:
        command = super().command()
        assert command[-1] == "example_app:create_app()", command
        return [*command[:-1], "--pythonpath", str(TESTS), "real_app.wsgi:app"]


@pytest.fixture(scope="module")
def site(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The main server (2 gthread workers) and a second instance (1 worker), one Redis."""
    flush = redis.Redis.from_url(redis_server.url)
    flush.flushall()  # what the redis_url fixture does: the server is ours alone
    flush.close()
    logs = tmp_path_factory.mktemp("real_app")
    env = {
        "REDIS_URL": redis_server.url,
        "REPORTS_STEPS": str(STEPS),
        "REPORTS_STEP_DELAY": str(DELAY),
    }
    main = RealAppServer(logs, workers=2, threads=8, env=env, graceful_timeout=5)
    other = RealAppServer(logs, workers=1, threads=8, env=env, graceful_timeout=5)
    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(server.start) for server in (main, other)]
    try:
        for future in started:
            future.result()
        yield SimpleNamespace(main=main, other=other)
    finally:
        main.stop()
        other.stop()
    for server in (main, other):
        log = server.log_text(100_000)
        assert "Traceback" not in log, log


class Browser:
    """One user's browser context: page errors and requests off the site are collected."""

    def __init__(self, browser: Any, *allowed: str) -> None:
        self.context = browser.new_context()
        self.context.add_init_script(JQUERY_COUNTER)
        self.errors: list[str] = []
        self.offsite: list[str] = []
        self.requests: list[str] = []
        self.allowed = allowed

    def page(self) -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(msg.text)
                if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                else None
            ),  # a failed load is reported with its URL below
        )
        page.on("request", self._request)
        page.on(
            "response",
            lambda r: self.errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        return page

    def _request(self, req: Any) -> None:
        self.requests.append(req.url)
        if not req.url.startswith(self.allowed):
            self.offsite.append(req.url)

    def close(self) -> None:
        self.context.close()


def sign_in(page: Any, base: str, name: str) -> None:
    """Open the reports, get sent to the sign-in form, sign in, land on the reports."""
    page.goto(base + "/reports/")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("#name", name)
    page.click("#login-submit")
    page.wait_for_url(base + "/reports/")


def start_export(page: Any) -> str:
    """Click "Export" (POST, then redirected to the GET page of the job); the job's token."""
    page.click("#export-submit")
    page.wait_for_url(re.compile(r"/reports/[^/]+$"))
    return token_on(page)


def token_on(page: Any) -> str:
    token = page.locator(".asyncstate").get_attribute("data-asyncstate-token")
    assert token, page.content()
    return token


def progress(page: Any, base: str, token: str) -> dict[str, Any]:
    answer = page.request.get(f"{base}/asyncstate/progress/{token}")
    assert answer.status == 200, answer.text()
    return answer.json()


def wait_percent_above(page: Any, value: float, timeout: float = 15000) -> float:
    page.wait_for_function(f"() => ({PERCENT})() > {value}", timeout=timeout)
    return float(page.evaluate(PERCENT))


def check_one_jquery(page: Any, base: str) -> dict[str, Any]:
    """The page's own jQuery is the only one that ran, and still carries its plugin."""
    found = page.evaluate(JQUERY_STATE)
    assert found["highlight"] == "function", found
    assert found["plugin"] == "function" and found["widgetOnIt"], found
    assert found["assignments"] == 1, found
    assert found["executed"] == [f"{base}/vendor/jquery.js"], found
    assert found["tags"] == [f"{base}/vendor/jquery.js"], found
    return found


def test_export_reload_result_link_and_one_jquery(browser: Any, site: Any) -> None:
    base = site.main.url
    user = Browser(browser, base + "/")
    page = user.page()
    sign_in(page, base, "alice")
    assert page.evaluate("() => typeof jQuery.fn.highlight") == "function"

    token = start_export(page)
    first = wait_percent_above(page, 0)
    assert first < 100
    check_one_jquery(page, base)

    page.reload()  # a reload mid-job shows the same job and starts none
    assert token_on(page) == token
    after = wait_percent_above(page, first)  # from where it was, going on
    assert after < 100
    jobs = page.request.get(f"{base}/asyncstate/jobs").json()
    assert [job["id"] for job in jobs] == [progress(page, base, token)["id"]], jobs
    jquery = check_one_jquery(page, base)

    # done: the widget fetches the result slot and shows the download link
    page.wait_for_selector(".asyncstate.asyncstate--succeeded", timeout=20000)
    link = page.locator(".asyncstate-result a.download")
    link.wait_for(state="visible", timeout=5000)
    href = link.get_attribute("href") or ""
    assert href.startswith(base + "/reports/download/"), href  # url_for in the job, under gunicorn
    assert link.inner_text() == f"Download {href.rsplit('/', 1)[1]}"
    assert any(f"/asyncstate/result/{token}" in url for url in user.requests)
    # the page's plugin reacted to the widget's event, on the page's own jQuery
    page.wait_for_function("() => jQuery('a.download').hasClass('highlighted')", timeout=5000)
    download = page.request.get(href)
    assert download.status == 200 and download.headers["content-type"].startswith("text/csv")
    assert "# for alice" in download.text()
    check_one_jquery(page, base)

    seen = len(user.requests)
    page.reload()  # again after a reload: rendered with the page, nothing to fetch
    assert page.locator(".asyncstate-result a.download").get_attribute("href") == href
    page.wait_for_selector(".asyncstate.asyncstate--succeeded", timeout=10000)
    assert page.locator(".asyncstate-result").is_visible()
    assert not any("/asyncstate/result/" in url for url in user.requests[seen:])
    check_one_jquery(page, base)
    assert user.errors == [] and user.offsite == [], (user.errors, user.offsite)
    user.close()
    print(
        f"export {token[:12]}...: {first:.0f}% -> reload -> {after:.0f}%, one job; link {href};"
        f" jQuery {jquery['version']} once, $.fn.highlight kept"
    )


def test_cancel_with_csrf_on(browser: Any, site: Any) -> None:
    base = site.main.url
    user = Browser(browser, base + "/")
    page = user.page()
    sign_in(page, base, "bob")
    token = start_export(page)
    wait_percent_above(page, 0)

    # CSRFProtect is on: the same-origin header alone is not enough
    bare = page.request.post(
        f"{base}/asyncstate/cancel/{token}", headers={"X-Requested-With": "XMLHttpRequest"}
    )
    assert bare.status == 403 and "CSRF" in bare.json()["error"], bare.text()
    assert progress(page, base, token)["status"] == "running"

    with page.expect_response(lambda r: f"/asyncstate/cancel/{token}" in r.url) as answered:
        page.click(".asyncstate-cancel")
    cancel = answered.value
    assert cancel.status == 202, cancel.text()
    assert cancel.request.headers.get("x-csrftoken"), cancel.request.headers
    page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    assert "Cancelled" in page.locator(".asyncstate-status").inner_text()
    done = progress(page, base, token)
    assert done["status"] == "cancelled" and done["current"] < STEPS, done
    assert not page.locator(".asyncstate-result").is_visible()
    assert user.errors == [] and user.offsite == [], (user.errors, user.offsite)
    user.close()
    print(f"cancel without CSRF token 403; with it 202, cancelled at {done['current']}/{STEPS}")


class _Csrf(HTMLParser):
    token: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("name") == "csrf-token" and self.token is None:
            self.token = found.get("content")


def _page_csrf(html: str) -> str:
    parser = _Csrf()
    parser.feed(html)
    assert parser.token, html
    return parser.token


def test_inline_job_builds_links_at_the_test_clients_base_url(redis_server: Any) -> None:
    """No browser: the same job run inline (``ASYNCSTATE_EXECUTOR``) by Flask's test client."""
    from real_app import asyncstate, create_app  # tests/ is on sys.path (pyproject: pythonpath)

    app = create_app(
        {
            "ASYNCSTATE_EXECUTOR": "inline",
            "SECRET_KEY": "inline-test-secret",
            # db 1: none of this shows on the gunicorn servers' operator page (db 0)
            "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/1",
            "REPORTS_STEPS": 3,
            "REPORTS_STEP_DELAY": 0.0,
        }
    )
    base = "https://reports.example"
    client = app.test_client()
    try:
        login_page = client.get("/login", base_url=base)
        assert login_page.status_code == 200
        signed_in = client.post(
            "/login",
            data={"csrf_token": _page_csrf(login_page.text), "name": "erin"},
            headers={"Referer": f"{base}/login"},  # Flask-WTF checks it over https
            base_url=base,
        )
        assert signed_in.status_code == 302, signed_in.text
        reports = client.get("/reports/", base_url=base)
        started = client.post(
            "/reports/export",
            data={"csrf_token": _page_csrf(reports.text)},
            headers={"Referer": f"{base}/reports/"},
            base_url=base,
        )
        assert started.status_code == 302, started.text
        shown = client.get(started.location, base_url=base)  # the job ran inside start()
        assert shown.status_code == 200
        links = re.findall(r'<a class="download" href="([^"]+)">Download ([^<]+)</a>', shown.text)
        assert len(links) == 1, shown.text
        href, name = links[0]
        assert href == f"{base}/reports/download/{name}", href
        jobs = client.get("/asyncstate/jobs", base_url=base).json
        assert [job["status"] for job in jobs] == ["succeeded"]
        assert jobs[0]["result"] == {"url": href, "name": name}
        assert client.get(href).status_code == 200  # base_url is in the link
    finally:
        asyncstate.app_state(app).shutdown(2)
    print(f"inline under the test client: {href}")


def _pid_of(instance: str) -> int:
    """The pid in an instance id (``host-pid-random``)."""
    return int(instance.rsplit("-", 2)[1])


def test_admin_page_lists_two_instances_and_cancels_one_job(browser: Any, site: Any) -> None:
    main, other = site.main, site.other
    allowed = (main.url + "/", other.url + "/")
    carol = Browser(browser, *allowed)
    carol_page = carol.page()
    sign_in(carol_page, main.url, "carol")
    carol_token = start_export(carol_page)
    dave = Browser(browser, *allowed)
    dave_page = dave.page()
    sign_in(dave_page, other.url, "dave")
    dave_token = start_export(dave_page)
    wait_percent_above(carol_page, 0)
    wait_percent_above(dave_page, 0)
    carol_job = progress(carol_page, main.url, carol_token)["id"]
    dave_job = progress(dave_page, other.url, dave_token)["id"]

    # not for anyone but "admin": a user gets 403, a visitor the sign-in page
    refused = carol_page.request.get(f"{main.url}/asyncstate/admin")
    assert refused.status == 403, refused.text()
    assert carol_page.request.get(f"{main.url}/asyncstate/admin/jobs").status == 403
    anonymous = browser.new_context()
    visitor = anonymous.request.get(f"{main.url}/asyncstate/admin", max_redirects=0)
    assert visitor.status == 302 and "/login" in visitor.headers["location"], visitor.headers
    anonymous.close()

    boss = Browser(browser, *allowed)
    admin = boss.page()
    sign_in(admin, main.url, "admin")
    admin.goto(main.url + "/asyncstate/admin")
    carol_row = admin.locator(f'tr.asyncstate-admin-job[data-job-id="{carol_job}"]')
    dave_row = admin.locator(f'tr.asyncstate-admin-job[data-job-id="{dave_job}"]')
    carol_row.wait_for(timeout=10000)
    dave_row.wait_for(timeout=10000)
    assert carol_row.get_attribute("data-status") == "running"
    assert dave_row.get_attribute("data-status") == "running"

    # the two jobs run in two instances, one in each server, both listed
    carol_instance = carol_row.locator(".asyncstate-admin-instance").inner_text().strip()
    dave_instance = dave_row.locator(".asyncstate-admin-instance").inner_text().strip()
    assert _pid_of(carol_instance) in main.current_workers(), carol_instance
    assert _pid_of(dave_instance) in other.current_workers(), dave_instance
    for instance in (carol_instance, dave_instance):
        admin.locator(f'tr.asyncstate-admin-instance[data-instance-id="{instance}"]').wait_for(
            timeout=10000
        )

    # cancel dave's job (running on the other server) from the main server's admin page
    with admin.expect_response(lambda r: "/asyncstate/admin/cancel/" in r.url) as answered:
        dave_row.locator("button.asyncstate-admin-cancel").click()
    assert answered.value.status == 202, answered.value.text()
    wait_until(
        lambda: dave_row.get_attribute("data-status") == "cancelled",
        10,
        interval=0.1,
        message=lambda: f"dave's row says cancelled ({dave_row.get_attribute('data-status')})",
    )
    dave_page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=10000)
    carol_now = progress(carol_page, main.url, carol_token)
    assert carol_now["status"] == "running", carol_now
    assert carol_row.get_attribute("data-status") == "running"
    assert not carol_row.locator("button.asyncstate-admin-cancel").is_disabled()
    later = wait_percent_above(carol_page, carol_now["percent"])  # still going
    dave_done = progress(dave_page, other.url, dave_token)
    assert dave_done["status"] == "cancelled" and dave_done["current"] < STEPS, dave_done

    for user in (carol, dave, boss):
        assert user.errors == [] and user.offsite == [], (user.errors, user.offsite)
        user.close()
    print(
        f"admin on {main.url}: jobs of {carol_instance} and {dave_instance} listed; cancelled"
        f" dave's at {dave_done['current']}/{STEPS}, carol's went on to {later:.0f}%"
    )
