"""The example app's users, devices and languages in headless Chromium (Debian's, via Playwright).

Signed-in users own their jobs across browsers; another user, even on the same
browser, sees none of them (their tokens answer "Not found"); signing out
cancels nothing. Also: the elapsed/ETA line, the widget in French, and an
import (``job.iter``) that stops within one product of a cancel.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.servers import AppProcess
from support.waiting import wait_until

pytestmark = pytest.mark.browser

XHR = {"X-Requested-With": "XMLHttpRequest"}
#: 2,000 products, 100 batches of 0.2 s: 20 s per import, long enough to watch and cancel.
SLOW = {"EXAMPLE_PRODUCTS": "2000", "EXAMPLE_BATCH": "20", "EXAMPLE_PAUSE": "0.2"}
ETA = re.compile(r"^(\d+):(\d{2}) elapsed \u00b7 about (\d+) s left$")
ETA_FR = re.compile(r"^(\d+):(\d{2}) écoulées \u00b7 encore environ (\d+) s$")


@pytest.fixture
def serve_example(tmp_path) -> Iterator[Callable[..., AppProcess]]:
    """Start the example as the README runs it (``flask run``, in-memory store); all stopped after."""
    started: list[AppProcess] = []

    def start(**env: str) -> AppProcess:
        app = AppProcess(tmp_path, SESSION_DIR=str(tmp_path / "sessions"), **{**SLOW, **env})
        started.append(app.start())
        return app

    yield start
    for app in started:
        app.stop()


@pytest.fixture
def example(serve_example: Callable[..., AppProcess]) -> AppProcess:
    return serve_example()


class Device:
    """One browser context (its own cookies: its own session) and a page in it."""

    def __init__(self, browser: Any, base: str, **options: Any) -> None:
        self.base = base
        self.context = browser.new_context(**options)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.external: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on(
            "request",
            lambda req: None if req.url.startswith(base) else self.external.append(req.url),
        )

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)

    def login(self, name: str) -> None:
        self.goto("/login")
        self.page.fill("#name", name)
        self.page.click("#login-submit")
        self.page.wait_for_selector("#signed-in", timeout=10000)
        assert self.page.locator("#signed-in").inner_text() == f"Signed in as {name}"

    def logout(self) -> None:
        self.page.click("#sign-out")
        self.page.wait_for_selector("#sign-in", timeout=10000)

    def start_import(self) -> tuple[str, str]:
        """Press the import button on the index page: (the job page's URL, the job's token)."""
        self.goto("/")
        self.page.click("#start-import")
        self.page.wait_for_url("**/?token=*")
        token = self.page.locator("[data-asyncstate-token]").get_attribute("data-asyncstate-token")
        assert token
        return self.page.url, token

    def widget_job_id(self) -> str:
        """The id of the job the page's (first) widget shows, once it loaded its document."""
        handle = self.page.wait_for_function(
            "() => { const w = jQuery('.asyncstate').first().data('asyncstate');"
            " return w && w.doc && w.doc.id; }",
            timeout=15000,
        )
        return str(handle.json_value())

    def jobs(self) -> list[dict[str, Any]]:
        """``GET /asyncstate/jobs`` with this device's cookies."""
        answer = self.page.request.get(self.base + "/asyncstate/jobs")
        assert answer.status == 200, answer.text()
        return answer.json()  # type: ignore[no-any-return]

    def progress(self, token: str) -> Any:
        return self.page.request.get(f"{self.base}/asyncstate/progress/{token}")

    def listed_on_my_jobs(self) -> list[str]:
        """The job ids the My jobs page shows a widget for."""
        self.goto("/my-jobs")
        self.page.wait_for_selector(".asyncstate-jobs", timeout=10000)
        return self.page.locator(".asyncstate-job").evaluate_all(  # type: ignore[no-any-return]
            "els => els.map(e => e.dataset.jobId)"
        )

    def cancel_via_api(self, token: str) -> Any:
        csrf = self.page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
        return self.page.request.post(
            f"{self.base}/asyncstate/cancel/{token}", headers={**XHR, "X-CSRFToken": csrf}
        )

    def wait_status(self, token: str, done: Callable[[str], bool], within: float = 15) -> Any:
        return wait_until(
            lambda: (doc := self.progress(token).json()) and done(doc["status"]) and doc,
            within,
            interval=0.05,
            message=f"job {token[:12]}... reaches the awaited status",
        )

    def check_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.external == [], self.external

    def close(self) -> None:
        self.context.close()


def _status_text(page: Any) -> str:
    return page.locator(".asyncstate-status").first.inner_text()


