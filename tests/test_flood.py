"""Admission limits under load: the example app under real gunicorn (1 worker x 16 threads).

Jobs and Flask-Session sessions live in the session's redis-server
(``REDIS_URL``). Three scenarios:

- a flood of ``POST /import`` from cookie-less clients against a small
  ``ASYNCSTATE_MAX_QUEUED``: every answer is JSON 202, 429 or 503 (with
  ``Retry-After``), the instance keeps answering and heartbeating, no job is
  ``lost``, and once the backlog is cancelled a new user's job succeeds;
- 16 simultaneous starts in one session: exactly
  ``ASYNCSTATE_MAX_JOBS_PER_OWNER`` (5) accepted, the rest 429, and the
  session lists exactly the accepted jobs;
- 50 event streams of one session: exactly ``max_streams_per_owner`` (4, a tuning
  keyword) open, the rest 429 at once, and the app still answers ``GET /``.

Marked ``reliability``; each test prints what it held.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask import Flask
from support.gunicorn_server import (
    SECRET_KEY,
    GunicornServer,
    Prober,
    Sample,
    beat_age,
    clone,
    instances,
    is_json,
    job_token,
    post_cancel,
    post_import,
    prepare,
    spread,
    timed_request,
)
from support.waiting import WaitTimeout, wait_until

from flask_asyncstate import AsyncState

pytestmark = pytest.mark.reliability

UNFINISHED = ("queued", "running")
#: The library's defaults these tests are written against.
MAX_JOBS_PER_OWNER = 5
MAX_STREAMS_PER_OWNER = 4
MAX_WORKERS = 4


def _log_tail(server: GunicornServer) -> str:
    return f"\n--- gunicorn log (tail) ---\n{server.log_text(4000)}"


def _fail_on(problems: list[str], server: GunicornServer, observed: Sequence[str] = ()) -> None:
    """Fail the test with every problem found, what was measured, and the server log's tail."""
    if problems:
        seen = "".join(f"\n  {line}" for line in observed)
        pytest.fail(
            "\n".join(problems) + (f"\nobserved:{seen}" if seen else "") + _log_tail(server),
            pytrace=False,
        )


# -- a. the flood ---------------------------------------------------------------------------


FLOOD_REQUESTS = 4000
FLOOD_CLIENTS = 32
FLOOD_BUDGET = 60.0  # seconds: requests not sent by then are skipped (and counted)
MAX_QUEUED = 500
HEARTBEAT = 1.0


def _flood_one(
    url: str, needs_csrf: bool, deadline: float, answered: Counter[str]
) -> Sample | None:
    """One cookie-less client: a fresh cookie jar, ``GET /`` if CSRF is on, ``POST /import``."""
    if time.monotonic() > deadline:
        return None
    with requests.Session() as client:
        csrf = prepare(client, url) if needs_csrf else None
        sample = timed_request(lambda: post_import(client, url, csrf, timeout=15))
    answered["requests"] += 1  # a gauge for list_mid_flood: a racing increment lost is harmless
    return sample


def _cancel_all(redis_url: str, tokens: list[str]) -> tuple[int, Counter[str]]:
    """Cancel the jobs of ``tokens`` with the public API (``asyncstate.cancel``) from here.

    Returns how many cancels were stored, and the exceptions any raised (``Type: message``).
    """
    app = Flask("flood-cleanup")
    app.config.update(SECRET_KEY=SECRET_KEY, ASYNCSTATE_REDIS_URL=redis_url)
    ext = AsyncState(app)
    cancelled, raised = 0, Counter[str]()
    try:
        with app.app_context():
            for token in tokens:
                try:
                    cancelled += bool(ext.cancel(token))
                except Exception as exc:  # noqa: BLE001 - one failure must not stop the cleanup
                    raised[f"{type(exc).__name__}: {exc}"] += 1
    finally:
        ext.shutdown(timeout=2)
    return cancelled, raised


def _within(predicate: Callable[[], Any], timeout: float, interval: float) -> Any:
    """:func:`wait_until`'s value, or None at the timeout: the caller reports it with the rest."""
    try:
        return wait_until(predicate, timeout, interval=interval)
    except WaitTimeout:
        return None


