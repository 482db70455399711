"""The indexes of the Redis store.

An owner's index: its unfinished job ids (a set, what the quota counts) and recent ones (a
sorted set), both under the owner key's hash tag: one slot. A ranked list (the newest jobs
of the app, its live instances): one sorted set, its key hash-tagged like every other
(``<prefix>{flask_asyncstate.index:jobs}``), trimmed to its size by each add."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import redis

from . import redis_scripts as scripts
from .redis_client import chunks, text_of


class OwnerIndexes:
    """The index hooks of :class:`~flask_asyncstate.stores.redis.RedisStore` (owners' indexes
    and ranked lists)."""

    def _run(self, text: str, keys: list[str], args: list[Any], client: Any) -> Any:
        raise NotImplementedError  # provided by RedisStore

    def _io(self) -> AbstractContextManager[redis.Redis]:  # provided by RedisStore
        raise NotImplementedError

    def _claim(
        self, key: str, member: str, limit: int, keep: int, score: float, ttl_ms: int
    ) -> bool:
        with self._io() as client:
            return bool(
                self._run(
                    scripts.CLAIM,
                    [f"{key}:a", f"{key}:r"],
                    [member, limit, keep, score, ttl_ms],
                    client,
                )
            )

    def _unclaim(self, key: str, members: list[str], ttl_ms: int) -> None:
        with self._io() as client:
            pipe = client.pipeline(transaction=False)
            pipe.srem(f"{key}:a", *members)
            pipe.pexpire(f"{key}:a", ttl_ms)
            pipe.pexpire(f"{key}:r", ttl_ms)
            pipe.execute()

    def _claims(self, key: str, ttl_ms: int) -> tuple[list[str], list[str]]:
        with self._io() as client:
            pipe = client.pipeline(transaction=False)
            pipe.smembers(f"{key}:a")
            pipe.zrevrange(f"{key}:r", 0, -1)
            pipe.pexpire(f"{key}:a", ttl_ms)
            pipe.pexpire(f"{key}:r", ttl_ms)
            active, recent, _, _ = pipe.execute()
        return [text_of(m) for m in active], [text_of(m) for m in recent]

    def _forget(self, key: str, members: list[str]) -> None:
        with self._io() as client:
            pipe = client.pipeline(transaction=False)
            pipe.srem(f"{key}:a", *members)
            pipe.zrem(f"{key}:r", *members)
            pipe.execute()

    def _touch_claims(self, keys: list[str], ttl_ms: int) -> None:
        with self._io() as client:
            for chunk in chunks(keys):
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.pexpire(f"{key}:a", ttl_ms)
                    pipe.pexpire(f"{key}:r", ttl_ms)
                pipe.execute()

    # -- ranked lists ------------------------------------------------------------

    def _rank(self, key: str, member: str, score: float, keep: int, floor: float | None) -> None:
        # One key, one round trip; no MULTI (Cluster pipelines have none). Each add trims
        # after itself, so concurrent adds leave at most ``keep`` members whatever the order.
        with self._io() as client:
            pipe = client.pipeline(transaction=False)
            pipe.zadd(key, {member: score})
            pipe.zremrangebyrank(key, 0, -keep - 1)
            if floor is not None:
                pipe.zremrangebyscore(key, "-inf", f"({floor!r}")
            pipe.execute()

    def _ranked(self, key: str, count: int) -> list[str]:
        with self._io() as client:
            return [text_of(m) for m in client.zrevrange(key, 0, count - 1)]

    def _unrank(self, key: str, members: list[str]) -> None:
        with self._io() as client:
            client.zrem(key, *members)
