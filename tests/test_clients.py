"""Clients beside the jQuery widget (issue 25, server side): the OpenAPI description of the
routes, the htmx fragment and its buttons, ``asyncstate_widget(client="htmx")`` and the
stream's HTML events for htmx's SSE extension."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import jsonschema
import pytest
from flask import Flask, render_template_string
from flask_wtf.csrf import CSRFProtect
from markupsafe import escape
from openapi_spec_validator import validate
from support.apps import Gate
from support.waiting import wait_until

from flask_asyncstate import JobStatus, openapi, testing
from flask_asyncstate.records import PUBLIC_FIELDS, REASONS
from flask_asyncstate.templating import DEFAULT_LABELS, STOP_POLLING
from flask_asyncstate.views import _ADMIN, _ASSETS

HOSTILE = '<img src=x onerror="alert(1)">&amp;'


@pytest.fixture
def web(make_jobs):
    """An app whose views start the tests' jobs, with an operator's page, a job with a
    hostile label and one that shows its result."""
    app, ext, jobs = make_jobs(admin_guard=lambda: True)
    gate = Gate()

    @ext.job(label=HOSTILE)
    def hostile(job: Any) -> None:
        job.progress(1, total=4, message=HOSTILE)
        gate.event.wait(10)

    @ext.job(render_result=lambda rows: f"{rows} rows <imported>")
    def shows(job: Any) -> int:
        return 7

    starters = {
        "count": lambda: jobs["count"].start(3),
        "blocked": lambda: jobs["blocked"].start(gate.name),
        "fails": lambda: jobs["fails"].start(),
        "hostile": hostile.start,
        "shows": shows.start,
    }

    @app.post("/start/<kind>")
    def start(kind: str) -> dict[str, str]:
        return {"token": starters[kind]().token}

    yield app, ext
    gate.set()


def _start(client: Any, kind: str) -> str:
    answer = client.post(f"/start/{kind}")
    assert answer.status_code == 200, answer.data
    return answer.json["token"]


def _status_of(client: Any, token: str, *wanted: str) -> dict[str, Any]:
    return wait_until(
        lambda: (d := client.get(f"/asyncstate/progress/{token}").json)["status"] in wanted and d,
        10,
    )


# -- OpenAPI ----------------------------------------------------------------------------


def test_openapi_description_is_valid_openapi_3_1_under_the_apps_prefix(make_app) -> None:
    app, _ext = make_app(ASYNCSTATE_URL_PREFIX="/tasks")
    client = app.test_client()
    answer = client.get("/tasks/openapi.json")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    document = answer.json
    validate(document)  # openapi-spec-validator: raises on any error
    assert document["openapi"] == "3.1.0"
    assert document["servers"][0]["url"] == "/tasks"
    assert "/progress/{token}" in document["paths"]  # paths are relative to the server
    # under a script root (an app mounted at /shop), the server URL says so
    mounted = client.get("/tasks/openapi.json", base_url="http://localhost/shop").json
    assert mounted["servers"][0]["url"] == "/shop/tasks"
    assert answer.headers["Cache-Control"] == "no-store"  # as every JSON answer


def test_every_rule_and_method_of_the_blueprint_is_described(app: Flask) -> None:
    document = app.test_client().get("/asyncstate/openapi.json").json
    operations = {
        op["operationId"] for methods in document["paths"].values() for op in methods.values()
    }
    endpoints = set()
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("asyncstate."):
            continue
        endpoint = rule.endpoint.split(".", 1)[1]
        endpoints.add(endpoint)
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule.removeprefix("/asyncstate"))
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = document["paths"][path][method.lower()]
            assert operation["operationId"] == f"{endpoint}_{method.lower()}"
            assert method.lower() in openapi.OPERATIONS[endpoint], (endpoint, method)
            assert operation["summary"] != "Not described"
    assert endpoints == set(openapi.OPERATIONS)  # no entry for a route that is gone
    assert len(operations) == sum(len(m) for m in openapi.OPERATIONS.values())
    # the guards the description names are the ones the views run
    unguarded = {e for e, ms in openapi.OPERATIONS.items() if ms[next(iter(ms))]["guard"] is None}
    assert {f"asyncstate.{e}" for e in unguarded} == _ASSETS
    admin = {e for e, ms in openapi.OPERATIONS.items() if ms[next(iter(ms))]["guard"] == "admin"}
    assert {f"asyncstate.{e}" for e in admin} == _ADMIN
    admin_ops = [
        op for m in document["paths"].values() for op in m.values() if "admin" in op["tags"]
    ]
    assert len(admin_ops) == 4
    assert all("only while an admin guard is set" in op["description"] for op in admin_ops)


def test_a_route_added_to_the_blueprint_later_is_never_silently_missing(app: Flask) -> None:
    app.add_url_rule("/asyncstate/new/<token>", "asyncstate.new", lambda token: "", methods=["PUT"])
    operation = app.test_client().get("/asyncstate/openapi.json").json["paths"]["/new/{token}"]
    assert operation["put"]["summary"] == "Not described"  # there, and the test above fails


def test_every_field_of_the_progress_document_has_a_schema(app: Flask) -> None:
    assert set(openapi.FIELDS) == set(PUBLIC_FIELDS)
    schemas = app.test_client().get("/asyncstate/openapi.json").json["components"]["schemas"]
    document = schemas["ProgressDocument"]
    assert list(document["properties"]) == list(PUBLIC_FIELDS)
    assert document["required"] == list(PUBLIC_FIELDS)
    assert all(
        document["properties"][f] != {"description": "Not described yet."} for f in PUBLIC_FIELDS
    )
    assert document["properties"]["status"]["enum"] == [s.value for s in JobStatus]
    assert document["properties"]["reason"]["enum"] == [*REASONS, None]
    assert "forced" in document["properties"]["reason"]["enum"]
    assert set(schemas["AdminRow"]["properties"]) == set(PUBLIC_FIELDS) - {"result"} | {
        "owner",
        "instance",
        "parent",
    }


def test_state_changing_routes_name_their_proofs(make_app) -> None:
    plain, _ext = make_app()
    document = plain.test_client().get("/asyncstate/openapi.json").json
    schemes = document["components"]["securitySchemes"]
    assert schemes["sameOrigin"]["name"] == "X-Requested-With"
    assert schemes["origin"]["name"] == "Origin"
    assert schemes["session"] == {**schemes["session"], "in": "cookie", "name": "session"}
    assert "csrf" not in schemes  # no Flask-WTF on this app: no token to send
    cancel = document["paths"]["/cancel/{token}"]["post"]
    assert cancel["security"] == [{"session": [], "sameOrigin": []}, {"session": [], "origin": []}]
    assert document["paths"]["/progress/{token}"]["get"]["security"] == [{"session": []}]
    assert document["paths"]["/asyncstate.js"]["get"]["security"] == []
    protected, _ext = make_app(WTF_CSRF_HEADERS=["X-Token"], SESSION_COOKIE_NAME="sid")
    CSRFProtect(protected)
    document = protected.test_client().get("/asyncstate/openapi.json").json
    validate(document)
    schemes = document["components"]["securitySchemes"]
    assert (schemes["csrf"]["in"], schemes["csrf"]["name"], schemes["session"]["name"]) == (
        "header",
        "X-Token",
        "sid",
    )
    for path, method in [
        ("/cancel/{token}", "post"),
        ("/retry/{token}", "post"),
        ("/jobs/{token}", "delete"),
        ("/admin/cancel/{job_id}", "post"),
        ("/admin/retry/{job_id}", "post"),
    ]:
        requirements = document["paths"][path][method]["security"]
        assert all({"session", "csrf"} <= set(r) for r in requirements), path
        assert "403" in document["paths"][path][method]["responses"]


def _check(document: dict[str, Any], path: str, method: str, answer: Any) -> None:
    """The answer's status is documented for that operation, and its JSON body fits the
    schema the description gives it."""
    responses = document["paths"][path][method]["responses"]
    assert str(answer.status_code) in responses, (path, method, answer.status_code)
    content = responses[str(answer.status_code)].get("content", {})
    assert answer.mimetype in content, (path, method, answer.mimetype)
    assert "Vary" in responses[str(answer.status_code)]["headers"]
    if answer.mimetype == "application/json":
        schema = {**content["application/json"]["schema"], "components": document["components"]}
        jsonschema.Draft202012Validator(schema).validate(answer.json)


def test_real_answers_fit_the_described_schemas(web) -> None:
    app, _ext = web
    client = testing.client(app)
    document = client.get("/asyncstate/openapi.json").json
    running = _start(client, "blocked")
    failed = _start(client, "fails")
    done = _start(client, "shows")
    _check(document, "/progress/{token}", "get", client.get(f"/asyncstate/progress/{running}"))
    _check(document, "/progress/{token}", "post", client.post(f"/asyncstate/progress/{done}"))
    _check(document, "/progress/{token}", "get", client.get("/asyncstate/progress/nope"))
    _status_of(client, failed, "failed")
    _status_of(client, done, "succeeded")
    _check(document, "/jobs", "get", client.get("/asyncstate/jobs"))
    _check(document, "/result/{token}", "get", client.get(f"/asyncstate/result/{done}"))
    _check(document, "/result/{token}", "get", client.get(f"/asyncstate/result/{failed}"))
    _check(document, "/retry/{token}", "post", client.post(f"/asyncstate/retry/{running}"))
    _check(
        document, "/retry/{token}", "post", app.test_client().post(f"/asyncstate/retry/{failed}")
    )
    _check(document, "/jobs/{token}", "delete", client.delete(f"/asyncstate/jobs/{running}"))
    _check(document, "/jobs/{token}", "delete", client.delete(f"/asyncstate/jobs/{done}"))
    _check(document, "/admin/jobs", "get", client.get("/asyncstate/admin/jobs"))
    _check(document, "/admin/jobs", "get", client.get("/asyncstate/admin/jobs?status=failed"))
    _check(document, "/admin/cancel/{job_id}", "post", client.post("/asyncstate/admin/cancel/x"))
    _check(document, "/events/{token}", "get", client.get("/asyncstate/events/nope"))
    _check(document, "/fragment/{token}", "get", client.get(f"/asyncstate/fragment/{running}"))
    _check(document, "/fragment/{token}", "get", client.get(f"/asyncstate/fragment/{failed}"))
    _check(document, "/cancel/{token}", "post", client.post(f"/asyncstate/cancel/{running}"))
    again = client.post(f"/asyncstate/retry/{failed}")
    _check(document, "/retry/{token}", "post", again)
    assert again.status_code == 202 and again.json["attempt"] == 2
    for path in ("/asyncstate.js", "/asyncstate.css", "/jquery.js", "/openapi.json"):
        with client.get(f"/asyncstate{path}") as answer:  # a file: closed when read
            _check(document, path, "get", answer)


def test_the_admin_routes_are_described_as_absent_without_an_admin_guard(app: Flask) -> None:
    client = testing.client(app)
    document = client.get("/asyncstate/openapi.json").json
    _check(document, "/admin/jobs", "get", client.get("/asyncstate/admin/jobs"))
    assert client.get("/asyncstate/admin/jobs").status_code == 404


def _events(text: str) -> list[dict[str, str]]:
    """The events of a stream as an EventSource dispatches them: a block with data lines
    (``event`` is "message" unless named); comments and a lone ``retry:`` are no event."""
    found = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        data = [line[6:] for line in lines if line.startswith("data: ")]
        if data:
            names = [line[7:] for line in lines if line.startswith("event: ")]
            found.append({"event": names[0] if names else "message", "data": "\n".join(data)})
    return found


def test_the_event_stream_is_described_one_event_at_a_time(make_jobs) -> None:
    """Regression (schemathesis): a text/event-stream schema describes each event, as an
    EventSource reads it, not the stream as one string; a JSON payload fits its schema."""
    app, _ext, jobs = make_jobs(sse_max_age=0.2)
    gate = Gate()

    @app.post("/start/<kind>")
    def start(kind: str) -> dict[str, str]:
        handle = jobs["count"].start(2) if kind == "count" else jobs["blocked"].start(gate.name)
        return {"token": handle.token}

    client = testing.client(app)
    document = client.get("/asyncstate/openapi.json").json
    validate(document)
    answer = document["paths"]["/events/{token}"]["get"]["responses"]["200"]
    schema = answer["content"]["text/event-stream"]["schema"]
    event_schema = {**schema, "components": document["components"]}
    done, running = _start(client, "count"), _start(client, "blocked")
    _status_of(client, done, "succeeded")
    seen = []
    try:
        for url in (
            f"/asyncstate/events/{done}",
            f"/asyncstate/events/{done}?format=html",
            f"/asyncstate/events/{running}",  # alive past sse_max_age: reconnect
        ):
            streamed = client.get(url, buffered=False)
            _check(document, "/events/{token}", "get", streamed)
            events = _events(b"".join(streamed.response).decode())
            streamed.close()
            for event in events:
                jsonschema.Draft202012Validator(event_schema).validate(event)
                (branch,) = [
                    b
                    for b in document["components"]["schemas"]["Event"]["oneOf"]
                    if event["event"] in b["properties"]["event"].get("enum", [])
                    or event["event"] == b["properties"]["event"].get("const")
                ]
                content = branch["properties"]["data"].get("contentSchema")
                if content is not None:  # JSON in the data: that fits its schema too
                    payload = json.loads(event["data"])
                    whole = {**content, "components": document["components"]}
                    jsonschema.Draft202012Validator(whole).validate(payload)
                seen.append(event["event"])
    finally:
        gate.set()
    assert set(seen) == {"message", "end", "reconnect"}
    assert "type" not in schema  # an event, not {"type": "string"} for the whole stream


def test_a_reading_post_names_the_csrf_token_flask_wtf_checks(web) -> None:
    """Regression (schemathesis): Flask-WTF checks every POST, the reading POST /progress
    too, so its description names the CSRF token and the 403 for a request without it."""
    app, _ext = web
    plain = openapi.describe(app)  # before CSRFProtect (a request would end the setup)
    assert plain["paths"]["/progress/{token}"]["post"]["security"] == [{"session": []}]
    CSRFProtect(app)
    session = testing.client(app)  # sends the token
    document = session.get("/asyncstate/openapi.json").json
    validate(document)
    post = document["paths"]["/progress/{token}"]["post"]
    assert post["security"] == [{"session": [], "csrf": []}]
    assert "CSRF" in post["responses"]["403"]["description"]
    assert document["paths"]["/progress/{token}"]["get"]["security"] == [{"session": []}]
    token = _start(session, "blocked")
    _check(document, "/progress/{token}", "post", session.post(f"/asyncstate/progress/{token}"))
    browser = app.test_client()
    cookie = session.get_cookie("session")
    assert cookie is not None
    browser.set_cookie("session", cookie.value)
    refused = browser.post(f"/asyncstate/progress/{token}")
    assert refused.status_code == 403 and "CSRF" in refused.json["error"]
    _check(document, "/progress/{token}", "post", refused)
    # an app that has Flask-WTF check only the views it marks: nothing to name
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    unchecked = browser.get("/asyncstate/openapi.json").json
    assert unchecked["paths"]["/progress/{token}"]["post"]["security"] == [{"session": []}]
    assert unchecked["paths"]["/cancel/{token}"]["post"]["security"] == [
        {"session": [], "sameOrigin": []},
        {"session": [], "origin": []},
    ]
    assert browser.post(f"/asyncstate/progress/{token}").status_code == 200


# -- the htmx fragment ------------------------------------------------------------------


def _button(page: str, name: str) -> dict[str, str] | None:
    """The attributes of the widget's button of class asyncstate-<name>, unescaped."""
    found = re.search(rf'<button [^>]*class="asyncstate-{name}"[^>]*>', page)
    if found is None:
        return None
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', found.group(0))}


