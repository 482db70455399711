"""The ``ASYNCSTATE_*`` configuration keys, their defaults, and their validation (read once per app)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Every key with its default. ``init_app`` sets these with ``app.config.setdefault``.
DEFAULTS: dict[str, Any] = {
    "ASYNCSTATE_REDIS_URL": None,
    "ASYNCSTATE_KEY_PREFIX": "asyncstate:",
    "ASYNCSTATE_MAX_WORKERS": 4,
    "ASYNCSTATE_EXPIRES": 900,
    "ASYNCSTATE_FLUSH_INTERVAL": 0.25,
    "ASYNCSTATE_HEARTBEAT_INTERVAL": 5.0,
    "ASYNCSTATE_MAX_JOBS_PER_SESSION": 5,
    "ASYNCSTATE_URL_PREFIX": "/asyncstate",
    "ASYNCSTATE_TOKEN_MAX_AGE": None,
    "ASYNCSTATE_EAGER": False,
    "ASYNCSTATE_MAX_ENTRY_SIZE": 64 * 1024,
    "ASYNCSTATE_SHUTDOWN_TIMEOUT": 10.0,
    "ASYNCSTATE_SSE_MAX_AGE": 25.0,
    "ASYNCSTATE_SSE_PING_INTERVAL": 15.0,
    "ASYNCSTATE_MAX_QUEUED": 1000,
    "ASYNCSTATE_MAX_STREAMS": 100,
    "ASYNCSTATE_MAX_STREAMS_PER_SESSION": 4,
    "ASYNCSTATE_REDIS_TIMEOUT": 1.0,
    "ASYNCSTATE_CIRCUIT_FAILURES": 3,
    "ASYNCSTATE_CIRCUIT_RESET": 2.0,
    "ASYNCSTATE_STORE": None,
}


def _positive(config: Any, key: str, kind: type = float) -> Any:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{key} must be a positive number, got {value!r}")
    return kind(value)


def _url_prefix(config: Any) -> str:
    prefix = str(config["ASYNCSTATE_URL_PREFIX"] or "").rstrip("/")
    if not prefix.startswith("/"):
        raise ValueError(
            "ASYNCSTATE_URL_PREFIX must be a path like '/asyncstate': the blueprint's catch-all"
            f" would otherwise answer for the whole app (got {config['ASYNCSTATE_URL_PREFIX']!r})"
        )
    return prefix


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one app."""

    redis_url: str | None
    key_prefix: str
    max_workers: int
    expires: float
    flush_interval: float
    heartbeat_interval: float
    max_jobs_per_session: int
    url_prefix: str
    token_max_age: float | None
    eager: bool
    max_entry_size: int
    shutdown_timeout: float
    sse_max_age: float
    sse_ping_interval: float
    max_queued: int
    max_streams: int
    max_streams_per_session: int
    redis_timeout: float
    circuit_failures: int
    circuit_reset: float
    store: Any

    @classmethod
    def from_config(cls, config: Any) -> Settings:
        for key, value in DEFAULTS.items():
            config.setdefault(key, value)
        max_age = config["ASYNCSTATE_TOKEN_MAX_AGE"]
        return cls(
            redis_url=config["ASYNCSTATE_REDIS_URL"] or None,
            key_prefix=str(config["ASYNCSTATE_KEY_PREFIX"]),
            max_workers=_positive(config, "ASYNCSTATE_MAX_WORKERS", int),
            expires=_positive(config, "ASYNCSTATE_EXPIRES"),
            flush_interval=_positive(config, "ASYNCSTATE_FLUSH_INTERVAL"),
            heartbeat_interval=_positive(config, "ASYNCSTATE_HEARTBEAT_INTERVAL"),
            max_jobs_per_session=_positive(config, "ASYNCSTATE_MAX_JOBS_PER_SESSION", int),
            url_prefix=_url_prefix(config),
            token_max_age=None if max_age is None else _positive(config, "ASYNCSTATE_TOKEN_MAX_AGE"),
            eager=bool(config["ASYNCSTATE_EAGER"]),
            max_entry_size=_positive(config, "ASYNCSTATE_MAX_ENTRY_SIZE", int),
            shutdown_timeout=_positive(config, "ASYNCSTATE_SHUTDOWN_TIMEOUT"),
            sse_max_age=_positive(config, "ASYNCSTATE_SSE_MAX_AGE"),
            sse_ping_interval=_positive(config, "ASYNCSTATE_SSE_PING_INTERVAL"),
            max_queued=_positive(config, "ASYNCSTATE_MAX_QUEUED", int),
            max_streams=_positive(config, "ASYNCSTATE_MAX_STREAMS", int),
            max_streams_per_session=_positive(config, "ASYNCSTATE_MAX_STREAMS_PER_SESSION", int),
            redis_timeout=_positive(config, "ASYNCSTATE_REDIS_TIMEOUT"),
            circuit_failures=_positive(config, "ASYNCSTATE_CIRCUIT_FAILURES", int),
            circuit_reset=_positive(config, "ASYNCSTATE_CIRCUIT_RESET"),
            store=config["ASYNCSTATE_STORE"],
        )
