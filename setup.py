"""Packaging for flask-asyncstate (tool settings live in pyproject.toml)."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="flask-asyncstate",
    version="0.1.0",
    description="Tracked, cancellable long-running jobs for Flask, shared across instances.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.11",
    packages=find_packages(include=["flask_asyncstate", "flask_asyncstate.*"]),
    package_data={
        "flask_asyncstate": ["py.typed", "static/*", "templates/asyncstate/*", "stores/redis.lua"]
    },
    include_package_data=True,
    # The product is a token in a server-side session and a Redis store in production:
    # those are core, not extras (the in-process memory store stays the default).
    # jQuery ships the widget's one dependency, served locally, never from a CDN.
    # Each lower bound is tested: .ci/run runs the quick suite with every one of these at
    # exactly its bound (requirements/tests-min.txt; CONTRIBUTING.rst says why each is where
    # it is). Raise a bound together with requirements/tests-min.in.
    install_requires=[
        "flask>=2.3",
        "werkzeug>=2.3",  # imported directly, not only through Flask
        "itsdangerous>=2.1.2",
        "blinker>=1.6.2",
        "flask-session>=0.7",  # SESSION_TYPE = "cachelib"
        "cachelib>=0.10",
        "redis>=4.5.2",
        "pybreaker>=1.1",  # CircuitBreaker.calling()
        "xstatic-jquery>=3.5.1.1",  # 3.5.1.0 is an sdist that no longer builds
    ],
    extras_require={
        # kept so that existing `pip install flask-asyncstate[redis]` lines go on working
        "redis": [],
        "session": [],
        # where jobs run when they outgrow the web processes (ASYNCSTATE_EXECUTOR)
        "rq": ["rq>=2.0"],
        "celery": ["celery[redis]>=5.3"],
        # what operators see (docs/operating.rst, "Metrics, traces and logs"): Prometheus
        # metrics in the default registry; OpenTelemetry spans (the app brings the SDK)
        "metrics": ["prometheus_client>=0.16"],
        "otel": ["opentelemetry-api>=1.20"],
        # what `flask --app example_app run` needs: sessions, CSRF protection for its forms, sign-in
        "example": [
            "flask-session>=0.7",
            "cachelib>=0.10",
            "flask-wtf>=1.1",
            "flask-login>=0.6",  # the demo sign-in: a user's jobs follow them across browsers
        ],
        "test": [
            "redis>=4.5.2",
            "pybreaker>=1.1",
            "flask-login>=0.6",
            "flask-babel>=4",  # the widget's labels through gettext
            "ruff>=0.5",  # .ci/run checks lint and formatting
            "flask-session>=0.7",
            "cachelib>=0.10",
            "pytest>=7.4",
            "pytest-xdist>=3.5",  # the quick suite in two processes (README, .ci/run)
            "hypothesis>=6.80",
            "playwright>=1.40",
            "gunicorn>=21",
            "gevent>=23",  # the example app under gunicorn -k gevent
            "requests>=2.28",
            "flask-wtf>=1.1",
            "sphinx>=7",
            "pallets-sphinx-themes>=2.1",
            "rq>=2.0",  # the RQ and Celery worker tests
            "celery[redis]>=5.3",
            "openapi-spec-validator>=0.7",  # tests/test_clients.py checks <prefix>/openapi.json
            "jsonschema>=4.18",  # ... and that real answers fit its schemas
            "schemathesis>=4",  # tests/test_openapi_fuzz.py: the live app against its description
            "prometheus_client>=0.16",  # the metrics tests
            "opentelemetry-api>=1.20",
            "opentelemetry-sdk>=1.20",  # the tracing tests' in-memory exporter
        ],
        "bench": [
            "redis>=4.5.2",
            "pybreaker>=1.1",
            "rq>=2.0",
            "celery[redis]>=5.3",
            "flask-executor>=1.0",
            "matplotlib>=3.7",
            "flask-session>=0.7",  # throughput.py: the example app's Redis sessions
            "flask-wtf>=1.1",  # the example app's CSRF protection
            "flask-login>=0.6",  # the example app's sign-in
            "gunicorn>=21",  # throughput.py serves the app with it
            "prometheus_client>=0.16",  # observability.py: metrics on and off
            "opentelemetry-sdk>=1.20",  # observability.py: tracing on and off
        ],
    },
    classifiers=[
        "Framework :: Flask",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
)