def _root(page: str) -> dict[str, str]:
    found = re.search(r'<div class="asyncstate[ "][^>]*>', page)
    assert found is not None, page
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', found.group(0))}


def test_an_unfinished_jobs_fragment_polls_itself_and_offers_cancel(web) -> None:
    app, _ext = web
    client = app.test_client()
    token = _start(client, "blocked")
    answer = client.get(f"/asyncstate/fragment/{token}")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    assert answer.headers["Cache-Control"] == "no-store"
    page = answer.get_data(as_text=True)
    root = _root(page)
    assert root["hx-get"] == f"/asyncstate/fragment/{token}"
    assert (root["hx-trigger"], root["hx-swap"]) == ("every 1s", "outerHTML")
    assert (
        'role="progressbar"' in page and 'aria-valuemin="0"' in page and 'aria-busy="true"' in page
    )
    cancel = _button(page, "cancel")
    assert cancel is not None and _button(page, "retry") is None
    assert cancel["hx-post"] == f"/asyncstate/cancel/{token}?format=html"
    assert json.loads(cancel["hx-headers"]) == {"X-Requested-With": "XMLHttpRequest"}
    assert cancel["hx-target"] == "closest .asyncstate"
    # the interval asked for is kept on every URL, within bounds
    slow = _root(client.get(f"/asyncstate/fragment/{token}?interval=2500").get_data(as_text=True))
    assert slow["hx-get"] == f"/asyncstate/fragment/{token}?interval=2500"
    assert slow["hx-trigger"] == "every 2500ms"
    fast = _root(client.get(f"/asyncstate/fragment/{token}?interval=1").get_data(as_text=True))
    assert fast["hx-trigger"] == "every 250ms"
    # the button does what it says: the cancel answers the fragment, cancelling
    headers = json.loads(cancel["hx-headers"])
    cancelled = client.post(cancel["hx-post"], headers=headers)
    assert cancelled.status_code == 202 and cancelled.mimetype == "text/html"
    assert DEFAULT_LABELS["cancelling"] in cancelled.get_data(as_text=True)
    assert _root(cancelled.get_data(as_text=True))["hx-get"] == root["hx-get"]  # polls on
    # and without the header, a cross-site form gets a JSON 403
    assert client.post(cancel["hx-post"]).status_code == 403


