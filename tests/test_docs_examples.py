"""The example apps of the docs (docs/examples/*.py) do what their pages say.

Each example is a complete app file that the docs include with ``literalinclude``.
It is imported here by path, configured through the environment as its run line
says (``FLASK_*`` variables, read by ``app.config.from_prefixed_env()``), and driven
with the Flask test client the way a browser would: start a job, follow the
redirect, poll ``/asyncstate/progress/<token>``.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient

from flask_asyncstate.templating import DEFAULT_LABELS

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
HEADERS = {"X-Requested-With": "XMLHttpRequest"}  # the cancel route's same-origin proof
FINAL = {"succeeded", "failed", "cancelled", "lost"}
#: Module constants of the examples (sizes and pauses of their made-up work).
CONSTANTS = {"PAUSE", "STEPS", "PRODUCTS", "PAGES", "FILES"}
_serial = itertools.count()


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ModuleType]]:
    """``load("iter", ASYNCSTATE_EXECUTOR="inline", PAUSE=0)``: import docs/examples/iter.py afresh
    (``load("recipe")``: the package docs/examples/recipe/).

    Keyword arguments are ``FLASK_<KEY>`` environment variables (the app reads them
    with ``from_prefixed_env``), except :data:`CONSTANTS`, which replace the module's
    constants of that name before any job runs.
    """
    loaded: list[ModuleType] = []

    def load_example(name: str | Path, **settings: Any) -> ModuleType:
        monkeypatch.setenv("FLASK_SECRET_KEY", "docs-examples-test")
        monkeypatch.setenv("FLASK_TESTING", "true")
        monkeypatch.setenv("FLASK_ASYNCSTATE_FLUSH_INTERVAL", "0.05")
        for key, value in settings.items():
            if key not in CONSTANTS:
                monkeypatch.setenv(f"FLASK_{key}", str(value))
        path = name if isinstance(name, Path) else EXAMPLES / f"{name}.py"
        if not path.exists() and (EXAMPLES / str(name)).is_dir():
            path = EXAMPLES / str(name)  # a package: docs/examples/recipe/
        module_name = f"docs_example_{path.stem}_{next(_serial)}"
        if path.is_dir():
            spec = importlib.util.spec_from_file_location(
                module_name, path / "__init__.py", submodule_search_locations=[str(path)]
            )
        else:
            spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        for key, value in settings.items():
            if key in CONSTANTS:
                assert hasattr(module, key), f"{name}.py has no {key}"
                setattr(module, key, value)
        loaded.append(module)
        return module

    yield load_example
    for module in loaded:
        module.asyncstate.shutdown(2)
        for key in [k for k in sys.modules if k.startswith(f"{module.__name__}.")]:
            del sys.modules[key]  # a package's modules
        sys.modules.pop(module.__name__, None)


def token_of(response: Any) -> str:
    """The job token in the ``?token=`` of a post/redirect/get answer."""
    assert response.status_code == 302, response.status_code
    return parse_qs(urlsplit(response.headers["Location"]).query)["token"][0]


def poll(
    client: FlaskClient, token: str, until: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    """Poll the progress route as the widget does until ``until(document)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/asyncstate/progress/{token}")
        assert response.status_code == 200, response.get_data(as_text=True)
        doc = response.get_json()
        if until(doc):
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.02)


def finished(doc: dict[str, Any]) -> bool:
    return doc["status"] in FINAL


def job_id(module: ModuleType, token: str) -> str:
    with module.app.app_context():
        return module.asyncstate.handle(token).id


def widget_tokens(html: str) -> list[str]:
    return re.findall(r'data-asyncstate-token="([^"]*)"', html)


def flashes(html: str) -> list[str]:
    """The flashed messages the examples' pages show (``<p class="flash">``)."""
    return re.findall(r'<p class="flash">([^<]*)</p>', html)


# -- README.md ------------------------------------------------------------------------