def test_the_next_user_of_a_browser_sees_none_of_the_previous_users_jobs(browser, example) -> None:
    shared = Device(browser, example.url)  # one browser context: one cookie jar for both users
    shared.login("alice")
    alice_url, alice_token = shared.start_import()
    alice_job = shared.widget_job_id()
    assert [j["id"] for j in shared.jobs()] == [alice_job]
    shared.logout()
    assert shared.jobs() == []  # anonymous now: not alice's jobs

    shared.login("bob")
    assert shared.jobs() == []
    assert shared.listed_on_my_jobs() == []
    assert shared.page.locator(".asyncstate-jobs-empty").inner_text() == "No jobs yet"
    shared.page.goto(alice_url)  # alice's job page, her token in it
    shared.page.wait_for_selector(".asyncstate.asyncstate--notfound", timeout=15000)
    assert _status_text(shared.page) == "Not found"
    assert shared.progress(alice_token).status == 404
    assert shared.cancel_via_api(alice_token).status == 404  # nor can bob cancel it
    _bob_url, bob_token = shared.start_import()  # bob's own import is not alice's
    bob_job = shared.widget_job_id()
    assert bob_job != alice_job and [j["id"] for j in shared.jobs()] == [bob_job]
    shared.logout()

    shared.login("alice")  # back: her job is there, still running (signing out cancelled nothing)
    assert [(j["id"], j["status"]) for j in shared.jobs()] == [(alice_job, "running")]
    assert shared.listed_on_my_jobs() == [alice_job]
    shared.page.wait_for_selector(".asyncstate.asyncstate--running", timeout=15000)
    assert shared.progress(bob_token).status == 404  # and bob's is not hers
    shared.page.click(".asyncstate-cancel")  # cancel it from My jobs
    shared.page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    assert _status_text(shared.page) == "Cancelled"
    shared.page.goto(alice_url)  # the first token still works for her
    shared.page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    shared.logout()
    shared.login("bob")
    assert shared.cancel_via_api(bob_token).status == 202
    shared.check_clean()
    shared.close()
    print(f"alice's job {alice_job[:8]}: 404 to bob on the same browser, hers again after sign-in")


def test_one_user_on_two_devices_sees_one_job_and_cancels_it_from_either(browser, example) -> None:
    laptop, phone = Device(browser, example.url), Device(browser, example.url)
    laptop.login("carol")
    laptop_url, _token = laptop.start_import()  # the laptop keeps the job page open
    job = laptop.widget_job_id()
    laptop.page.wait_for_selector(".asyncstate.asyncstate--running", timeout=15000)

    phone.login("carol")
    assert [j["id"] for j in phone.jobs()] == [job]
    # pressing import on the phone starts nothing: it shows the running import
    phone.goto("/")
    phone.page.click("#start-import")
    phone.page.wait_for_url("**/?token=*")
    assert phone.page.locator(".flash").inner_text() == "An import is already running: here it is"
    assert phone.widget_job_id() == job
    assert [j["id"] for j in phone.jobs()] == [job]

    assert phone.listed_on_my_jobs() == [job]
    phone.page.wait_for_selector(".asyncstate.asyncstate--running", timeout=15000)
    phone.page.click(".asyncstate-cancel")
    phone.page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    # the laptop's page, open all along, sees the phone's cancel
    laptop.page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    assert _status_text(laptop.page) == "Cancelled"
    assert laptop.page.url == laptop_url
    assert [(j["id"], j["status"]) for j in laptop.jobs()] == [(job, "cancelled")]
    for device in (laptop, phone):
        device.check_clean()
        device.close()
    print(
        f"carol's job {job[:8]}: one job on two devices, cancelled on the phone, seen on the laptop"
    )


def test_another_user_opening_a_users_job_page_gets_not_found(browser, example) -> None:
    dave, erin, anonymous = (Device(browser, example.url) for _ in range(3))
    dave.login("dave")
    url, token = dave.start_import()
    dave.widget_job_id()
    erin.login("erin")
    for other in (erin, anonymous):
        other.page.goto(url)
        other.page.wait_for_selector(".asyncstate.asyncstate--notfound", timeout=15000)
        assert _status_text(other.page) == "Not found"
        answer = other.progress(token)
        assert answer.status == 404 and answer.headers["content-type"].startswith(
            "application/json"
        )
        assert other.jobs() == []
    assert erin.listed_on_my_jobs() == []
    assert dave.progress(token).json()["status"] in ("queued", "running")  # untouched
    assert dave.cancel_via_api(token).status == 202
    for device in (dave, erin, anonymous):
        device.check_clean()
        device.close()


def test_the_eta_appears_and_shrinks_while_the_import_runs(browser, example, tmp_path) -> None:
    device = Device(browser, example.url)
    _url, token = device.start_import()
    eta = device.page.locator(".asyncstate-eta")
    seen: list[tuple[int, int]] = []  # (elapsed s, seconds left) as the page showed them

    def shown() -> tuple[int, int] | None:
        found = ETA.match(eta.inner_text().strip())
        if found is None:
            return None
        value = (int(found[1]) * 60 + int(found[2]), int(found[3]))
        if not seen or seen[-1] != value:
            seen.append(value)
        return value

    first = wait_until(
        shown, 15, interval=0.1, message=lambda: f"an ETA line: {eta.inner_text()!r}"
    )
    assert first[1] >= 5, seen  # a 20 s import, seen in its first seconds (and "s", not "min")
    later = wait_until(
        lambda: (now := shown()) and now[1] < first[1] and now[0] > first[0] and now,
        15,
        interval=0.1,
        message=lambda: f"the ETA shrinks below {first}: {seen}",
    )
    device.page.screenshot(path=str(tmp_path / "eta.png"))
    assert device.cancel_via_api(token).status == 202
    device.page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    final = eta.inner_text().strip()
    assert re.fullmatch(r"\d+:\d{2} elapsed", final), final  # no estimate once it ended
    device.check_clean()
    device.close()
    print(f"ETA {first} -> {later} (elapsed s, s left); after the cancel: {final!r}; {seen}")


