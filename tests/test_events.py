"""Server-Sent Events: pushed progress, the same session checks, bounded cost per open stream."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc

import pytest
import requests
from support.apps import define_jobs
from support.waiting import wait_until
from werkzeug.serving import make_server


def _frames(chunks) -> list[tuple[str, object]]:
    """Parse an SSE byte stream into (event name, data) pairs."""
    text = b"".join(chunks).decode()
    out = []
    for block in text.split("\n\n"):
        name, data = "message", None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if data is not None:
            out.append((name, data))
    return out


def test_stream_pushes_changes_and_ends_on_final_status(make_jobs, backend_url) -> None:
    app, _ext, jobs = make_jobs(backend_url)

    @app.post("/start")
    def start():
        return {"token": jobs["count"].start(20, sleep=0.02).token}

    client = app.test_client()
    token = client.post("/start").json["token"]
    response = client.get(f"/asyncstate/events/{token}", buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    frames = _frames(response.response)
    response.close()
    docs = [d for name, d in frames if name == "message"]
    assert len(docs) >= 3, frames  # several pushed updates, not one final answer
    assert [d["current"] for d in docs] == sorted(d["current"] for d in docs)
    assert frames[-1][0] == "end" and frames[-1][1]["status"] == "succeeded"
    assert docs[-1]["result"] == {"rows": 20}


def test_stream_has_the_same_session_checks(app, jobs) -> None:

    @app.post("/start")
    def start():
        return {"token": jobs["until_cancelled"].start().token}

    owner, stranger = app.test_client(), app.test_client()
    token = owner.post("/start").json["token"]
    for client, url in [
        (stranger, f"/asyncstate/events/{token}"),
        (owner, "/asyncstate/events/forged"),
        (owner, f"/asyncstate/events/{token[:-2]}xx"),
    ]:
        response = client.get(url)
        assert response.status_code == 404 and response.json["error"]
    assert owner.post(f"/asyncstate/events/{token}").status_code == 405


def test_stream_from_another_instance_is_fed_by_pubsub(make_app, redis_url) -> None:
    app_a, ext_a = make_app(redis_url)
    app_b, _ext_b = make_app(redis_url)
    jobs = define_jobs(ext_a)

    @app_a.post("/start")
    def start():
        return {"token": jobs["count"].start(15, sleep=0.03).token}

    client_a = app_a.test_client()
    token = client_a.post("/start").json["token"]
    client_b = app_b.test_client()  # carry A's session cookie over to B
    cookie = client_a.get_cookie("session")
    client_b.set_cookie("session", cookie.value)
    response = client_b.get(f"/asyncstate/events/{token}", buffered=False)
    assert response.status_code == 200
    frames = _frames(response.response)
    response.close()
    assert len([f for f in frames if f[0] == "message"]) >= 3
    assert frames[-1][1]["status"] == "succeeded"


@pytest.fixture
def live_server(make_app):
    """The app on a real threaded WSGI server in this process, so we can look inside it."""
    app, ext = make_app(
        sse_ping_interval=0.2,
        ASYNCSTATE_FLUSH_INTERVAL=0.02,
        max_streams_per_owner=20,
    )  # one browser, many streams
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, ext, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.reliability  # processes, servers or a flood: the whole suite runs it
def test_open_streams_cost_no_memory_per_update_and_free_threads_on_close(live_server) -> None:
    app, ext, url = live_server
    gate, step = threading.Event(), threading.Event()

    @ext.job
    def ticker(job) -> int:
        i = 0
        while not gate.is_set():
            i += 1
            job.progress(i, message=f"tick {i}")
            step.wait(0.03)
        return i

    @app.post("/start")
    def start():
        return {"token": ticker.start().token}

    browser = requests.Session()
    token = browser.post(f"{url}/start").json()["token"]
    baseline_threads = threading.active_count()
    streams = [
        browser.get(f"{url}/asyncstate/events/{token}", stream=True, timeout=10) for _ in range(20)
    ]
    received = [0] * len(streams)

    def drain(i: int) -> None:
        try:
            for _line in streams[i].iter_lines():
                received[i] += 1
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by the test

    readers = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(len(streams))]
    for r in readers:
        r.start()
    state = ext.app_state(app)
    store = state.store
    key = state.records.job_key(state.signer.unsign(token))
    wait_until(
        lambda: store.watchers.watched(key) == len(streams),
        10,
        interval=0.05,
        message=lambda: f"streams open: {store.watchers.watched(key)} of {len(streams)}",
    )

    # the measurement windows: fixed durations are the point (cost per update over time)
    tracemalloc.start()
    time.sleep(1.0)  # ~30 updates pushed to 20 streams
    first, _ = tracemalloc.get_traced_memory()
    before = sum(received)
    time.sleep(3.0)  # ~100 more updates to each stream
    second, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    frames = sum(received) - before
    growth = second - first
    assert frames > 20 * 40, frames
    assert growth < 200 * 1024, f"memory grew {growth} bytes over {frames} frames"
    assert store.watched_keys() == 1

    for response in streams:
        response.close()
    wait_until(
        lambda: not store.watched_keys() and threading.active_count() <= baseline_threads,
        5,
        interval=0.05,
        message=lambda: (
            f"watched keys {store.watched_keys()}, threads "
            f"{threading.active_count()} > {baseline_threads}"
        ),
    )
    gate.set()
    print(
        f"20 streams, {frames} frames in 3 s, traced memory {growth:+d} bytes; "
        "all server threads freed after close"
    )


def test_long_stream_asks_the_browser_to_reconnect(make_jobs) -> None:
    app, _ext, jobs = make_jobs(sse_max_age=0.3)

    @app.post("/start")
    def start():
        return {"token": jobs["until_cancelled"].start().token}

    client = app.test_client()
    token = client.post("/start").json["token"]
    started = time.monotonic()
    response = client.get(f"/asyncstate/events/{token}", buffered=False)
    frames = _frames(response.response)
    response.close()
    assert time.monotonic() - started < 3
    assert frames[-1][0] == "reconnect"
    assert frames[0][1]["status"] in ("queued", "running")


@pytest.mark.parametrize("setting", [None, 0])
def test_streams_are_off_by_default_on_threads_and_with_zero(make_jobs, setting) -> None:
    """Default None: off unless gevent/eventlet patched the process (pytest's has not); 0: off.
    The refusal is the same 429 the widget's auto mode falls back to polling on."""
    app, ext, jobs = make_jobs(ASYNCSTATE_MAX_STREAMS=setting)

    @app.post("/start")
    def start():
        return {"token": jobs["count"].start(1).token}

    client = app.test_client()
    token = client.post("/start").json["token"]
    refused = client.get(f"/asyncstate/events/{token}")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "10"
    assert ext.app_state(app).streams.total == 0


def test_streams_on_where_a_stream_costs_no_thread(make_app, monkeypatch) -> None:
    from flask_asyncstate import sse

    monkeypatch.setattr(sse, "green_server", lambda: True)
    app, ext = make_app(ASYNCSTATE_MAX_STREAMS=None)
    slots = ext.app_state(app).streams
    slot = slots.acquire("owner")
    assert slot is not None and slots.total == sse.StreamSlots.GREEN_TOTAL
    slot.release()


def test_max_streams_setting_is_checked(make_app) -> None:
    for bad in (-1, 1.5, True, "100"):
        with pytest.raises(ValueError, match="ASYNCSTATE_MAX_STREAMS"):
            make_app(ASYNCSTATE_MAX_STREAMS=bad)


def test_widgets_poll_from_the_start_where_streams_are_off(make_app) -> None:
    """mode="auto" on a threaded server (streams off by default): the page renders a polling
    widget, so the browser never opens a stream only to have it refused."""
    from flask import render_template_string

    page = '{{ asyncstate_widget("t", mode="auto") }}{{ asyncstate_jobs(mode="sse") }}'
    off_app, _ext = make_app(ASYNCSTATE_MAX_STREAMS=None)
    on_app, _ext2 = make_app(ASYNCSTATE_MAX_STREAMS=10)
    with off_app.test_request_context():
        off = render_template_string(page)
    with on_app.test_request_context():
        on = render_template_string(page)
    assert 'data-asyncstate-mode="poll"' in off and 'data-asyncstate-mode="auto"' not in off
    assert 'data-asyncstate-mode="auto"' in on