def test_flood_of_cookieless_starts_is_refused_cleanly(serve, redis_url: str) -> None:
    server = serve(
        workers=1,
        threads=16,
        env={
            "REDIS_URL": redis_url,
            "FLASK_ASYNCSTATE_MAX_QUEUED": str(MAX_QUEUED),
            "FLASK_ASYNCSTATE_HEARTBEAT_INTERVAL": str(HEARTBEAT),
            # 2 s jobs, 4 at a time: the queue fills within a second of flood and never drains
            "EXAMPLE_PRODUCTS": "40",
            "EXAMPLE_BATCH": "10",
            "EXAMPLE_PAUSE": "0.5",
        },
    )
    url = server.url
    worker = server.worker_pid()
    needs_csrf = prepare(requests.Session(), url) is not None
    problems: list[str] = []

    beat_ages: list[float] = []
    stop_beats = threading.Event()

    def watch_beats() -> None:
        while not stop_beats.wait(0.5):
            beat_ages.append(beat_age(redis_url, worker))

    page = Prober(lambda: requests.get(url + "/", timeout=10), every=0.25).start()
    beats = threading.Thread(target=watch_beats, daemon=True)
    beats.start()
    mid_flood_lost: list[str] = []
    answered: Counter[str] = Counter()

    def list_mid_flood() -> None:  # the CLI once while the flood is on
        try:
            wait_until(
                lambda: answered["requests"] >= FLOOD_REQUESTS // 4,
                FLOOD_BUDGET,
                interval=0.1,
                message="a quarter of the flood answered",
            )
            jobs = server.cli_json("list")
            mid_flood_lost.extend(j["id"] for j in jobs if j["status"] == "lost")
        except Exception as exc:  # noqa: BLE001 - reported below
            mid_flood_lost.append(f"CLI failed: {exc}")

    mid = threading.Thread(target=list_mid_flood, daemon=True)
    started = time.monotonic()
    deadline = started + FLOOD_BUDGET
    try:
        mid.start()
        with ThreadPoolExecutor(FLOOD_CLIENTS) as pool:
            answers = list(
                pool.map(
                    lambda _: _flood_one(url, needs_csrf, deadline, answered), range(FLOOD_REQUESTS)
                )
            )
        flood_took = time.monotonic() - started
        flood_end = time.monotonic()
        mid.join(60)

        sent = [a for a in answers if a is not None]
        by_status = Counter(a.status for a in sent)
        accepted_tokens = [
            a.body["token"]
            for a in sent
            if a.status == 202
            and a.json
            and isinstance(a.body, dict)
            and isinstance(a.body.get("token"), str)
        ]
        if len(sent) < FLOOD_REQUESTS:
            problems.append(
                f"only {len(sent)} of {FLOOD_REQUESTS} requests sent within {FLOOD_BUDGET:.0f} s"
            )
        bad = [a for a in sent if a.status not in (202, 429, 503) or not a.json]
        if bad:
            problems.append(
                f"{len(bad)} answers not JSON 202/429/503, e.g. "
                f"{[(a.status, str(a.error or a.body)[:60]) for a in bad[:3]]}"
            )
        refused_without_retry = [
            a.status for a in sent if a.status in (429, 503) and not a.retry_after
        ]
        if refused_without_retry:
            problems.append(f"{len(refused_without_retry)} 429/503 answers without Retry-After")
        if by_status[503] == 0:
            problems.append(
                f"ASYNCSTATE_MAX_QUEUED={MAX_QUEUED} never answered 503 "
                f"({by_status[202]} of {len(sent)} accepted)"
            )
        if server.current_workers() != [worker]:
            problems.append(f"gunicorn worker {worker} did not survive: {server.current_workers()}")

        jobs = server.cli_json("list")
        statuses = Counter(j["status"] for j in jobs)
        unfinished = sum(statuses[s] for s in UNFINISHED)
        if statuses["lost"] or mid_flood_lost:
            problems.append(
                f"jobs reported lost while worker {worker} is alive: "
                f"{statuses['lost']} after the flood, {mid_flood_lost[:3]} during it"
            )
        if unfinished > MAX_QUEUED + MAX_WORKERS:
            problems.append(
                f"{unfinished} unfinished jobs on one instance, more than "
                f"ASYNCSTATE_MAX_QUEUED={MAX_QUEUED} + {MAX_WORKERS} running"
            )
        if len(jobs) != len(accepted_tokens):
            problems.append(
                f"{len(jobs)} jobs in the store for {len(accepted_tokens)} "
                "accepted starts (a refused start left a job behind, or one vanished)"
            )
        found, source = instances(server, redis_url)
        ours = [i for i in found if i.get("pid") == worker]
        age = time.time() - max((i.get("beat_at") or 0) for i in ours) if ours else float("inf")
        if age > 3 * HEARTBEAT:
            problems.append(
                f"heartbeat of worker {worker} is {age:.1f} s old after the flood "
                f"({source}): the writer thread stopped"
            )

        cancelled, cancel_raised = _cancel_all(redis_url, accepted_tokens)
        if cancel_raised:
            problems.append(
                f"{sum(cancel_raised.values())} of {len(accepted_tokens)} cancels "
                f"raised: {cancel_raised.most_common(3)}"
            )
        drained = _within(lambda: _unfinished_ids(server) == [], 30, interval=1.0)
        if not drained:  # jobs whose start was answered after the client gave up
            for job_id in _unfinished_ids(server)[:20]:
                server.cli("cancel", job_id)
            drained = _within(lambda: _unfinished_ids(server) == [], 20, interval=1.0)
        drain_took = time.monotonic() - flood_end
        if not drained:
            problems.append(f"jobs still unfinished {drain_took:.0f} s after cancelling them all")

        user = requests.Session()
        first = post_import(user, url, prepare(user, url))
        token = job_token(first)
        final: dict[str, Any] = {}
        if token is None:
            problems.append(
                f"a new user's start after the flood answered {first.status_code} "
                f"{first.text[:200]}"
            )
        else:

            def finished() -> dict[str, Any] | None:
                doc = user.get(f"{url}/asyncstate/progress/{token}", timeout=10)
                body = doc.json() if is_json(doc) else {}
                return body if body.get("status") not in (None, *UNFINISHED) else None

            final = _within(finished, 20, interval=0.25) or {}
            if final.get("status") != "succeeded":
                problems.append(f"the new user's job ended {final.get('status')!r}, not succeeded")
        # a little of "after" for the page prober: a few probes sent after the flood
        _within(lambda: sum(s.sent >= flood_end for s in page.samples) >= 4, 10, interval=0.1)
    finally:
        page.stop()
        stop_beats.set()
        beats.join(5)

    during = [s for s in page.samples if s.sent < flood_end]
    after = [s for s in page.samples if s.sent >= flood_end]
    page_bad = [s for s in page.samples if s.status != 200]
    if page_bad:
        problems.append(
            f"GET / failed {len(page_bad)} times: {[(s.status, s.error) for s in page_bad[:3]]}"
        )
    slow_during = [s.took for s in during if s.took > 2.0]
    if slow_during or not during:
        problems.append(
            f"GET / during the flood: {spread([s.took for s in during])}, "
            f"{len(slow_during)} over 2 s"
        )
    slow_after = [s.took for s in after if s.took > 0.5]
    if slow_after or not after:
        problems.append(
            f"GET / after the flood: {spread([s.took for s in after])}, "
            f"{len(slow_after)} over 0.5 s"
        )
    stale = [a for a in beat_ages if a > 3 * HEARTBEAT]
    if stale:
        problems.append(
            f"heartbeat older than {3 * HEARTBEAT:.0f} s in {len(stale)} of "
            f"{len(beat_ages)} looks (oldest {max(stale):.1f} s)"
        )

    observed = [
        (
            f"{len(sent)} cookie-less POST /import from {FLOOD_CLIENTS} threads in "
            f"{flood_took:.1f} s ({len(sent) / flood_took:.0f}/s), ASYNCSTATE_MAX_QUEUED="
            f"{MAX_QUEUED}: {dict(sorted(by_status.items()))}"
            f"{' (CSRF token sent)' if needs_csrf else ''}"
        ),
        (
            f"after the flood: {len(jobs)} jobs {dict(statuses)}; heartbeat at most "
            f"{max(beat_ages, default=0):.1f} s old ({len(beat_ages)} looks; {source} after); "
            f"{cancelled} cancelled, drained {drain_took:.1f} s after the flood"
        ),
        (
            f"GET / during the flood {spread([s.took for s in during])}; after "
            f"{spread([s.took for s in after])}"
        ),
    ]
    _fail_on(problems, server, observed)
    observed[0] += ": all JSON, every refusal with Retry-After"
    observed[1] += f"; none lost, worker {worker} alive; a new user's job then succeeded"
    print("\n".join(observed))