def test_a_final_jobs_fragment_answers_286_and_stops_polling(web) -> None:
    app, _ext = web
    client = app.test_client()
    token = _start(client, "count")
    _status_of(client, token, "succeeded")
    answer = client.get(f"/asyncstate/fragment/{token}")
    assert answer.status_code == STOP_POLLING == 286
    page = answer.get_data(as_text=True)
    assert "hx-get" not in page and "hx-trigger" not in page
    assert _button(page, "cancel") is None and _button(page, "retry") is None  # it succeeded
    assert 'aria-valuenow="100"' in page and "asyncstate--succeeded" in page
    assert f'role="status">{DEFAULT_LABELS["succeeded"]}<' in page


def test_a_succeeded_jobs_fragment_shows_its_result_escaped(web) -> None:
    app, _ext = web
    client = app.test_client()
    token = _start(client, "shows")
    _status_of(client, token, "succeeded")
    page = client.get(f"/asyncstate/fragment/{token}").get_data(as_text=True)
    assert '<div class="asyncstate-result">7 rows &lt;imported&gt;</div>' in page


def test_a_failed_job_offers_try_again_which_polls_again(web) -> None:
    app, _ext = web
    client = app.test_client()
    token = _start(client, "fails")
    _status_of(client, token, "failed")
    answer = client.get(f"/asyncstate/fragment/{token}")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 286
    assert f"{DEFAULT_LABELS['failed']}: ValueError: bad row 7" in page
    retry = _button(page, "retry")
    assert retry is not None and _button(page, "cancel") is None
    assert retry["hx-post"] == f"/asyncstate/retry/{token}?format=html"
    assert ">Try again</button>" in page
    again = client.post(retry["hx-post"], headers=json.loads(retry["hx-headers"]))
    assert again.status_code == 202 and again.mimetype == "text/html"
    assert _root(again.get_data(as_text=True)).get("hx-get") == f"/asyncstate/fragment/{token}"
    assert client.get(f"/asyncstate/progress/{token}").json["attempt"] == 2


