"""Checks of the ``ASYNCSTATE_*`` values (:mod:`.config` holds the keys and their defaults)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from werkzeug.utils import import_string


def _positive(config: Any, key: str, kind: type = float) -> Any:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{key} must be a positive number, got {value!r}")
    return kind(value)


def _streams(config: Any) -> int | None:
    value = config["ASYNCSTATE_MAX_STREAMS"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            "ASYNCSTATE_MAX_STREAMS must be None (streams only on gevent/eventlet), 0 (off)"
            f" or a positive int, got {value!r}"
        )
    return value


#: The values :data:`ASYNCSTATE_EXECUTOR` accepts.
EXECUTORS = ("threads", "rq", "celery")


def _executor(config: Any) -> str:
    value = config["ASYNCSTATE_EXECUTOR"]
    if value not in EXECUTORS:
        raise ValueError(f"ASYNCSTATE_EXECUTOR must be one of {EXECUTORS}, got {value!r}")
    return str(value)


def _sentinels(config: Any) -> tuple[tuple[str, int], ...] | None:
    value = config["ASYNCSTATE_REDIS_SENTINELS"]
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    out = []
    for item in value:
        host, _, port = str(item).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"ASYNCSTATE_REDIS_SENTINELS takes 'host:port' entries, got {item!r}")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("ASYNCSTATE_REDIS_SENTINELS is empty")
    return tuple(out)


def _nonempty(config: Any, key: str) -> str:
    value = config[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _url_prefix(config: Any) -> str:
    prefix = str(config["ASYNCSTATE_URL_PREFIX"] or "").rstrip("/")
    if not prefix.startswith("/"):
        raise ValueError(
            "ASYNCSTATE_URL_PREFIX must be a path like '/asyncstate': the blueprint's catch-all"
            f" would otherwise answer for the whole app (got {config['ASYNCSTATE_URL_PREFIX']!r})"
        )
    return prefix


def _owner(config: Any) -> Callable[[], Any] | None:
    """``ASYNCSTATE_OWNER``: a callable, an import string naming one, or None."""
    value = config["ASYNCSTATE_OWNER"]
    if value is None:
        return None
    if isinstance(value, str):
        value = import_string(value)
    if not callable(value):
        raise TypeError(
            f"ASYNCSTATE_OWNER must be a callable returning an owner id or None, got {value!r}"
        )
    return value  # type: ignore[no-any-return]


def _guard(config: Any, key: str) -> Callable[..., Any] | None:
    """A guard key: a callable, an import string naming one, or None."""
    value = config[key]
    if isinstance(value, str):
        value = import_string(value)
    if value is not None and not callable(value):
        raise TypeError(f"{key} must be a callable (a view decorator or a check), got {value!r}")
    return value  # type: ignore[no-any-return]


def _keep_finished(config: Any) -> float | None:
    """``ASYNCSTATE_KEEP_FINISHED``: None, or at least ``ASYNCSTATE_EXPIRES`` (an unfinished
    job's entry lives that long too, and live jobs are refreshed on that scale)."""
    if config["ASYNCSTATE_KEEP_FINISHED"] is None:
        return None
    keep: float = _positive(config, "ASYNCSTATE_KEEP_FINISHED")
    if keep < float(config["ASYNCSTATE_EXPIRES"]):
        raise ValueError(
            f"ASYNCSTATE_KEEP_FINISHED ({keep:g} s) must be at least ASYNCSTATE_EXPIRES"
            f" ({config['ASYNCSTATE_EXPIRES']:g} s): it lengthens how long finished jobs stay"
        )
    return keep