def _unfinished_ids(server: GunicornServer) -> list[str]:
    jobs = server.cli_json("list", "--status", "queued", "--status", "running")
    return [j["id"] for j in jobs]


# -- b. the session quota under a race ------------------------------------------------------


def _one_session(url: str) -> tuple[requests.Session, str | None, list[requests.Response]]:
    """A browser with a session cookie: ``GET /``, and if that set none, one ``POST /import``.

    Returns the client, the CSRF token (or None) and the answers of any priming start.
    """
    browser = requests.Session()
    csrf = prepare(browser, url)
    primed = []
    if not browser.cookies:  # no CSRF token in the session: only a start creates one
        primed.append(post_import(browser, url, csrf))
    return browser, csrf, primed


def test_simultaneous_starts_in_one_session_accept_exactly_the_quota(serve, redis_url: str) -> None:
    server = serve(
        workers=1,
        threads=16,
        env={
            "REDIS_URL": redis_url,
            "EXAMPLE_PRODUCTS": "600",
            "EXAMPLE_BATCH": "10",
            "EXAMPLE_PAUSE": "0.5",  # 30 s jobs
            "EXAMPLE_UNIQUE": "0",  # several imports of one session: the quota decides
        },
    )
    url = server.url
    browser, csrf, primed = _one_session(url)
    racers = 16 - len(primed)
    barrier = threading.Barrier(racers)

    def race(_: int) -> requests.Response:
        with clone(browser) as client:
            barrier.wait(10)
            return post_import(client, url, csrf, timeout=15)

    with ThreadPoolExecutor(racers) as pool:
        answers = primed + list(pool.map(race, range(racers)))
    codes = Counter(a.status_code for a in answers)
    accepted = [t for t in map(job_token, answers) if t]
    refused = [a for a in answers if a.status_code == 429]  # JSON clients: the app-wide 429
    problems = []
    if len(accepted) != MAX_JOBS_PER_OWNER or len(refused) != 16 - MAX_JOBS_PER_OWNER:
        problems.append(
            f"16 starts in one session: {dict(codes)}; expected exactly "
            f"{MAX_JOBS_PER_OWNER} x 202 and {16 - MAX_JOBS_PER_OWNER} refused"
        )
    for a in refused:
        if not is_json(a) or not a.headers.get("Retry-After"):
            problems.append(f"a 429 without JSON or Retry-After: {a.headers} {a.text[:200]}")
            break
    ids, orphans = [], []
    for token in accepted:
        doc = browser.get(f"{url}/asyncstate/progress/{token}", timeout=10)
        if doc.status_code != 200 or not is_json(doc):
            orphans.append(f"{doc.status_code} {doc.text.strip()[:100]}")
        else:
            ids.append(doc.json()["id"])
    if orphans:
        problems.append(
            f"{len(orphans)} of {len(accepted)} accepted jobs orphaned (not in the "
            f"session): /progress answers {Counter(orphans).most_common(2)}"
        )
    listed = browser.get(f"{url}/asyncstate/jobs", timeout=10)
    listed_ids = sorted(j["id"] for j in listed.json()) if is_json(listed) else []
    if listed_ids != sorted(ids):
        problems.append(
            f"/asyncstate/jobs lists {len(listed_ids)} jobs {listed_ids}; the "
            f"accepted ones are {sorted(ids)}"
        )
    _fail_on(problems, server)
    how = (
        f"1 start to get a session cookie, then {racers} at once"
        if primed
        else f"{racers} at once after GET / gave the session cookie"
    )
    refusals = ", ".join(f"{n} x {c}" for c, n in sorted(codes.items()) if c != 202)
    print(
        f"16 POST /import in one session ({how}): {len(accepted)} x 202, {refusals} "
        f"(JSON with Retry-After); /asyncstate/jobs "
        f"lists exactly the {len(ids)} accepted jobs, each /progress 200"
    )