def test_readme_first_example(load, tmp_path: Path) -> None:
    readme = (EXAMPLES.parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## In fifteen lines", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "readme_app.py"
    path.write_text(code, encoding="utf-8")
    example = load(path)
    client = example.app.test_client()
    response = client.post("/import")
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    (token,) = widget_tokens(page)
    doc = poll(client, token, finished)
    assert doc["status"] == "succeeded" and doc["result"] == {"imported": 5000}
    assert doc["message"] == "5,000 of 5,000 products"
    client.get(response.headers["Location"])  # a reload starts nothing
    assert len(client.get("/asyncstate/jobs").get_json()) == 1


def rst_blocks(section: str) -> list[tuple[str, str]]:
    """The ``.. code-block:: LANG`` blocks of an rST text, as (lang, dedented code)."""
    found = re.findall(r"^\.\. code-block:: (\w+)\n\n((?:    .*\n|\n)+)", section, re.MULTILINE)
    return [(lang, textwrap.dedent(code).strip("\n") + "\n") for lang, code in found]


def test_deployment_workers_in_short_configures_your_own_app(
    load, redis_url: str, tmp_path: Path
) -> None:
    """docs/deployment.rst, "In short" of the workers' section: the config keys to set in your
    own app (its Python block runs here, and a worker started as its commands say runs the
    queued job); the example app's environment names only in lines marked as the example's."""
    import flask_asyncstate.config as config_module

    page = (EXAMPLES.parent / "deployment.rst").read_text(encoding="utf-8")
    section = page.split(".. _deployment-workers-short:\n", 1)[1]
    section = section.split("\nChoosing RQ or Celery\n", 1)[0]
    keys = set(re.findall(r"\bASYNCSTATE_[A-Z_]+\b", section))
    assert {"ASYNCSTATE_EXECUTOR", "ASYNCSTATE_REDIS_URL"} <= keys
    assert keys <= set(config_module.DEFAULTS), keys - set(config_module.DEFAULTS)

    blocks = rst_blocks(section)
    shell = [code for lang, code in blocks if lang == "sh"]
    assert "flask --app yourapp asyncstate worker" in shell[0]
    assert any("celery -A yourapp." in code for code in shell)
    for code in shell:  # the example's variables only in a block that says it is the example's
        if "example_app" in code or "REDIS_URL=" in code:
            assert code.startswith("# the example app only"), code
        else:
            assert "REDIS_URL" not in code and "ASYNCSTATE_EXECUTOR=" not in code, code

    (python,) = [code for lang, code in blocks if lang == "python"]
    path = tmp_path / "yourapp.py"
    path.write_text(
        "from flask import Flask\n"
        "from flask_asyncstate import AsyncState\n"
        "app = Flask(__name__)\n"
        "app.config['SECRET_KEY'] = 'readme-workers'\n"
        + python.replace("redis://localhost:6379/0", redis_url)
        + "\n@asyncstate.job\ndef add(job, a, b):\n    return a + b\n",
        encoding="utf-8",
    )
    yourapp = load(path)
    with yourapp.app.test_request_context():
        handle = yourapp.add.start(2, 3)
    assert handle.status()["status"] == "queued"  # waiting for a worker
    worker = ["asyncstate", "worker", "--burst", "--simple"]  # flask --app yourapp ...
    result = yourapp.app.test_cli_runner().invoke(args=worker)
    assert result.exit_code == 0, result.output
    doc = handle.status()
    assert doc["status"] == "succeeded" and doc["result"] == 5


# -- docs/quickstart.rst ---------------------------------------------------------------


def test_quickstart_post_redirects_and_a_reload_starts_nothing(load) -> None:
    example = load("hello")
    client = example.app.test_client()
    assert "<form" in client.get("/").get_data(as_text=True)
    response = client.post("/")
    token = token_of(response)
    for _ in range(3):  # reloading the page the browser was sent to
        page = client.get(response.headers["Location"]).get_data(as_text=True)
        assert widget_tokens(page) == [token]
    doc = poll(client, token, lambda d: d["current"] >= 1)
    assert doc["total"] == 100 and doc["message"].endswith(" of 100")
    assert len(client.get("/asyncstate/jobs").get_json()) == 1  # one job, not four
    assert client.post(f"/asyncstate/cancel/{token}", headers=HEADERS).status_code == 202
    assert poll(client, token, finished)["status"] == "cancelled"


# -- docs/jobs.rst, Progress from a loop -----------------------------------------------


def test_iter_import_reports_each_row_and_its_total(load) -> None:
    example = load("iter", PRODUCTS=300, PAUSE=0.001)
    client = example.app.test_client()
    token = token_of(client.post("/import"))
    page = client.get(f"/?token={token}").get_data(as_text=True)
    assert widget_tokens(page) == [token]  # the GET page renders the widget
    doc = poll(client, token, finished)
    assert doc["status"] == "succeeded" and doc["result"] == {"imported": 300}
    assert doc["current"] == doc["total"] == 300 and doc["percent"] == 100.0
    assert doc["message"] == "300 of 300 products"


def test_iter_reload_of_the_page_starts_nothing(load) -> None:
    example = load("iter", PRODUCTS=50, PAUSE=0.001)
    client = example.app.test_client()
    token = token_of(client.post("/import"))
    for _ in range(3):
        assert client.get(f"/?token={token}").status_code == 200
    poll(client, token, finished)
    assert len(client.get("/asyncstate/jobs").get_json()) == 1


def test_iter_generator_has_no_total(load) -> None:
    example = load("iter", PAGES=30, PAUSE=0.01)
    client = example.app.test_client()
    token = token_of(client.post("/sync"))
    running = poll(client, token, lambda d: d["current"] > 0 or finished(d))
    assert running["total"] is None and running["percent"] is None  # indeterminate bar
    doc = poll(client, token, finished)
    assert doc["status"] == "succeeded" and doc["result"] == {"orders": 300}
    assert doc["message"] == "30 pages fetched" and doc["total"] is None


def test_iter_cancel_stops_before_the_next_row(load) -> None:
    example = load("iter", PRODUCTS=2000, PAUSE=0.005)
    client = example.app.test_client()
    token = token_of(client.post("/import"))
    poll(client, token, lambda d: d["current"] >= 10)
    assert client.post(f"/asyncstate/cancel/{token}", headers=HEADERS).status_code == 202
    doc = poll(client, token, finished)
    assert doc["status"] == "cancelled" and doc["result"] is None
    assert 10 <= doc["current"] < 2000


def test_iter_inline_executor_runs_the_whole_import_in_the_post(load) -> None:
    example = load("iter", ASYNCSTATE_EXECUTOR="inline", PRODUCTS=40, PAUSE=0)
    client = example.app.test_client()
    token = token_of(client.post("/import"))
    doc = client.get(f"/asyncstate/progress/{token}").get_json()
    assert doc["status"] == "succeeded" and doc["message"] == "40 of 40 products"


# -- docs/jobs.rst, Rate, ETA and elapsed time -----------------------------------------


def test_eta_fields_while_running_and_after(load) -> None:
    example = load("eta", PAGES=40, PAUSE=0.05)  # about 20 pages/s, 2 s in all
    client = example.app.test_client()
    token = token_of(client.post("/report"))
    page = client.get(f"/?token={token}").get_data(as_text=True)
    assert 'class="asyncstate-eta"' in page and "asyncstate:progress" in page
    first = poll(client, token, lambda d: d["eta"] is not None or finished(d))
    assert first["status"] == "running"
    assert first["started_at"] >= first["created_at"]
    assert 5 < first["rate"] < 40  # pages per second, smoothed
    assert 0 < first["eta"] < 10
    later = poll(client, token, lambda d: d["current"] >= first["current"] + 8 or finished(d))
    if later["status"] == "running":
        assert later["eta"] < first["eta"]
    doc = poll(client, token, finished)
    assert doc["status"] == "succeeded" and doc["result"] == {"pages": 40}
    assert doc["eta"] is None  # not running any more
    assert doc["rate"] > 0  # the last rate stays
    assert doc["updated_at"] - doc["started_at"] >= 40 * 0.05 * 0.9  # what "elapsed" shows


def test_eta_is_null_while_queued(load) -> None:
    example = load("eta", ASYNCSTATE_MAX_WORKERS=1, PAGES=20, PAUSE=0.05)
    client = example.app.test_client()
    first = token_of(client.post("/report"))
    second = token_of(client.post("/report"))
    doc = client.get(f"/asyncstate/progress/{second}").get_json()
    assert doc["status"] == "queued"
    assert doc["started_at"] is None and doc["rate"] is None and doc["eta"] is None
    client.post(f"/asyncstate/cancel/{second}", headers=HEADERS)
    client.post(f"/asyncstate/cancel/{first}", headers=HEADERS)
    assert poll(client, second, finished)["status"] == "cancelled"
    assert poll(client, first, finished)["status"] == "cancelled"


# -- docs/jobs.rst, One job at a time --------------------------------------------------


def test_unique_second_start_shows_the_running_export(load) -> None:
    example = load("unique", STEPS=1000, PAUSE=0.01)
    browser = example.app.test_client()
    first = token_of(browser.post("/export"))
    assert flashes(browser.get(f"/?token={first}").get_data(as_text=True)) == []
    again = browser.post("/export")
    second = token_of(again)
    assert job_id(example, second) == job_id(example, first)  # the same job
    page = browser.get(again.headers["Location"]).get_data(as_text=True)
    assert flashes(page) == ["An export is already running: here it is."]
    assert widget_tokens(page) == [second]
    assert len(browser.get("/asyncstate/jobs").get_json()) == 1  # nothing else started

    other = example.app.test_client()  # another owner: an export of its own
    theirs = token_of(other.post("/export"))
    assert job_id(example, theirs) != job_id(example, first)
    assert other.get(f"/asyncstate/progress/{first}").status_code == 404

    # the holder ends (here: cancelled): the next start makes a new job
    browser.post(f"/asyncstate/cancel/{first}", headers=HEADERS)
    assert poll(browser, first, finished)["status"] == "cancelled"
    third = browser.post("/export")
    assert job_id(example, token_of(third)) != job_id(example, first)
    assert flashes(browser.get(third.headers["Location"]).get_data(as_text=True)) == []
    for client, token in ((other, theirs), (browser, token_of(third))):
        client.post(f"/asyncstate/cancel/{token}", headers=HEADERS)


def test_unique_app_is_one_job_for_everyone(load) -> None:
    example = load("unique", STEPS=1000, PAUSE=0.01)
    alice, bob = example.app.test_client(), example.app.test_client()
    first = token_of(alice.post("/rebuild"))
    again = alice.post("/rebuild")
    assert job_id(example, token_of(again)) == job_id(example, first)
    page = alice.get(again.headers["Location"]).get_data(as_text=True)
    assert flashes(page) == ["You are already rebuilding the index: here it is."]
    assert widget_tokens(page) == [token_of(again)]

    # bob's start finds alice's job: no second job, and no widget, since its token
    # would answer 404 for bob (the routes show a job to its owner only)
    with example.app.test_request_context():
        handle = example.rebuild_search_index.start()
        assert not handle.is_new and handle.id == job_id(example, first)
        assert bob.get(f"/asyncstate/progress/{handle.token}").status_code == 404
    response = bob.post("/rebuild")
    assert response.status_code == 302 and "token=" not in response.headers["Location"]
    page = bob.get(response.headers["Location"]).get_data(as_text=True)
    (news,) = flashes(page)
    assert news.startswith("Someone is rebuilding the index (") and not widget_tokens(page)
    alice.post(f"/asyncstate/cancel/{first}", headers=HEADERS)
    assert poll(alice, first, finished)["status"] == "cancelled"


def test_unique_holder_that_vanished_is_freed_by_the_next_start(load) -> None:
    example = load("unique", STEPS=1000, PAUSE=0.01)
    with example.app.app_context():
        records = example.asyncstate.app_state().records
        # a holder that never gave its place back (its instance died, or Redis lost it)
        key = records.unique_key("rebuild_search_index", "app", None)
        assert records.claim_unique(key, "0" * 32) is None
    client = example.app.test_client()
    response = client.post("/rebuild")
    token = token_of(response)
    assert job_id(example, token) != "0" * 32
    assert flashes(client.get(response.headers["Location"]).get_data(as_text=True)) == []
    client.post(f"/asyncstate/cancel/{token}", headers=HEADERS)
    poll(client, token, finished)


# -- docs/jobs.rst, Who owns a job -----------------------------------------------------


def sign_in(client: FlaskClient, name: str) -> None:
    assert client.post("/login", data={"name": name}).status_code == 302


def listed(client: FlaskClient) -> list[str]:
    return [job["id"] for job in client.get("/asyncstate/jobs").get_json()]


def test_owners_a_users_jobs_follow_them_to_every_device(load) -> None:
    example = load("owners", STEPS=1000, PAUSE=0.01)
    laptop, phone = example.app.test_client(), example.app.test_client()
    sign_in(laptop, "alice")
    sign_in(phone, "alice")
    assert laptop.post("/export").status_code == 302
    (job,) = listed(laptop)
    assert listed(phone) == [job]  # another session, the same owner
    panel = phone.get("/").get_data(as_text=True)
    (token,) = widget_tokens(panel)
    assert f'data-job-id="{job}"' in panel
    assert phone.post(f"/asyncstate/cancel/{token}", headers=HEADERS).status_code == 202
    assert poll(laptop, token, finished)["status"] == "cancelled"


def test_owners_alice_and_bob_in_one_browser(load) -> None:
    example = load("owners", STEPS=1000, PAUSE=0.01)
    browser = example.app.test_client()
    sign_in(browser, "alice")
    browser.post("/export")
    (alices,) = browser.get("/asyncstate/jobs").get_json()
    browser.post("/logout")  # cancels nothing
    assert listed(browser) == []  # anonymous now: a new owner
    sign_in(browser, "bob")
    assert listed(browser) == []
    assert browser.get(f"/asyncstate/progress/{alices['token']}").status_code == 404
    assert browser.post(f"/asyncstate/cancel/{alices['token']}", headers=HEADERS).status_code == 404
    browser.post("/logout")
    sign_in(browser, "alice")
    assert listed(browser) == [alices["id"]]  # hers again, still running
    assert poll(browser, alices["token"], lambda d: d["status"] != "queued")["status"] == "running"
    browser.post(f"/asyncstate/cancel/{alices['token']}", headers=HEADERS)
    poll(browser, alices["token"], finished)


def test_owners_anonymous_jobs_stay_with_the_browser_session(load) -> None:
    example = load("owners", STEPS=1000, PAUSE=0.01)
    browser, other = example.app.test_client(), example.app.test_client()
    browser.post("/export")
    (anonymous,) = browser.get("/asyncstate/jobs").get_json()
    poll(browser, anonymous["token"], lambda d: d["status"] == "running")
    assert other.get(f"/asyncstate/progress/{anonymous['token']}").status_code == 404
    sign_in(browser, "alice")
    assert listed(browser) == []  # not carried over to the user
    browser.post("/logout")
    assert listed(browser) == []  # nor back: the session has a new anonymous owner
    with example.app.app_context():
        handle = example.asyncstate.handle(anonymous["token"])
        assert handle.status()["status"] == "running"  # it runs on all the same
        handle.cancel()
        assert handle.wait(10)["status"] == "cancelled"


def test_owners_one_quota_for_all_of_a_users_devices(load) -> None:
    example = load("owners", ASYNCSTATE_MAX_JOBS_PER_OWNER=2, STEPS=1000, PAUSE=0.01)
    laptop, phone = example.app.test_client(), example.app.test_client()
    sign_in(laptop, "alice")
    sign_in(phone, "alice")
    laptop.post("/export")
    phone.post("/export")
    refused = phone.post("/export", follow_redirects=True).get_data(as_text=True)
    (message,) = flashes(refused)  # QuotaExceeded.user_message, the quotaExceeded label
    assert message == DEFAULT_LABELS["quotaExceeded"].format(limit=2)
    assert len(listed(laptop)) == 2
    stranger = example.app.test_client()  # someone else: a quota of their own
    stranger.post("/export")
    assert len(listed(stranger)) == 1
    for client in (laptop, stranger):
        for job in client.get("/asyncstate/jobs").get_json():
            client.post(f"/asyncstate/cancel/{job['token']}", headers=HEADERS)
            poll(client, job["token"], finished)


def test_team_owner_callable_shares_jobs_within_a_team(load) -> None:
    example = load("team_owner", STEPS=1000, PAUSE=0.01)
    alice, bob, carol, visitor = (example.app.test_client() for _ in range(4))
    for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        sign_in(client, name)
    alice.post("/invoices")
    (job,) = alice.get("/asyncstate/jobs").get_json()
    assert listed(bob) == [job["id"]]  # the same team
    assert "Jobs of team red" in bob.get("/").get_data(as_text=True)
    assert listed(carol) == [] and listed(visitor) == []
    assert carol.get(f"/asyncstate/progress/{job['token']}").status_code == 404
    visitor.post("/invoices")  # not signed in: the session owns it
    assert len(listed(visitor)) == 1 and listed(alice) == [job["id"]]
    assert bob.post(f"/asyncstate/cancel/{job['token']}", headers=HEADERS).status_code == 202
    assert poll(alice, job["token"], finished)["status"] == "cancelled"
    (mine,) = visitor.get("/asyncstate/jobs").get_json()
    visitor.post(f"/asyncstate/cancel/{mine['token']}", headers=HEADERS)
    poll(visitor, mine["token"], finished)


# -- docs/browser.rst, jQuery, a plain module, htmx ---------------------------------------


def test_clients_jquery_module_and_htmx_pages_show_the_job(load) -> None:
    """The job on each page: the jQuery page's widget brings jQuery and the plugin, the
    module page only the module, the htmx page htmx and the fragment, no script of ours
    (tests/test_browser_module.py runs the three in Chromium)."""
    example = load("clients", STEPS=2, PAUSE=0)
    client = example.app.test_client()
    for name in ("jquery", "module", "htmx"):
        token = token_of(client.post(f"/{name}"))
        page = client.get(f"/{name}?token={token}").get_data(as_text=True)
        assert poll(client, token, finished)["status"] == "succeeded"
        if name == "jquery":
            assert widget_tokens(page) == [token]
            assert "/asyncstate/jquery-auto.js" in page and "/asyncstate/asyncstate.js" in page
        elif name == "module":
            assert (
                f'<asyncstate-progress token="{token}"' in page and 'prefix="/asyncstate"' in page
            )
            assert 'from "/asyncstate/asyncstate.mjs"' in page
            assert "jquery" not in page.lower() and "asyncstate.js" not in page
        else:  # the widget as it was when the page was rendered, polling its fragment
            assert f'hx-get="/asyncstate/fragment/{token}"' in page
            assert '<script src="/htmx.min.js">' in page
            assert "jquery" not in page.lower() and not re.search(r"asyncstate\.m?js", page)
            with client.get("/htmx.min.js") as htmx:  # served by the app, from npm
                assert htmx.status_code == 200 and b"htmx" in htmx.get_data()
    with client.get("/asyncstate/asyncstate.mjs") as module:
        assert module.status_code == 200 and module.mimetype == "text/javascript"


# -- docs/browser.rst, A "my jobs" page ------------------------------------------------


def test_panel_lists_the_owners_jobs_newest_first(load) -> None:
    example = load("panel", STEPS=1000, PAUSE=0.01)
    client = example.app.test_client()
    assert "No jobs yet" in client.get("/").get_data(as_text=True)
    client.post("/start/import")
    client.post("/start/export")
    page = client.get("/").get_data(as_text=True)
    ids = re.findall(r'data-job-id="([0-9a-f]+)"', page)
    names = re.findall(r'class="asyncstate-job-name"[^>]*>([^<]*)<', page)
    assert names == ["export_orders", "import_products"] and len(ids) == 2
    assert page.count("/asyncstate/asyncstate.js") == 1  # the scripts load once
    assert 'data-asyncstate-mode="poll"' in page  # mode="auto" where no streams are served
    tokens = widget_tokens(page)
    for token in tokens:  # each bar's token opens its job for this browser...
        assert client.get(f"/asyncstate/progress/{token}").status_code == 200
    other = example.app.test_client()  # ...and no one else's
    assert "No jobs yet" in other.get("/").get_data(as_text=True)
    assert other.get(f"/asyncstate/progress/{tokens[0]}").status_code == 404
    client.post(f"/asyncstate/cancel/{tokens[0]}", headers=HEADERS)
    poll(client, tokens[0], finished)
    page = client.get("/").get_data(as_text=True)  # finished jobs stay listed
    assert re.findall(r'data-job-id="([0-9a-f]+)"', page) == ids
    client.post(f"/asyncstate/cancel/{tokens[1]}", headers=HEADERS)
    poll(client, tokens[1], finished)


# -- docs/browser.rst, Labels, languages and notifications -----------------------------


def labels_of(html: str) -> dict[str, str]:
    import html as html_module
    import json

    (raw,) = re.findall(r'data-asyncstate-labels="([^"]*)"', html)
    return json.loads(html_module.unescape(raw))


def test_labels_override_some_words_and_turn_notifications_on(load) -> None:
    example = load("labels", ASYNCSTATE_EXECUTOR="inline", STEPS=5, PAUSE=0)
    client = example.app.test_client()
    token = token_of(client.post("/import"))
    page = client.get(f"/?token={token}").get_data(as_text=True)
    labels = labels_of(page)
    assert set(labels) == set(DEFAULT_LABELS)  # every label, overrides applied
    assert labels["cancel"] == "Stop the import" and labels["succeeded"] == "Imported"
    assert labels["failed"] == DEFAULT_LABELS["failed"]
    assert ">Stop the import</button>" in page
    assert 'aria-label="Import progress"' in page
    assert 'data-asyncstate-notify="true"' in page
    assert "Notification.requestPermission" in page
    script = client.get("/asyncstate/asyncstate.js").get_data(as_text=True)
    assert "window.asyncstateLabels = {" in script  # the defaults, for widgets made in JS


def test_flask_babel_translates_the_default_labels(load, tmp_path: Path) -> None:
    pytest.importorskip("flask_babel")
    from babel.messages.catalog import Catalog
    from babel.messages.mofile import write_mo

    catalog = Catalog(locale="fr")
    for english, french in {
        "Cancel": "Annuler",
        "Done": "Terminé",
        "about {minutes} min left": "encore environ {minutes} min",
        "Import": "Importer",
        "{current} of {total} products": "{current} sur {total} produits",
    }.items():
        catalog.add(english, french)
    folder = tmp_path / "fr" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    with open(folder / "messages.mo", "wb") as mo:
        write_mo(mo, catalog)
    example = load(
        "i18n_babel",
        ASYNCSTATE_EXECUTOR="inline",
        BABEL_TRANSLATION_DIRECTORIES=tmp_path,
        STEPS=3,
        PAUSE=0,
    )
    client = example.app.test_client()
    french = {"Accept-Language": "fr"}
    token = token_of(client.post("/import", headers=french))
    page = client.get(f"/?token={token}", headers=french).get_data(as_text=True)
    labels = labels_of(page)
    assert labels["cancel"] == "Annuler" and labels["succeeded"] == "Terminé"
    assert labels["etaMinutes"] == "encore environ {minutes} min"  # the field survives
    assert labels["failed"] == "Failed"  # not in the catalogue: English
    assert ">Annuler</button>" in page and ">Importer</button>" in page
    doc = client.get(f"/asyncstate/progress/{token}").get_json()
    assert doc["message"] == "3 sur 3 produits"
    english = client.get(f"/?token={token}", headers={"Accept-Language": "en"})
    assert labels_of(english.get_data(as_text=True))["cancel"] == "Cancel"


def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    """Wait until ``check()`` holds (what another thread does, such as a signal receiver)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


# -- docs/jobs.rst, Links and the request in a job -------------------------------------


@pytest.mark.parametrize("executor", ["threads", "inline"])
def test_links_a_job_links_to_where_the_page_was_served_from(load, executor: str) -> None:
    example = load("links", ASYNCSTATE_EXECUTOR=executor, PAUSE=0)
    client = example.app.test_client()
    base = "https://shop.example.com/app/"  # behind a proxy, under /app (what ProxyFix gives)
    response = client.post("/reports/7", base_url=base)
    token = token_of(response)
    with example.app.app_context():
        doc = example.asyncstate.handle(token).wait(10)
    assert doc["status"] == "succeeded", doc
    assert doc["result"] == {"url": "https://shop.example.com/app/reports/7.csv"}
    assert response.headers["Location"] == f"/app/reports/7?token={token}"
    page = client.get(f"/reports/7?token={token}", base_url=base).get_data(as_text=True)
    assert widget_tokens(page) == [token]
    assert 'data-asyncstate-prefix="/app/asyncstate"' in page
    assert client.get(f"/asyncstate/progress/{token}", base_url=base).status_code == 200


def test_links_outside_a_request_server_name_applies(load) -> None:
    example = load(
        "links", SERVER_NAME="reports.example.com", PREFERRED_URL_SCHEME="https", PAUSE=0
    )
    result = example.app.test_cli_runner().invoke(args=["build-report", "7"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "https://reports.example.com/reports/7.csv"


# -- docs/jobs.rst, Why a job ended ----------------------------------------------------


def test_reason_user_error_and_timeout(load) -> None:
    example = load("reason", SYNC_TIMEOUT=1.5, STEPS=1000, PAUSE=0.01)
    client = example.app.test_client()
    cancelled = token_of(client.post("/"))
    poll(client, cancelled, lambda d: d["current"] > 0)
    assert client.post(f"/asyncstate/cancel/{cancelled}", headers=HEADERS).status_code == 202
    broken = token_of(client.post("/", data={"broken_at": "3"}))
    slow = token_of(client.post("/"))  # 10 s of work, a 1.5 s timeout
    docs = {
        name: poll(client, token, finished)
        for name, token in (("cancelled", cancelled), ("broken", broken), ("slow", slow))
    }
    assert (docs["cancelled"]["status"], docs["cancelled"]["reason"]) == ("cancelled", "user")
    assert (docs["broken"]["status"], docs["broken"]["reason"]) == ("failed", "error")
    assert docs["broken"]["error"] == {"type": "ValueError", "message": "product 3 has no price"}
    assert (docs["slow"]["status"], docs["slow"]["reason"]) == ("failed", "timeout")
    assert docs["slow"]["error"]["type"] == "JobTimeout"
    assert docs["slow"]["cancel_requested"] is False  # nobody asked
    eventually(lambda: len(example.PROBLEMS) == 2)  # the receiver runs in the job's thread
    assert sorted(p["reason"] for p in example.PROBLEMS) == ["error", "timeout"]
    page = client.get(f"/?token={slow}").get_data(as_text=True)
    labels = labels_of(page)  # what the widget shows for these reasons
    assert labels["reasonTimeout"] == "Stopped: it took too long"
    assert labels["reasonShutdown"] == "Stopped by a server restart"


def test_reason_a_restart_is_not_a_problem(load) -> None:
    example = load("reason", STEPS=1000, PAUSE=0.01)
    client = example.app.test_client()
    token = token_of(client.post("/"))
    poll(client, token, lambda d: d["status"] == "running")
    with example.app.app_context():
        handle = example.asyncstate.handle(token)
    example.asyncstate.shutdown(5)  # what a deploy's SIGTERM does at exit
    doc = handle.status()
    assert (doc["status"], doc["reason"], doc["cancel_requested"]) == (
        "cancelled",
        "shutdown",
        False,
    )
    assert example.PROBLEMS == []


# -- docs/jobs.rst, Keeping and dismissing finished jobs -------------------------------


def test_retention_finished_exports_stay_until_dismissed(load) -> None:
    example = load(
        "retention", ASYNCSTATE_EXPIRES=0.6, ASYNCSTATE_KEEP_FINISHED=5, STEPS=3, PAUSE=0
    )
    browser, other = example.app.test_client(), example.app.test_client()
    assert "No exports yet." in browser.get("/").get_data(as_text=True)
    browser.post("/export")
    browser.post("/export")
    jobs = browser.get("/asyncstate/jobs").get_json()
    for job in jobs:
        assert poll(browser, job["token"], finished)["status"] == "succeeded"
    time.sleep(1.3)  # two ASYNCSTATE_EXPIRES without a read: kept all the same
    page = browser.get("/").get_data(as_text=True)
    shown = re.findall(r'data-job-id="([0-9a-f]+)"', page)
    assert sorted(shown) == sorted(job["id"] for job in jobs) and len(widget_tokens(page)) == 2
    assert page.count(">Dismiss</button>") == 2
    first, second = jobs
    assert other.post(f"/exports/{first['token']}/dismiss").status_code == 404  # not theirs
    assert browser.post(f"/exports/{first['token']}/dismiss").status_code == 302
    assert listed(browser) == [second["id"]]
    assert browser.get(f"/asyncstate/progress/{first['token']}").status_code == 404
    url = f"/asyncstate/jobs/{second['token']}"  # the route, as a script calls it
    assert browser.delete(url).status_code == 403  # no same-origin proof
    assert other.delete(url, headers=HEADERS).status_code == 404
    assert browser.delete(url, headers=HEADERS).get_json() == {"dismissed": True}
    assert "No exports yet." in browser.get("/").get_data(as_text=True)


def test_retention_an_unfinished_export_cannot_be_dismissed(load) -> None:
    example = load("retention", STEPS=1000, PAUSE=0.01)
    browser = example.app.test_client()
    browser.post("/export")
    (job,) = browser.get("/asyncstate/jobs").get_json()
    answer = browser.delete(f"/asyncstate/jobs/{job['token']}", headers=HEADERS)
    assert answer.status_code == 409
    assert answer.get_json() == {"error": "the job has not ended; cancel it first"}
    page = browser.post(f"/exports/{job['token']}/dismiss", follow_redirects=True)
    assert flashes(page.get_data(as_text=True)) == [
        "This export is still running: cancel it first."
    ]
    assert ">Dismiss</button>" not in page.get_data(as_text=True)
    browser.post(f"/asyncstate/cancel/{job['token']}", headers=HEADERS)
    assert poll(browser, job["token"], finished)["status"] == "cancelled"


# -- docs/operating.rst, Guarding the routes -------------------------------------------


def test_guards_answer_refusals_as_json(load) -> None:
    example = load("guards", STEPS=1000, PAUSE=0.01)
    anonymous = example.app.test_client()
    refused = anonymous.get("/asyncstate/jobs", headers={"Referer": "http://localhost/reports"})
    assert refused.status_code == 401 and refused.is_json
    assert refused.get_json() == {"error": "login required", "login_url": "/login?next=%2Freports"}
    no_page = anonymous.get("/asyncstate/jobs").get_json()  # no page to go back to: no next
    assert no_page == {"error": "login required", "login_url": "/login"}
    for asset in ("/asyncstate/asyncstate.js", "/asyncstate/asyncstate.css"):
        with anonymous.get(asset) as answer:  # the assets stay open (a sign-in page shows them)
            assert answer.status_code == 200
    alice, bob = example.app.test_client(), example.app.test_client()
    sign_in(alice, "alice")
    sign_in(bob, "bob")
    token = token_of(alice.post("/export"))
    assert alice.get(f"/asyncstate/progress/{token}").status_code == 200
    suspended = bob.get("/asyncstate/jobs")
    assert suspended.status_code == 403
    assert suspended.get_json() == {"error": "your account is suspended"}
    assert alice.post(f"/asyncstate/cancel/{token}", headers=HEADERS).status_code == 202
    assert poll(alice, token, finished)["status"] == "cancelled"


# -- docs/operating.rst, The operator's page -------------------------------------------


def test_admin_page_is_off_without_its_guard(load) -> None:
    example = load("hello")
    client = example.app.test_client()
    for path in ("/asyncstate/admin", "/asyncstate/admin/jobs"):
        answer = client.get(path)
        assert answer.status_code == 404 and answer.get_json() == {"error": "not found"}
    assert client.post(f"/asyncstate/admin/cancel/{'0' * 32}", headers=HEADERS).status_code == 404


def test_admin_operators_see_and_cancel_every_job(load) -> None:
    example = load("admin", STEPS=1000, PAUSE=0.01)
    alice, bob, olga, anonymous = (example.app.test_client() for _ in range(4))
    for client, name in ((alice, "alice"), (bob, "bob"), (olga, "olga")):
        sign_in(client, name)
    alice.post("/export")
    bob.post("/export")
    (alices,) = alice.get("/asyncstate/jobs").get_json()
    poll(alice, alices["token"], lambda d: d["status"] == "running")

    page = anonymous.get("/asyncstate/admin")  # the page: the guard's redirect, as is
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    data = anonymous.get("/asyncstate/admin/jobs")  # its JSON: a 401
    assert data.status_code == 401 and data.get_json()["login_url"].startswith("/login")
    assert alice.get("/asyncstate/admin").status_code == 403
    assert alice.get("/asyncstate/admin/jobs").status_code == 403

    page = olga.get("/asyncstate/admin")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert b"asyncstate-admin.js" in page.data and b"Background jobs" in page.data
    listing = olga.get("/asyncstate/admin/jobs").get_json()
    assert len(listing["jobs"]) == 2 and len(listing["instances"]) == 1
    owners = {job["owner"] for job in listing["jobs"]}
    assert len(owners) == 2 and all(len(owner) == 8 for owner in owners)
    assert all("result" not in job and "token" not in job for job in listing["jobs"])
    assert listing["instances"][0]["role"] == "web"  # its job count is that of its last beat

    cancel = f"/asyncstate/admin/cancel/{alices['id']}"
    assert olga.post(cancel).status_code == 403  # the same-origin proof, as for /cancel
    answer = olga.post(cancel, headers=HEADERS)
    assert answer.status_code == 202 and answer.get_json()["cancel_requested"] is True
    assert poll(alice, alices["token"], finished)["status"] == "cancelled"
    cancelled = olga.get("/asyncstate/admin/jobs?status=cancelled").get_json()["jobs"]
    assert [job["id"] for job in cancelled] == [alices["id"]]
    assert olga.post(f"/asyncstate/admin/cancel/{'0' * 32}", headers=HEADERS).status_code == 404
    (bobs,) = bob.get("/asyncstate/jobs").get_json()
    olga.post(f"/asyncstate/admin/cancel/{bobs['id']}", headers=HEADERS)
    poll(bob, bobs["token"], finished)


# -- docs/browser.rst, Showing the result ----------------------------------------------


def test_results_the_slot_shows_the_download_link(load) -> None:
    example = load("results", STEPS=40, PAUSE=0.02)
    client = example.app.test_client()
    token = token_of(client.post("/export"))
    not_yet = client.get(f"/asyncstate/result/{token}")
    assert not_yet.status_code == 404 and not_yet.get_json() == {"error": "no result to show"}
    page = client.get(f"/?token={token}").get_data(as_text=True)
    assert 'data-asyncstate-result="true"' in page
    assert '<div class="asyncstate-result" hidden></div>' in page  # filled by the widget
    doc = poll(client, token, finished)
    name = f"orders-{doc['id'][:8]}.csv"
    link = f'<a class="download" href="/files/{name}" download>Download {name}</a> (40 orders)'
    assert client.get(f"/asyncstate/result/{token}").get_json() == {"html": link}
    reloaded = client.get(f"/?token={token}").get_data(as_text=True)
    assert f'<div class="asyncstate-result">{link}</div>' in reloaded  # rendered at once
    assert reloaded.count(link) == 2  # the widget, and the jobs panel
    assert client.get(f"/files/{name}").status_code == 200
    other = example.app.test_client()
    assert other.get(f"/asyncstate/result/{token}").status_code == 404


def test_results_a_callables_text_is_escaped(load) -> None:
    example = load("results", STEPS=3, PAUSE=0)
    client = example.app.test_client()
    token = token_of(client.post("/import"))
    assert poll(client, token, finished)["status"] == "succeeded"
    assert client.get(f"/asyncstate/result/{token}").get_json() == {"html": "3 products imported."}


# -- docs/frontend.rst: asyncstate_assets ---------------------------------------------


def test_assets_in_the_head_and_one_jquery_the_sites(load) -> None:
    example = load("assets", STEPS=1000, PAUSE=0.01)
    client = example.app.test_client()
    client.post("/")
    client.post("/")
    page = client.get("/").get_data(as_text=True)
    head, body = page.split("</head>")
    assert head.count('href="/asyncstate/asyncstate.css"') == 1
    assert head.count('src="/asyncstate/asyncstate.js"') == 1
    assert "asyncstate.js" not in body and "asyncstate.css" not in body  # widgets: none
    assert "/asyncstate/jquery.js" not in page and "window.jQuery" not in page
    assert page.count("<script src=") == 2  # the site's jQuery, then the plugin
    assert head.index('src="/vendor/jquery.js"') < head.index('src="/asyncstate/asyncstate.js"')
    with client.get("/vendor/jquery.js") as jquery:
        assert jquery.status_code == 200
    tokens = widget_tokens(page)
    assert len(tokens) == 2
    for token in tokens:
        client.post(f"/asyncstate/cancel/{token}", headers=HEADERS)
        poll(client, token, finished)


# -- docs/recipe.rst -------------------------------------------------------------------


def csrf_of(html: str) -> str:
    """The page's CSRF token, from its ``<meta name="csrf-token">`` (the widget reads it)."""
    (token,) = re.findall(r'<meta name="csrf-token" content="([^"]+)">', html)
    return token


def recipe_sign_in(client: FlaskClient, name: str) -> None:
    form = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"name": name, "csrf_token": csrf_of(form)})
    assert response.status_code == 302, response.status_code
    assert response.headers["Location"] == "/exports/"


