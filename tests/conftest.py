"""Shared fixtures: a real redis-server per test session, stores of both kinds, apps and clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from support.apps import define_jobs
from support.apps import make_app as build_app
from support.gunicorn_server import GunicornServer
from support.redis_server import RedisServer
from support.stores import STORES

from flask_asyncstate import AsyncState
from flask_asyncstate.stores import MemoryStore, Store
from flask_asyncstate.stores.redis import RedisStore, client_from_url

#: What ``make_jobs`` builds: the app, its extension and the tests' jobs by name.
Built = tuple[Flask, AsyncState, dict[str, Any]]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server, emptied before each test (it is ours alone)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = client_from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(params=STORES[:2])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh store of each kind: the in-memory one, a RedisStore on the session's
    redis-server, or (when asked for) one on the session's Redis Cluster."""
    made: Store
    client = None
    if request.param == "memory":
        made = MemoryStore(key_prefix="test:")
    elif request.param == "redis":
        client = client_from_url(request.getfixturevalue("redis_url"))
        made = RedisStore(client, key_prefix="test:", sweep_interval=0.2)
    else:
        client = request.getfixturevalue("cluster").client()
        client.flushall()
        made = RedisStore(client, key_prefix="contract:", sweep_interval=0.2)
    yield made
    made.close()
    if request.param == "cluster":
        client.close()


@pytest.fixture
def make_app() -> Iterator[object]:
    """Factory of (app, extension) pairs, shut down after the test."""
    made: list = []

    def build(redis_url: str | None = None, **config: object):
        app, ext = build_app(redis_url, **config)
        made.append((app, ext))  # keep the app alive: the extension holds it weakly
        return app, ext

    yield build
    for _app, ext in made:
        ext.shutdown(timeout=2)


@pytest.fixture
def make_jobs(make_app: Callable[..., tuple[Flask, AsyncState]]) -> Callable[..., Built]:
    """Factory of (app, extension, jobs): ``make_app``'s pair with the tests' jobs
    (``support.apps.define_jobs``) registered, ``jobs`` their dict by name."""

    def build(redis_url: str | None = None, **config: object) -> Built:
        app, ext = make_app(redis_url, **config)
        return app, ext, define_jobs(ext)

    return build


@pytest.fixture
def app_and_ext(make_app: Callable[..., tuple[Flask, AsyncState]]) -> tuple[Flask, AsyncState]:
    """The common case: a default app on the in-memory store (tests with their own config
    or store call ``make_app`` or ``make_jobs``)."""
    return make_app()


@pytest.fixture
def app(app_and_ext: tuple[Flask, AsyncState]) -> Flask:
    return app_and_ext[0]


@pytest.fixture
def ext(app_and_ext: tuple[Flask, AsyncState]) -> AsyncState:
    return app_and_ext[1]


@pytest.fixture
def jobs(ext: AsyncState) -> dict[str, Any]:
    """The tests' jobs (``support.apps.define_jobs``) registered on ``ext``, by name."""
    return define_jobs(ext)


@pytest.fixture(params=["memory", "redis"])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    """None for the in-memory store, else a real Redis URL: run a test on both backends."""
    return None if request.param == "memory" else request.getfixturevalue("redis_url")


# -- the run reads as a report: what each passing test printed is listed at the end ----------

_HELD: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed and report.capstdout.strip():
        _HELD.append((report.nodeid, report.capstdout.strip()))


def pytest_terminal_summary(terminalreporter) -> None:
    if _HELD:
        terminalreporter.section("what the tests held")
        for nodeid, out in _HELD:
            terminalreporter.line(f"{nodeid}\n    " + out.replace("\n", "\n    "))


# -- production topologies (tests/support/redis_topologies.py), started once when a test asks ----------


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """A 3-primary Redis Cluster with a replica each."""
    from support.redis_topologies import RedisClusterServers

    with RedisClusterServers() as found:
        yield found


@pytest.fixture(scope="session")
def sentinels() -> Iterator[Any]:
    """A master, a replica and a sentinel watching them (``mymaster``)."""
    from support.redis_topologies import SentinelSet

    with SentinelSet() as found:
        yield found


@pytest.fixture(scope="session")
def tls() -> Iterator[Any]:
    """A TLS-only redis-server with a CA made for the run."""
    from support.redis_topologies import TlsRedis

    with TlsRedis() as found:
        yield found


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium through Playwright, one per test module (tests/support/chromium.py)."""
    from support.chromium import launch  # playwright: only the browser tests need it loaded

    with launch() as launched:
        yield launched


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., GunicornServer]]:
    """Start the example app under gunicorn with env overrides; every server stopped after."""
    started: list[GunicornServer] = []

    def start(**kwargs: Any) -> GunicornServer:
        server = GunicornServer(tmp_path, **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