def test_another_owners_token_gets_the_same_not_found_fragment_as_garbage(web) -> None:
    app, _ext = web
    token = _start(app.test_client(), "blocked")
    stranger = app.test_client()
    theirs = stranger.get(f"/asyncstate/fragment/{token}")
    garbage = stranger.get("/asyncstate/fragment/garbage")
    assert theirs.status_code == garbage.status_code == 286  # htmx swaps it, stops polling
    assert theirs.data == garbage.data
    assert theirs.headers == garbage.headers
    page = theirs.get_data(as_text=True)
    assert DEFAULT_LABELS["notFound"] in page and "hx-" not in page and token not in page
    # the action routes keep their JSON 404 for it
    assert stranger.post(
        f"/asyncstate/cancel/{token}?format=html", headers={"X-Requested-With": "x"}
    ).json


def test_a_hostile_message_and_label_are_escaped(web) -> None:
    app, _ext = web
    client = app.test_client()
    token = _start(client, "hostile")
    wait_until(lambda: client.get(f"/asyncstate/progress/{token}").json["message"], 10)
    page = client.get(f"/asyncstate/fragment/{token}").get_data(as_text=True)
    assert "<img" not in page
    escaped = str(escape(HOSTILE))
    assert f'aria-label="{escaped}"' in page  # the job's label names the bar
    assert f'aria-live="polite">{escaped}</p>' in page
    assert f'aria-valuetext="25% ({escaped})"' in page