def recipe_start(client: FlaskClient) -> Any:
    """Press "Export" on the exports page, with the form's CSRF token."""
    page = client.get("/exports/").get_data(as_text=True)
    return client.post("/exports/", data={"year": "2024", "csrf_token": csrf_of(page)})


def test_recipe_sign_in_export_wait_download(load, tmp_path: Path) -> None:
    recipe = load("recipe")
    app = recipe.create_app({"EXPORT_DIR": str(tmp_path), "EXPORT_ROWS": 40})
    browser = app.test_client()

    # signed out: the pages send to the sign-in page, the extension's routes answer 401
    response = browser.get("/")
    assert browser.get(response.headers["Location"]).headers["Location"].startswith("/login")
    refused = browser.get("/asyncstate/jobs")
    assert refused.status_code == 401 and refused.get_json()["login_url"].startswith("/login")
    assert browser.post("/login", data={"name": "alice"}).status_code == 400  # no CSRF token
    login_page = browser.get("/login").get_data(as_text=True)
    assert login_page.count("/asyncstate/asyncstate.js") == 1  # the layout's <head>

    recipe_sign_in(browser, "alice")
    index = browser.get("/exports/").get_data(as_text=True)
    assert "Signed in as alice." in index and "No jobs yet" in index
    response = recipe_start(browser)  # post/redirect/get
    assert response.status_code == 302
    show = response.headers["Location"]
    token = show.rsplit("/", 1)[1]
    page = browser.get(show)
    assert page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    assert widget_tokens(html) == [token]
    assert 'aria-label="Export progress"' in html
    head = html.split("</head>")[0]
    assert head.count("/asyncstate/asyncstate.js") == html.count("/asyncstate/asyncstate.js") == 1

    doc = poll(browser, token, finished)
    assert doc["status"] == "succeeded", doc
    url = doc["result"]["url"]  # url_for(_external=True) in the job, with the job's token
    assert doc["result"] == {"rows": 40, "url": url}
    link_token = recipe_link_token(url)
    with app.app_context():
        assert recipe.asyncstate.handle(link_token).id == doc["id"]
    link = f'<a class="download" href="{url}" download>Download 40 orders (CSV)</a>'
    assert link in browser.get(show).get_data(as_text=True)  # the reload shows it at once
    assert browser.get(f"/asyncstate/result/{token}").get_json()["html"].strip() == link
    assert link in browser.get("/exports/").get_data(as_text=True)  # and the jobs panel
    with browser.get(url) as download:
        assert download.status_code == 200 and download.mimetype == "text/csv"
        assert download.headers["Content-Disposition"] == "attachment; filename=orders.csv"
        assert download.get_data(as_text=True).splitlines()[:2] == ["order,year", "1,2024"]

    bob = app.test_client()
    recipe_sign_in(bob, "bob")
    assert bob.get(url).status_code == 404  # alice's export
    assert bob.get(f"/asyncstate/progress/{token}").status_code == 404
    assert bob.get(show).status_code == 200  # the page, but its widget will say "Not found"


