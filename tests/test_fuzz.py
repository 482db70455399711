"""Hypothesis throws generated tokens, paths, methods, headers and bodies at every route.

Never a 500, never HTML under the prefix, never another session's data.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import quote

import pytest
from apps import define_jobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.reliability

TALLY: Counter[str] = Counter()

ROUTES = ["progress", "cancel", "events", "jobs", "asyncstate.js", "jquery.js", "nope", ""]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    from apps import make_app

    app, ext = make_app()
    jobs = define_jobs(ext)

    @app.post("/start")
    def start():  # type: ignore[no-untyped-def]
        handle = jobs["count"].start(1)
        handle.wait(10)
        return {"token": handle.token, "id": handle.id}

    mine, theirs = app.test_client(), app.test_client()
    own = mine.post("/start").json
    foreign = theirs.post("/start").json
    yield app, mine, own, foreign
    ext.shutdown()


def _mutations(token: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(token),
        st.builds(lambda i, c: token[: i % len(token)] + c + token[i % len(token) + 1 :],
                  st.integers(0, 200), st.characters(codec="utf-8")),
        st.builds(lambda n: token[: n % len(token)], st.integers(0, 200)),
        st.builds(lambda extra: token + extra, st.text(max_size=20)),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_routes_never_answer_500_html_or_foreign_data(world, data) -> None:  # type: ignore[no-untyped-def]
    _app, client, own, foreign = world
    route = data.draw(st.sampled_from(ROUTES))
    token = data.draw(st.one_of(
        _mutations(own["token"]), _mutations(foreign["token"]), st.text(max_size=80),
        st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    ))
    extra = data.draw(st.sampled_from(["", "/", "/x", "/../jobs", "?a=1"]))
    path = f"/asyncstate/{route}/{quote(token, safe='')}{extra}" if route else f"/asyncstate{extra}"
    method = data.draw(st.sampled_from(METHODS))
    headers = data.draw(st.dictionaries(
        st.sampled_from(["X-Requested-With", "Origin", "X-CSRFToken", "Content-Type", "Accept"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        max_size=4,
    ))
    body = data.draw(st.binary(max_size=200))
    with client.open(path, method=method, headers=headers, data=body) as response:
        payload = response.get_data()
    assert response.status_code < 500, (method, path, response.status_code, payload[:200])
    assert b"<html" not in payload.lower() and b"<!doctype" not in payload.lower(), (method, path)
    if response.mimetype not in ("text/javascript", "application/javascript", "text/css"):
        bodiless = method in ("HEAD", "OPTIONS") and not payload  # Flask's automatic answers
        assert bodiless or response.mimetype in ("application/json", "text/event-stream"), \
            (method, path, response.mimetype)
    assert foreign["id"].encode() not in payload, (method, path)
    TALLY[f"{method} {route or '/'} -> {response.status_code}"] += 1


def test_fuzz_report() -> None:
    """Runs after the fuzz test (file order) and prints what it threw and got back."""
    if TALLY:
        answers = Counter(key.rsplit(" ", 1)[1] for key in TALLY.elements())
        print(f"{sum(TALLY.values())} generated requests: status codes {dict(sorted(answers.items()))};"
              " no 500, no HTML, no foreign job id")