def test_the_buttons_send_flask_wtfs_csrf_token(web) -> None:
    app, _ext = web
    CSRFProtect(app)
    browser = app.test_client()
    session = testing.client(app)  # sends the token to the start view, which CSRF guards too
    token = _start(session, "blocked")
    # the same browser (its session cookie), posting only what the button says
    cookie = session.get_cookie("session")
    assert cookie is not None
    browser.set_cookie("session", cookie.value)
    page = browser.get(f"/asyncstate/fragment/{token}").get_data(as_text=True)
    cancel = _button(page, "cancel")
    assert cancel is not None
    headers = json.loads(cancel["hx-headers"])
    assert set(headers) == {"X-Requested-With", "X-CSRFToken"} and headers["X-CSRFToken"]
    refused = browser.post(cancel["hx-post"], headers={"X-Requested-With": "XMLHttpRequest"})
    assert refused.status_code == 403 and "CSRF" in refused.json["error"]
    assert browser.post(cancel["hx-post"], headers=headers).status_code == 202


# -- asyncstate_widget(token, client="htmx") ---------------------------------------------


def _render(app: Flask, client: Any, source: str, **context: Any) -> str:
    """Render a template in a request of ``client``'s session (its cookies)."""
    cookie = client.get_cookie(app.config.get("SESSION_COOKIE_NAME", "session"))
    headers = {"Cookie": f"{cookie.key}={cookie.value}"} if cookie is not None else {}
    with app.test_request_context("/page", headers=headers):
        return render_template_string(source, **context)


