"""Two example-app processes on two ports share one redis-server for jobs and sessions."""

from __future__ import annotations

import requests
from support.servers import AppProcess, csrf_token
from support.waiting import wait_until

XHR = {"X-Requested-With": "XMLHttpRequest"}
JSON = {"Accept": "application/json"}


def _progress(browser: requests.Session, app: AppProcess, token: str) -> requests.Response:
    return browser.get(f"{app.url}/asyncstate/progress/{token}", timeout=5)


def test_start_on_one_instance_watch_and_cancel_on_the_other(redis_url, tmp_path) -> None:
    with (
        AppProcess(tmp_path, REDIS_URL=redis_url) as a,
        AppProcess(tmp_path, REDIS_URL=redis_url) as b,
    ):
        browser = requests.Session()  # one cookie jar: the same session cookie goes to both
        csrf = {"X-CSRFToken": csrf_token(browser, a.url + "/")}  # the example has CSRFProtect
        started = browser.post(f"{a.url}/import", headers={**JSON, **csrf}, timeout=5)
        assert started.status_code == 202, started.text
        token = started.json()["token"]

        seen = []

        def three_values() -> bool:  # B reads the progress A writes: three different values
            response = _progress(browser, b, token)
            assert response.status_code == 200, response.text
            seen.append(response.json())
            return len({d["current"] for d in seen}) >= 3

        wait_until(three_values, 20, interval=0.1, message=lambda: f"3 values, saw {seen[-1:]}")
        assert seen[-1]["status"] == "running"
        assert seen[-1]["message"].endswith("of 2,000 products")

        cancelled = browser.post(
            f"{b.url}/asyncstate/cancel/{token}", headers={**XHR, **csrf}, timeout=5
        )
        assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"] is True
        doc = wait_until(
            lambda: (d := _progress(browser, a, token).json())["status"] == "cancelled" and d,
            10,
            interval=0.05,
            message="A reads 'cancelled'",
        )
        assert doc["current"] < 2000

        jobs_on_b = browser.get(f"{b.url}/asyncstate/jobs", timeout=5).json()
        assert [j["id"] for j in jobs_on_b] == [doc["id"]]

        stranger = requests.Session()
        for app in (a, b):
            assert _progress(stranger, app, token).status_code == 404
            assert stranger.get(f"{app.url}/asyncstate/jobs", timeout=5).json() == []
    print(
        f"started on :{a.port}, {len(seen)} polls and a cancel on :{b.port}; "
        f"stopped at {doc['current']} of 2,000"
    )