def test_the_widget_speaks_french(browser, example, tmp_path) -> None:
    device = Device(browser, example.url)
    page = device.page
    device.goto("/")
    page.click("#lang-fr")
    page.wait_for_selector("html[lang=fr]")
    assert page.locator("#start-import").inner_text() == "Importer les produits"
    assert page.locator("#sign-in").inner_text() == "Se connecter"
    page.click("#start-import")
    page.wait_for_url("**/?token=*")
    assert page.locator("html").get_attribute("lang") == "fr"  # the choice stays in the session
    token = page.locator("[data-asyncstate-token]").get_attribute("data-asyncstate-token")
    page.wait_for_selector(".asyncstate.asyncstate--running", timeout=15000)
    assert page.locator(".asyncstate-cancel").inner_text() == "Annuler"
    assert _status_text(page) == "En cours"
    bar = page.locator(".asyncstate-bar")
    assert bar.get_attribute("aria-label") == "Progression de l’importation des produits"
    wait_until(
        lambda: re.search(
            r"\d+ sur 2000 produits$", page.locator(".asyncstate-message").inner_text()
        ),
        15,
        interval=0.1,
        message="the progress message in French",
    )
    eta = wait_until(
        lambda: ETA_FR.match(page.locator(".asyncstate-eta").inner_text().strip()),
        15,
        interval=0.1,
        message=lambda: f"the ETA in French: {page.locator('.asyncstate-eta').inner_text()!r}",
    )
    page.screenshot(path=str(tmp_path / "french.png"), full_page=True)
    page.click(".asyncstate-cancel")
    page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    assert _status_text(page) == "Annulé"

    device.goto("/my-jobs")
    assert page.locator("h1").inner_text() == "Mes tâches"
    page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    assert _status_text(page) == "Annulé"
    assert page.locator(".asyncstate-cancel").inner_text() == "Annuler"
    device.goto("/?token=not-a-token")
    page.wait_for_selector(".asyncstate.asyncstate--notfound", timeout=15000)
    assert _status_text(page) == "Introuvable"

    english = Device(browser, example.url)  # another visitor keeps English
    english.goto(f"/?token={token}")
    english.page.wait_for_selector(".asyncstate.asyncstate--notfound", timeout=15000)
    assert _status_text(english.page) == "Not found"
    assert english.page.locator(".asyncstate-cancel").inner_text() == "Cancel"
    for d in (device, english):
        d.check_clean()
        d.close()
    print(f"French widget: Annuler, En cours, {eta[0]!r}, Annulé, Introuvable")


def test_a_cancelled_import_stops_within_one_product(browser, serve_example) -> None:
    # one product per batch, 0.4 s each, progress written every 0.05 s: each step is visible
    example = serve_example(
        EXAMPLE_PRODUCTS="200",
        EXAMPLE_BATCH="1",
        EXAMPLE_PAUSE="0.4",
        FLASK_ASYNCSTATE_FLUSH_INTERVAL="0.05",
    )
    device = Device(browser, example.url)
    _url, token = device.start_import()
    device.page.wait_for_selector(".asyncstate.asyncstate--running", timeout=15000)
    last = {"current": -1}

    def just_stepped() -> int | None:
        """The count right after it moved past 2: a product has only just started."""
        now = device.progress(token).json()["current"]
        moved, last["current"] = now != last["current"] and last["current"] >= 0, now
        return now if moved and now >= 2 else None

    observed = wait_until(just_stepped, 15, interval=0.02, message="the import moves")
    requested_at = time.monotonic()
    with device.page.expect_response(lambda r: "/asyncstate/cancel/" in r.url) as answer:
        device.page.click(".asyncstate-cancel")
    cancel = answer.value
    assert cancel.status == 202, cancel.text()
    at_cancel = max(observed, cancel.json()["current"])
    final = device.wait_status(token, lambda s: s not in ("queued", "running"), within=10)
    stopped_after = time.monotonic() - requested_at
    assert final["status"] == "cancelled", final
    assert at_cancel <= final["current"] <= at_cancel + 1, (observed, cancel.json(), final)
    assert final["current"] < 200
    device.page.wait_for_selector(".asyncstate.asyncstate--cancelled", timeout=15000)
    device.check_clean()
    device.close()
    print(
        f"cancel at {at_cancel} of 200 (0.4 s per product): stopped at {final['current']},"
        f" final document {stopped_after:.2f} s after the click"
    )