def recipe_link_token(url: str) -> str:
    """The token in a download link, ``http://localhost/exports/<token>/download``."""
    found = re.fullmatch(r"http://localhost/exports/([^/]+)/download", url)
    assert found, url
    return found.group(1)


def recipe_export(client: FlaskClient) -> dict[str, Any]:
    """Export, wait for the end, and return the document (the result holds the link)."""
    token = recipe_start(client).headers["Location"].rsplit("/", 1)[1]
    doc = poll(client, token, finished)
    assert doc["status"] == "succeeded", doc
    return dict(doc, token=token)


def test_recipe_an_old_export_still_downloads(load, tmp_path: Path) -> None:
    """Its owner's older exports download after newer ones push them out of the list
    (``/asyncstate/jobs`` shows the newest ``ASYNCSTATE_MAX_JOBS_PER_OWNER``); nobody
    else's token, or a forged one, ever does."""
    recipe = load("recipe")
    limit = 2
    app = recipe.create_app(
        {
            "EXPORT_DIR": str(tmp_path),
            "EXPORT_ROWS": 5,
            "EXPORT_PAUSE": 0,
            "ASYNCSTATE_MAX_JOBS_PER_OWNER": limit,
        }
    )
    assert app.config["ASYNCSTATE_KEEP_FINISHED"] == 86400
    alice, bob = app.test_client(), app.test_client()
    recipe_sign_in(alice, "alice")
    recipe_sign_in(bob, "bob")
    exports = [recipe_export(alice) for _ in range(limit + 3)]
    oldest = exports[0]
    listed = [job["id"] for job in alice.get("/asyncstate/jobs").get_json()]
    assert oldest["id"] not in listed  # out of "Your exports" (the newest few)
    url = oldest["result"]["url"]
    page = alice.get(f"/exports/{oldest['token']}").get_data(as_text=True)
    assert f'href="{url}"' in page  # the old export's page still shows its link...
    with alice.get(url) as download:  # ...and the link works
        assert download.status_code == 200, download.status_code
        assert download.get_data(as_text=True).splitlines()[:2] == ["order,year", "1,2024"]
    for export in exports:
        assert bob.get(export["result"]["url"]).status_code == 404  # alice's
    bobs = recipe_export(bob)
    assert alice.get(bobs["result"]["url"]).status_code == 404
    with bob.get(bobs["result"]["url"]) as theirs:
        assert theirs.status_code == 200
    forged = recipe_link_token(url)[:-2] + "xx"
    assert alice.get(f"/exports/{forged}/download").status_code == 404
    signed_out = app.test_client()
    assert signed_out.get(url).status_code == 302  # to the sign-in page