def test_the_htmx_widget_renders_the_fragment_inline_with_no_script(web) -> None:
    app, _ext = web
    client = app.test_client()
    token = _start(client, "blocked")
    page = _render(
        app,
        client,
        "{{ asyncstate_widget(token, client='htmx') }}{{ asyncstate_widget(token, client='htmx') }}",
        token=token,
    )
    assert "<script" not in page and "jquery" not in page.lower()  # htmx is all a page needs
    assert page.count('rel="stylesheet"') == 1  # once a page
    assert page.count(f'hx-get="/asyncstate/fragment/{token}"') == 2
    assert "data-asyncstate-token" not in page  # the jQuery plugin leaves it alone
    assert (
        _render(app, client, "{{ asyncstate_widget('nope', client='htmx') }}").count(
            DEFAULT_LABELS["notFound"]
        )
        == 1
    )
    with pytest.raises(ValueError, match="client"):
        _render(app, client, "{{ asyncstate_widget(token, client='vue') }}", token=token)
    with pytest.raises(TypeError, match="labels"):
        _render(
            app, client, "{{ asyncstate_widget(token, client='htmx', labels={}) }}", token=token
        )


def test_the_htmx_widget_follows_the_stream_with_the_sse_extension(web) -> None:
    app, _ext = web
    client = app.test_client()
    token = _start(client, "blocked")
    page = _render(
        app, client, "{{ asyncstate_widget(token, client='htmx', mode='sse') }}", token=token
    )
    assert 'hx-ext="sse"' in page
    assert f'sse-connect="/asyncstate/events/{token}?format=html"' in page
    assert 'sse-swap="message"' in page and 'sse-close="end"' in page
    assert "hx-get" not in page  # the stream brings the changes: no polling beside it
    cancel = _button(page, "cancel")
    assert cancel is not None and cancel["hx-swap"] == "none"


def test_the_html_stream_carries_the_fragment_in_its_events(web) -> None:
    app, _ext = web
    client = app.test_client()
    token = _start(client, "count")
    _status_of(client, token, "succeeded")
    answer = client.get(f"/asyncstate/events/{token}?format=html", buffered=False)
    assert answer.status_code == 200 and answer.mimetype == "text/event-stream"
    text = b"".join(answer.response).decode()
    answer.close()
    frames = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if not any(line.startswith("data: ") for line in lines):
            continue
        names = [line[7:] for line in lines if line.startswith("event: ")]
        assert all(line.startswith(("event: ", "data: ")) for line in lines), block
        frames.append(
            (
                names[0] if names else "message",
                "\n".join(l[6:] for l in lines if l.startswith("data: ")),
            )
        )
    assert [name for name, _data in frames] == ["message", "end"]
    fragment = client.get(f"/asyncstate/fragment/{token}").get_data(as_text=True)
    assert frames[0][1] == frames[1][1] == fragment.strip("\n")
    # the JSON stream is as it was
    plain = client.get(f"/asyncstate/events/{token}", buffered=False)
    text = b"".join(plain.response).decode()
    plain.close()
    assert json.loads(text.split("event: end\ndata: ")[1])["status"] == "succeeded"


