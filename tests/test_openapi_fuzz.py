"""The live app against its own description (issue 25): schemathesis draws requests for every
operation of ``<prefix>/openapi.json`` and sends them over HTTP to the app served on a
loopback port, on two apps whose descriptions differ (Redis store with Flask-WTF's
CSRFProtect; the memory store without Flask-WTF), each with a guard and an admin guard. No
answer may be a 500, have a status or media type the description does not name for that
operation, or a body or header that breaks its schema.

The path parameters are drawn from the owner's real tokens and job ids (a running, a
succeeded, a failed and a cancelled job), another owner's token and whatever schemathesis
makes of ``{"type": "string"}``; each request is sent as the owner (its session cookie,
the same-origin header and the CSRF token), as another session without the proofs, or
signed out (no cookie: the guards send it to sign in).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
import schemathesis
from flask import redirect
from flask import request as request_of_flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.apps import Gate, define_jobs, make_app
from support.pages import ThreadedServer
from support.redis_server import RedisServer
from support.waiting import wait_until

from flask_asyncstate import openapi
from flask_asyncstate.security import csrf_token

#: Each operation's test takes up to a second or two (a cancel on Redis, a stream that waits
#: for its end); all of them, on both apps, 20 to 30 s.
pytestmark = pytest.mark.reliability

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
#: Requests drawn for each operation.
EXAMPLES = 30


def _order(operation_id: str) -> tuple[int, str]:
    """Reads first, then what changes a job, forgetting one last: the jobs are still in
    each of their states while most operations are drawn."""
    endpoint, _, method = operation_id.rpartition("_")
    spec = openapi.OPERATIONS[endpoint][method]
    return (2 if endpoint == "dismiss" else 1 if spec.get("proofs") else 0, operation_id)


#: Every operation the description has, by its operationId, but the description's own
#: (schemathesis leaves out the path it loaded the description from; test_clients.py
#: validates that answer).
OPERATION_IDS = sorted(
    (
        f"{endpoint}_{method}"
        for endpoint, methods in openapi.OPERATIONS.items()
        for method in methods
        if endpoint != "openapi"
    ),
    key=_order,
)


class Live:
    """The app on a loopback port, and whom a request may come from: the owner of the jobs
    (``None`` sends no cookie at all: signed out), and what the owner's jobs are called."""

    def __init__(self, url: str, senders: dict[str, requests.Session | None]) -> None:
        self.url, self.senders = url, senders
        self.tokens: list[str] = []
        self.job_ids: list[str] = []


@pytest.fixture(scope="module", params=["redis, CSRFProtect", "memory"])
def live(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Live]:
    """The app as the issue asks (Redis store, Flask-WTF's CSRF protection), and as it comes
    (memory store, no Flask-WTF): the description differs between them."""
    from flask_wtf.csrf import CSRFProtect

    on_redis = request.param.startswith("redis")
    if on_redis:
        with redis.Redis.from_url(redis_server.url) as client:
            client.flushall()
    app, ext = make_app(
        redis_server.url if on_redis else None,
        # a request with no cookie is sent to sign in: a 401 with login_url (the operator's
        # page: the guard's own redirect)
        guard=lambda: None if request_of_flask.cookies else redirect("/login"),
        admin_guard=lambda: None if request_of_flask.cookies else redirect("/login"),
        sse_max_age=0.3,  # a running job's stream ends soon
    )
    if on_redis:
        CSRFProtect(app)
    jobs = define_jobs(ext)
    gate = Gate()

    @ext.job(render_result=lambda rows: f"{rows} rows <imported>")
    def shows(job: Any) -> int:
        return 7

    @app.get("/begin")
    def begin() -> dict[str, Any]:
        """The caller's jobs, one for each way a job ends and one that runs, and the CSRF
        token of its session (None without Flask-WTF)."""
        started = [
            jobs["blocked"].start(gate.name),
            shows.start(),
            jobs["fails"].start(),
            jobs["until_cancelled"].start(),
        ]
        started[3].cancel()
        return {
            "tokens": [h.token for h in started],
            "ids": [h.id for h in started],
            "csrf": csrf_token(),
        }

    with ThreadedServer(app, ext) as server:
        owner, stranger = requests.Session(), requests.Session()
        made = owner.get(f"{server.url}/begin", timeout=10).json()
        owner.headers["X-Requested-With"] = "XMLHttpRequest"
        if made["csrf"]:
            owner.headers["X-CSRFToken"] = made["csrf"]
        theirs = stranger.get(f"{server.url}/begin", timeout=10).json()
        found = Live(server.url, {"owner": owner, "stranger": stranger, "signed out": None})
        found.tokens = [*made["tokens"], theirs["tokens"][0]]
        found.job_ids = made["ids"]

        def settled() -> bool:
            statuses = [
                owner.get(f"{server.url}/asyncstate/progress/{t}", timeout=10).json()["status"]
                for t in made["tokens"]
            ]
            return statuses == ["running", "succeeded", "failed", "cancelled"]

        wait_until(settled, 10)
        yield found
        gate.set()
        owner.close()
        stranger.close()


@pytest.fixture(scope="module")
def schema(live: Live) -> Any:
    loaded = schemathesis.openapi.from_url(f"{live.url}/asyncstate/openapi.json")
    assert loaded.get_base_url() == f"{live.url}/asyncstate"  # the description's server
    return loaded


def test_every_described_operation_is_fuzzed(schema: Any) -> None:
    described = {op.ok().definition.raw["operationId"] for op in schema.get_all_operations()}
    assert described == set(OPERATION_IDS)


@pytest.mark.parametrize("operation_id", OPERATION_IDS)
def test_the_live_app_answers_as_described(live: Live, schema: Any, operation_id: str) -> None:
    operation = schema.find_operation_by_id(operation_id)
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]  # negative: bad query values
    cases = st.one_of([operation.as_strategy(generation_mode=m) for m in modes])
    known: list[str] = []
    names = [p.name for p in operation.path_parameters]
    if names:
        (name,) = names
        known = live.tokens if name == "token" else live.job_ids
        real = st.sampled_from(known).flatmap(
            lambda value: st.one_of(
                [
                    operation.as_strategy(generation_mode=m, path_parameters={name: value})
                    for m in modes
                ]
            )
        )
        cases = st.one_of(real, cases)
    seen: Counter[int] = Counter()

    def run(case: Any, sender: str) -> None:
        response = case.call(session=live.senders[sender], timeout=10)
        seen[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    # first each real token (or job id) as its owner sends it, and the first as the others
    # do, so that every run reaches those answers; then what hypothesis draws
    given_values = [{name: value} for value in known] if names else [{}]
    explicit = [(v, "owner") for v in given_values]
    explicit += [(given_values[0], "stranger"), (given_values[0], "signed out")]
    for path_parameters, sender in explicit:
        run = example(case=operation.Case(path_parameters=path_parameters), sender=sender)(run)
    run = given(case=cases, sender=st.sampled_from(["owner", "owner", "stranger", "signed out"]))(
        run
    )
    run = settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(run)
    run()
    print(operation_id, dict(sorted(seen.items())))
    # the requests reached the answers worth reaching, not only refusals: a success, and
    # for a state-changing route the refusal of a request without the proofs too
    endpoint, _, method = operation_id.rpartition("_")
    spec = openapi.OPERATIONS[endpoint][method]
    assert seen.keys() & {int(s) for s in spec["responses"] if s.startswith("2")}, seen
    if spec.get("proofs"):  # the stranger sent no proofs
        assert 403 in seen, seen
    if spec["guard"] == "app" and method == "get":  # the guard refused the signed-out
        assert 401 in seen, seen