def test_recipe_a_refused_export_is_a_flashed_message(load, tmp_path: Path) -> None:
    recipe = load("recipe")
    app = recipe.create_app(
        {
            "EXPORT_DIR": str(tmp_path),
            "EXPORT_ROWS": 1000,
            "EXPORT_PAUSE": 0.01,
            "ASYNCSTATE_MAX_JOBS_PER_OWNER": 2,
        }
    )
    browser = app.test_client()
    recipe_sign_in(browser, "alice")
    tokens = [recipe_start(browser).headers["Location"].rsplit("/", 1)[1] for _ in range(2)]
    refused = recipe_start(browser)
    assert refused.status_code == 302 and refused.headers["Location"] == "/exports/"
    page = browser.get("/exports/").get_data(as_text=True)
    assert flashes(page) == [DEFAULT_LABELS["quotaExceeded"].format(limit=2)]
    assert len(widget_tokens(page)) == 2  # the panel: the two running exports

    cancel_headers = {**HEADERS, "X-CSRFToken": csrf_of(page)}  # what the widget sends
    assert browser.post(f"/asyncstate/cancel/{tokens[0]}", headers=HEADERS).status_code == 403
    for token in tokens:
        answer = browser.post(f"/asyncstate/cancel/{token}", headers=cancel_headers)
        assert answer.status_code == 202
        assert poll(browser, token, finished)["status"] == "cancelled"
    assert list(tmp_path.iterdir()) == []  # no half-written export stays