def test_a_refused_html_stream_hands_over_the_polling_widget(web, monkeypatch) -> None:
    """Over the stream limits, ``?format=html`` gets a stream of one message (the widget
    that polls by itself) and ``end``: htmx's SSE extension cannot read a 429, and would open
    the stream again and again. The JSON stream keeps its 429."""
    app, ext = web
    client = app.test_client()
    token = _start(client, "blocked")
    monkeypatch.setattr(ext.app_state(app).streams, "acquire", lambda owner: None)  # limits
    answer = client.get(f"/asyncstate/events/{token}?format=html&interval=500")
    assert answer.status_code == 200 and answer.mimetype == "text/event-stream"
    blocks = answer.get_data(as_text=True).split("\n\n")
    assert blocks[0] == "retry: 2000"
    assert blocks[2] == "event: end\ndata: " and blocks[3:] == [""]
    html = "\n".join(line.removeprefix("data: ") for line in blocks[1].splitlines())
    assert f'hx-get="/asyncstate/fragment/{token}?interval=500"' in html
    assert 'hx-trigger="every 500ms"' in html
    plain = client.get(f"/asyncstate/events/{token}")
    assert plain.status_code == 429 and plain.headers["Retry-After"] == "10"


# -- structured progress in the htmx widget (issue 26) -----------------------------------


@pytest.fixture
def structured(make_app):
    """An app with a parent of three children (the second fails) and a job in steps with
    a trail; both wait on ``gate`` (its children and its second step)."""
    app, ext = make_app(ASYNCSTATE_MAX_WORKERS=8)
    gate = Gate()

    @ext.job
    def piece(job: Any, fails: bool) -> None:
        while not gate.event.wait(0.02):
            job.check_cancelled()
        if fails:
            raise ValueError("broken file")

    @ext.job
    def batch(job: Any) -> None:
        for number in range(3):
            job.spawn(piece, number == 1)
        job.wait_children()

    @ext.job
    def staged(job: Any) -> None:
        with job.stage("plan"):
            job.log(HOSTILE)
        with job.stage("convert"):
            job.log("converting")
            gate.event.wait(10)

    jobs = {"batch": batch, "staged": staged}

    @app.post("/start/<kind>")
    def start(kind: str) -> dict[str, str]:
        return {"token": jobs[kind].start().token}

    yield app, gate
    gate.set()


def _summary(page: str) -> dict[str, str]:
    found = re.search(r"<summary [^>]*>", page)
    assert found is not None, page
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', found.group(0))}


def test_a_parents_fragment_shows_its_childrens_totals(structured) -> None:
    app, gate = structured
    client = app.test_client()
    token = _start(client, "batch")
    wait_until(
        lambda: (
            (client.get(f"/asyncstate/progress/{token}").json["children"] or {}).get("running") == 3
        ),
        10,
    )
    page = client.get(f"/asyncstate/fragment/{token}").get_data(as_text=True)
    totals = DEFAULT_LABELS["children"].format(done=0, total=3)
    assert f'<p class="asyncstate-children">{totals}</p>' in page
    assert 'aria-valuenow="0"' in page  # its progress is its children's
    assert "asyncstate-stages" not in page and "asyncstate-trail" not in page
    gate.set()
    _status_of(client, token, "succeeded")
    page = client.get(f"/asyncstate/fragment/{token}").get_data(as_text=True)
    failed = DEFAULT_LABELS["childrenFailed"].format(count=1)
    totals = f"{DEFAULT_LABELS['children'].format(done=3, total=3)}, {failed}"
    assert f'<p class="asyncstate-children">{totals}</p>' in page


