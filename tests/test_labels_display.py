"""A job's display label (``@asyncstate.job(label=...)``) apart from its name: the document
and the jobs panel show the label, workers still look the job up by its name."""

from __future__ import annotations

from typing import Any

from flask import render_template_string, request
from flask_babel import LazyString

from flask_asyncstate import JobContext


def _labelled_jobs(ext: Any) -> dict[str, Any]:
    @ext.job(label="Import products")
    def import_products(job: JobContext) -> str:
        return "done"

    @ext.job
    def nightly_cleanup(job: JobContext) -> str:
        return "done"

    # A lazy label (as Flask-Babel's lazy_gettext makes): resolved at start(), in the
    # locale of the request that starts the job, never at import time (no request then).
    def translated() -> str:
        best = request.accept_languages.best_match(["de", "en"])
        return "Produkte exportieren" if best == "de" else "Export products"

    @ext.job(name="export_products", label=LazyString(translated))
    def export(job: JobContext) -> str:
        return "done"

    return {"import": import_products, "cleanup": nightly_cleanup, "export": export}


def test_the_label_is_in_the_document_and_the_jobs_panel(make_app) -> None:
    app, ext = make_app(ASYNCSTATE_EXECUTOR="inline")
    jobs = _labelled_jobs(ext)

    @app.post("/start/<which>")
    def start(which: str) -> dict[str, str]:
        return {"token": jobs[which].start().token}

    @app.get("/panel")
    def panel() -> str:
        return render_template_string("{{ asyncstate_jobs() }}")

    client = app.test_client()
    tokens = {w: client.post(f"/start/{w}").json["token"] for w in ("import", "cleanup")}
    tokens["export"] = client.post("/start/export", headers={"Accept-Language": "de"}).json["token"]
    with app.app_context():
        docs = {w: ext.status(t) for w, t in tokens.items()}
    assert (docs["import"]["name"], docs["import"]["label"]) == (
        "import_products",
        "Import products",
    )
    assert (docs["cleanup"]["name"], docs["cleanup"]["label"]) == ("nightly_cleanup",) * 2
    assert (docs["export"]["name"], docs["export"]["label"]) == (
        "export_products",
        "Produkte exportieren",  # the starting request's locale, stored as a plain string
    )
    assert list(docs["import"])[:3] == ["id", "name", "label"]
    progress = client.get(f"/asyncstate/progress/{tokens['import']}").json
    assert progress["label"] == "Import products"
    assert {j["label"] for j in client.get("/asyncstate/jobs").json} == {
        "Import products",
        "nightly_cleanup",
        "Produkte exportieren",
    }
    html = client.get("/panel").get_data(as_text=True)
    assert '<p class="asyncstate-job-name"' in html
    for shown in ("Import products", "nightly_cleanup", "Produkte exportieren"):
        assert f">{shown}</p>" in html
    assert ">import_products</p>" not in html and ">export_products</p>" not in html
    # The name, not the label, is what the job is registered (and looked up) by.
    assert ext.registered_job("import_products") is jobs["import"]
    assert ext.registered_job("Import products") is None
    assert jobs["import"].label == "Import products" and jobs["cleanup"].label is None


def test_a_worker_finds_a_labelled_job_by_its_name(redis_url) -> None:
    from support.apps import make_app as build

    from flask_asyncstate import workers as on_rq

    app, ext = build(redis_url, ASYNCSTATE_EXECUTOR="rq", ASYNCSTATE_RQ_QUEUE="labels")
    jobs = _labelled_jobs(ext)
    try:
        with app.test_request_context(headers={"Accept-Language": "en"}):
            handles = [jobs["import"].start(), jobs["export"].start()]
        with app.app_context():
            queued = handles[0].status()
            assert (queued["status"], queued["label"]) == ("queued", "Import products")
            on_rq.run_worker(ext.app_state(), ["labels"], burst=True, simple=True)
            docs = [h.status() for h in handles]
        assert [(d["status"], d["name"], d["label"]) for d in docs] == [
            ("succeeded", "import_products", "Import products"),
            ("succeeded", "export_products", "Export products"),
        ]
    finally:
        on_rq._worker_app = None
        ext.shutdown(1)
