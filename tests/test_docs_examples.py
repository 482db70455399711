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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient

from flask_asyncstate.labels import DEFAULT_LABELS

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
HEADERS = {"X-Requested-With": "XMLHttpRequest"}  # the cancel route's same-origin proof
FINAL = {"succeeded", "failed", "cancelled", "lost"}
#: Module constants of the examples (sizes and pauses of their made-up work).
CONSTANTS = {"PAUSE", "STEPS", "PRODUCTS", "PAGES"}
_serial = itertools.count()


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ModuleType]]:
    """``load("iter", ASYNCSTATE_EAGER="true", PAUSE=0)``: import docs/examples/iter.py afresh.

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
        spec = importlib.util.spec_from_file_location(
            f"docs_example_{path.stem}_{next(_serial)}", path
        )
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


# -- docs/iter.rst ---------------------------------------------------------------------


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


def test_iter_eager_mode_runs_the_whole_import_in_the_post(load) -> None:
    example = load("iter", ASYNCSTATE_EAGER="true", PRODUCTS=40, PAUSE=0)
    client = example.app.test_client()
    token = token_of(client.post("/import"))
    doc = client.get(f"/asyncstate/progress/{token}").get_json()
    assert doc["status"] == "succeeded" and doc["message"] == "40 of 40 products"


# -- docs/eta.rst ----------------------------------------------------------------------


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


# -- docs/unique.rst -------------------------------------------------------------------


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


# -- docs/owners.rst -------------------------------------------------------------------


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
    example = load("owners", ASYNCSTATE_MAX_JOBS_PER_SESSION=2, STEPS=1000, PAUSE=0.01)
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


# -- docs/panel.rst --------------------------------------------------------------------


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
    assert 'data-asyncstate-mode="auto"' in page
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


# -- docs/i18n.rst ---------------------------------------------------------------------


def labels_of(html: str) -> dict[str, str]:
    import html as html_module
    import json

    (raw,) = re.findall(r'data-asyncstate-labels="([^"]*)"', html)
    return json.loads(html_module.unescape(raw))


def test_labels_override_some_words_and_turn_notifications_on(load) -> None:
    example = load("labels", ASYNCSTATE_EAGER="true", STEPS=5, PAUSE=0)
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
        ASYNCSTATE_EAGER="true",
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