def test_the_fragment_lists_the_steps_and_keeps_the_trail_as_asked(structured) -> None:
    app, _gate = structured
    client = app.test_client()
    token = _start(client, "staged")
    wait_until(lambda: client.get(f"/asyncstate/progress/{token}").json["stage"] == "convert", 10)
    steps = "step=plan&step=convert&step=archive"
    page = client.get(f"/asyncstate/fragment/{token}?{steps}").get_data(as_text=True)
    items = re.findall(
        r'<li class="asyncstate-stage asyncstate-stage--(\w+)"( aria-current="step")?>'
        r'<span class="asyncstate-stage-name">([^<]*)</span> '
        r'<span class="asyncstate-visually-hidden">([^<]*)</span></li>',
        page,
    )
    words = {k: DEFAULT_LABELS[k] for k in ("stageDone", "stageCurrent", "stageToCome")}
    assert items == [
        ("done", "", "plan", words["stageDone"]),
        ("current", ' aria-current="step"', "convert", words["stageCurrent"]),
        ("todo", "", "archive", words["stageToCome"]),  # named by ?step=, not begun
    ]
    assert f'<ol class="asyncstate-stages" aria-label="{DEFAULT_LABELS["stages"]}">' in page
    # the trail: closed, its lines text (escaped), each with the time since the job began
    assert '<details class="asyncstate-trail">' in page
    assert "<img" not in page
    lines = re.findall(
        r'<li><time datetime="([^"]+)">(\d+:\d\d)</time> <span class="asyncstate-log-text">'
        r"([^<]*)</span></li>",
        page,
    )
    assert [html.unescape(text) for _iso, _time, text in lines] == [HOSTILE, "converting"]
    assert all(iso.endswith("+00:00") for iso, _time, _text in lines)
    # its summary asks for the fragment with the trail open (the steps kept), which then
    # polls with it open; from there, it asks for it closed again
    summary = _summary(page)
    assert summary.pop("id").endswith("-details")
    assert summary == {
        "hx-get": f"/asyncstate/fragment/{token}?{steps}&details=1",
        "hx-target": "closest .asyncstate",
        "hx-swap": "outerHTML",
        "hx-sync": "closest .asyncstate:replace",  # a poll in flight cannot undo the click
    }
    assert summary_text(page) == DEFAULT_LABELS["showDetails"]
    opened = client.get(summary["hx-get"]).get_data(as_text=True)
    assert '<details class="asyncstate-trail" open>' in opened
    assert _root(opened)["hx-get"] == summary["hx-get"]
    assert _button(opened, "cancel")["hx-post"] == (
        f"/asyncstate/cancel/{token}?format=html&{steps}&details=1"
    )
    assert _summary(opened)["hx-get"] == f"/asyncstate/fragment/{token}?{steps}"


def summary_text(page: str) -> str:
    found = re.search(r"<summary [^>]*>([^<]*)</summary>", page)
    assert found is not None, page
    return html.unescape(found.group(1))


def test_on_a_stream_the_trail_reopens_the_stream_as_asked(structured) -> None:
    app, _gate = structured
    client = app.test_client()
    token = _start(client, "staged")
    wait_until(lambda: client.get(f"/asyncstate/progress/{token}").json["stage"] == "convert", 10)
    page = _render(
        app,
        client,
        "{{ asyncstate_widget(token, client='htmx', mode='sse', steps=['plan', 'zip']) }}",
        token=token,
    )
    events = f"/asyncstate/events/{token}?format=html&step=plan&step=zip"
    assert f'sse-connect="{html.escape(events)}"' in page
    assert "asyncstate-stage--todo" in page and ">zip</span>" in page
    summary = _summary(page)
    assert summary["hx-target"] == "closest .asyncstate-stream"
    assert (
        summary["hx-get"] == f"/asyncstate/fragment/{token}?step=plan&step=zip&details=1&live=sse"
    )
    # the answer: the stream's container again, on a stream whose events keep it open
    opened = client.get(summary["hx-get"]).get_data(as_text=True)
    assert f'sse-connect="{html.escape(events)}&amp;details=1"' in opened
    assert '<details class="asyncstate-trail" open>' in opened
    assert "hx-get" not in opened.split("<summary")[0]  # no polling beside the stream
    with pytest.raises(TypeError, match="list of stage names"):
        _render(app, client, "{{ asyncstate_widget(t, client='htmx', steps='plan') }}", t=token)


def test_step_names_stay_short_enough_for_every_url_they_ride_in(web) -> None:
    """``steps=`` / ``?step=`` go into every URL the htmx widget asks: 50 names of 200
    non-ASCII characters would make a request line servers refuse (gunicorn: 4 KiB)."""
    from flask_asyncstate.templating import step_names

    assert step_names(n for n in ["plan", "", "zip"]) == ["plan", "zip"]  # any iterable
    kept = step_names([f"étape {i} " + "é" * 60 for i in range(50)])
    assert 0 < len(kept) < 50 and kept[0].startswith("étape 0 ")  # the first ones, in order
    app, _ext = web
    client = app.test_client()
    token = _start(client, "blocked")
    query = "&".join(f"step=%C3%A9tape{i}{'%C3%A9' * 60}" for i in range(50))
    answer = client.get(f"/asyncstate/fragment/{token}?{query}")
    assert answer.status_code == 200
    urls = re.findall(r'(?:hx-get|hx-post)="([^"]+)"', answer.get_data(as_text=True))
    assert urls and max(len(u) for u in urls) < 2048, [len(u) for u in urls]