def test_batches_export_counts_its_children_and_shows_its_stages(load) -> None:
    example = load("batches", FILES=26, PAUSE=0.005)
    client = example.app.test_client()
    token = token_of(client.post("/export"))
    doc = poll(client, token, finished)
    assert doc["status"] == "succeeded" and doc["result"] == {"converted": 24, "failed": 2}
    assert doc["children"]["total"] == 26 and doc["children"]["failed"] == 2
    assert [s["name"] for s in doc["stages"]] == ["plan", "convert", "archive"]
    assert [line["text"] for line in doc["log"]] == [
        "26 files to convert",
        "24 converted, 2 failed",
    ]
    assert len(client.get("/asyncstate/jobs").get_json()) == 1  # the export stands for them


def test_batches_cancel_of_the_export_cancels_its_children(load) -> None:
    example = load("batches", FILES=40, PAUSE=0.2)
    client = example.app.test_client()
    token = token_of(client.post("/export"))
    poll(client, token, lambda d: d["stage"] == "convert" and (d["children"] or {}).get("running"))
    assert client.post(f"/asyncstate/cancel/{token}", headers=HEADERS).status_code == 202
    doc = poll(client, token, finished)
    assert doc["status"] == "cancelled"
    counts = poll(
        client,
        token,
        lambda d: d["children"]["queued"] + d["children"]["running"] == 0,
    )["children"]
    assert counts["cancelled"] >= 1 and counts["succeeded"] + counts["failed"] < 40
