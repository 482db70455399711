"""Hypothesis throws generated tokens, paths, methods, headers and bodies at every route.

Never a 500, never HTML under the prefix, never another session's data. The one
test also counts what it sent and got back, and fails if the generated requests
did not reach the answers worth reaching (a readable job, an accepted and a
refused cancel, a hidden job, a wrong method): a fuzz that only ever hits 404s
would pass while testing little.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.apps import define_jobs, make_app

pytestmark = pytest.mark.reliability

ROUTES = ["progress", "cancel", "events", "jobs", "asyncstate.js", "jquery.js", "nope", ""]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
#: Enough that each answer of MUST_SEE comes dozens of times, not by luck: over 60 seeds the
#: rarest (202 and 403) came at least 17 times, about 40 on average.
EXAMPLES = 1000
#: What the generated requests must have met at least once: the owner reads (200) and
#: cancels (202: the job ended, the document says how) their job; a cancel without
#: X-Requested-With or Origin is refused (403); a forged, foreign or unknown token is
#: hidden (404); a wrong method is refused (405).
MUST_SEE = {200, 202, 403, 404, 405}


@pytest.fixture(scope="module")
def world():
    app, ext = make_app()
    jobs = define_jobs(ext)

    @app.post("/start")
    def start():
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
        st.builds(
            lambda i, c: token[: i % len(token)] + c + token[i % len(token) + 1 :],
            st.integers(0, 200),
            st.characters(codec="utf-8"),
        ),
        st.builds(lambda n: token[: n % len(token)], st.integers(0, 200)),
        st.builds(lambda extra: token + extra, st.text(max_size=20)),
    )


_HEADERS = st.dictionaries(
    st.sampled_from(["X-Requested-With", "Origin", "X-CSRFToken", "Content-Type", "Accept"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    max_size=4,
)
#: What the widget (or a user's own code) sends: route, method, whose token, X-Requested-With.
_WELL_FORMED = [
    ("progress", "GET", "own", False),
    ("progress", "POST", "own", False),
    ("progress", "HEAD", "own", False),
    ("progress", "GET", "foreign", False),
    ("cancel", "POST", "own", True),
    ("cancel", "POST", "own", False),
    ("cancel", "POST", "foreign", True),
    ("events", "GET", "own", False),
    ("events", "GET", "foreign", False),
    ("jobs", "GET", None, False),
]


def _request(data: Any, own: str, foreign: str) -> tuple[str, str, str, dict[str, str]]:
    """(route, method, path, headers): half the time what the widget would send, with a real
    token (ours or another session's), half the time anything under the prefix."""
    headers = data.draw(_HEADERS)
    if data.draw(st.booleans(), label="well-formed"):
        route, method, whose, same_origin = data.draw(st.sampled_from(_WELL_FORMED))
        headers.pop("Origin", None)
        headers.pop("X-Requested-With", None)
        if same_origin:
            headers["X-Requested-With"] = "XMLHttpRequest"
        token = {"own": own, "foreign": foreign}.get(whose or "")
        return route, method, f"/asyncstate/{route}" + (f"/{token}" if token else ""), headers
    route = data.draw(st.sampled_from(ROUTES))
    token = data.draw(
        st.one_of(
            _mutations(own),
            _mutations(foreign),
            st.text(max_size=80),
            st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
        )
    )
    extra = data.draw(st.sampled_from(["", "/", "/x", "/../jobs", "?a=1"]))
    path = f"/asyncstate/{route}/{quote(token, safe='')}{extra}" if route else f"/asyncstate{extra}"
    return route, data.draw(st.sampled_from(METHODS)), path, headers


def test_routes_never_answer_500_html_or_foreign_data(world) -> None:
    _app, client, own, foreign = world
    codes: Counter[int] = Counter()
    tried: Counter[tuple[str, str]] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(data=st.data())
    def one_request(data) -> None:
        route, method, path, headers = _request(data, own["token"], foreign["token"])
        body = data.draw(st.binary(max_size=200))
        with client.open(path, method=method, headers=headers, data=body) as response:
            payload = response.get_data()
        assert response.status_code < 500, (method, path, response.status_code, payload[:200])
        assert b"<html" not in payload.lower() and b"<!doctype" not in payload.lower(), (
            method,
            path,
        )
        if response.mimetype not in ("text/javascript", "application/javascript", "text/css"):
            bodiless = method in ("HEAD", "OPTIONS") and not payload  # Flask's automatic answers
            assert bodiless or response.mimetype in ("application/json", "text/event-stream"), (
                method,
                path,
                response.mimetype,
            )
        assert foreign["id"].encode() not in payload, (method, path)
        codes[response.status_code] += 1
        tried[(method, route)] += 1

    one_request()

    sent = sum(codes.values())
    assert sent >= EXAMPLES, f"only {sent} requests generated"
    assert max(codes) < 500, codes
    assert MUST_SEE <= set(codes), f"never answered {sorted(MUST_SEE - set(codes))}: {codes}"
    assert {m for m, _r in tried} == set(METHODS), tried
    assert {r for _m, r in tried} == set(ROUTES), tried
    print(
        f"{sent} generated requests: status codes {dict(sorted(codes.items()))}; "
        "no 500, no HTML, no foreign job id"
    )