# -- c. event streams per session -----------------------------------------------------------


STREAMS = 50


def test_event_streams_beyond_the_session_limit_are_refused_at_once(serve, redis_url: str) -> None:
    server = serve(
        workers=1,
        threads=16,
        env={
            "REDIS_URL": redis_url,
            "EXAMPLE_TUNING_SSE_MAX_AGE": "60",
            # streams are off by default on threaded workers: on, below the 16 threads
            "FLASK_ASYNCSTATE_MAX_STREAMS": "8",
            "EXAMPLE_PRODUCTS": "600",
            "EXAMPLE_BATCH": "10",
            "EXAMPLE_PAUSE": "0.5",  # 30 s job
        },
    )
    url = server.url
    browser = requests.Session()
    csrf = prepare(browser, url)
    token = job_token(post_import(browser, url, csrf))
    assert token, "the job did not start" + _log_tail(server)
    events_url = f"{url}/asyncstate/events/{token}"
    barrier = threading.Barrier(STREAMS)
    clients = [clone(browser) for _ in range(STREAMS)]

    def open_stream(n: int) -> tuple[float, requests.Response | Exception]:
        barrier.wait(10)
        sent = time.monotonic()
        try:
            return 0.0, clients[n].get(events_url, stream=True, timeout=(5, 10))
        except requests.RequestException as exc:
            return time.monotonic() - sent, exc

    streams: list[requests.Response] = []
    problems: list[str] = []
    page_times: list[float] = []
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(STREAMS) as pool:
            opened = list(pool.map(open_stream, range(STREAMS)))
        open_took = time.monotonic() - started
        streams = [r for _, r in opened if isinstance(r, requests.Response)]
        failures = [
            f"{type(r).__name__} after {t:.1f} s"
            for t, r in opened
            if not isinstance(r, requests.Response)
        ]
        live = [
            r
            for r in streams
            if r.status_code == 200
            and r.headers.get("Content-Type", "").startswith("text/event-stream")
        ]
        refused = [r for r in streams if r.status_code == 429]
        if failures:
            problems.append(f"{len(failures)} stream requests got no answer: {failures[:3]}")
        if len(live) != MAX_STREAMS_PER_OWNER or len(refused) != STREAMS - len(live):
            problems.append(
                f"{STREAMS} streams of one session: {len(live)} open, "
                f"{Counter(r.status_code for r in streams)}; expected exactly "
                f"{MAX_STREAMS_PER_OWNER} open and the rest 429"
            )
        if any(not is_json(r) or not r.headers.get("Retry-After") for r in refused):
            problems.append("a refused stream answered without JSON or Retry-After")
        for _ in range(10):  # the app answers while the streams are open
            took = timed_request(lambda: requests.get(url + "/", timeout=5))
            page_times.append(took.took if took.status == 200 else float("inf"))
            time.sleep(0.3)  # spread the probes over ~3 s of open streams: the load under test
        if max(page_times) >= 1.0:
            problems.append(f"GET / with the streams open: {spread(page_times)}")
        still_open = [r for r in live if not r.raw.closed]
        if len(still_open) != len(live):
            problems.append(f"{len(live) - len(still_open)} of the open streams closed early")
    finally:
        for r in streams:
            r.close()
        for c in clients:
            c.close()

    def a_slot_is_free() -> bool:  # the closed streams give their slots back
        with clone(browser) as client:
            again = client.get(events_url, stream=True, timeout=(5, 10))
            again.close()
            return again.status_code == 200

    if not problems and not _within(a_slot_is_free, 10, interval=0.5):
        problems.append("10 s after closing every stream, a new one is still refused")
    post_cancel(browser, url, token, csrf)
    _fail_on(problems, server)
    print(
        f"{STREAMS} GET /asyncstate/events in one session, opened in {open_took:.2f} s: "
        f"{len(live)} x 200 text/event-stream, {len(refused)} x 429 JSON with Retry-After; "
        f"GET / meanwhile {spread(page_times)}; after closing them a new stream opens"
    )
