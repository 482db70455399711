"""Storage backends: :class:`MemoryStore` (embedded default) and :class:`RedisStore` (shared)."""

from .base import Entry, Store
from .memory import MemoryStore

__all__ = ["Entry", "MemoryStore", "RedisStore", "Store"]


def __getattr__(name: str) -> object:
    # redis is an optional extra: import the Redis backend only when asked for.
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(name)
