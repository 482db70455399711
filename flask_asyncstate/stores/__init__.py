"""Storage backends: :class:`MemoryStore` (embedded default) and :class:`RedisStore` (shared),
both built on the contract of :class:`Store`, and :func:`make_store`, which picks the one an
app's configuration asks for."""

from __future__ import annotations

from typing import Any

from werkzeug.utils import import_string

from .base import Entry, Store
from .memory import MemoryStore
from .redis import RedisStore, client_from_url, request_client_from_url, sentinel_client

__all__ = ["Entry", "MemoryStore", "RedisStore", "Store", "make_store"]


def make_store(settings: Any, redis_client: Any = None) -> Store:
    """The store of an app: ``ASYNCSTATE_STORE`` if set, else Redis when a client or URL
    is given, else in-process memory.

    ``ASYNCSTATE_STORE`` is a :class:`Store` instance, or a :class:`Store` subclass
    (or an import string naming one, the Flask-Caching way) constructed with
    ``key_prefix``, ``expires`` and ``max_entry_size`` from the configuration.
    """
    options: dict[str, Any] = {
        "key_prefix": settings.key_prefix,
        "expires": settings.expires,
        "max_entry_size": settings.tuning.max_entry_size,
    }
    spec = settings.store
    if spec is not None:
        if isinstance(spec, str):
            spec = import_string(spec)
        if isinstance(spec, Store):
            return spec
        if isinstance(spec, type) and issubclass(spec, Store):
            return spec(**options)
        raise TypeError(
            "ASYNCSTATE_STORE must be a Store instance, a Store subclass, or an import string"
            f" naming one (like 'flask_asyncstate.stores.MemoryStore'), got {settings.store!r}"
        )
    sentinels = getattr(settings, "redis_sentinels", None)
    if redis_client is None and settings.redis_url is None and sentinels is None:
        return MemoryStore(**options)
    options.update(
        request_timeout=settings.redis_timeout,
        circuit_failures=settings.tuning.circuit_failures,
        circuit_reset=settings.tuning.circuit_reset,
    )
    if redis_client is None and sentinels is not None:
        redis_client = sentinel_client(sentinels, settings.redis_sentinel_master)
    if redis_client is not None:
        return RedisStore(redis_client, **options)
    url = settings.redis_url
    return RedisStore(
        client_from_url(url),
        fast_client=request_client_from_url(url, settings.redis_timeout),
        **options,
    )
