"""The owner indexes of the Redis store: an owner's unfinished job ids (a set, what the quota
counts) and recent ones (a sorted set), both under the owner key's hash tag: one slot."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import redis

from . import redis_scripts as scripts
from .redis_client import chunks, text_of


class OwnerIndexes:
    """The index hooks of :class:`~flask_asyncstate.stores.redis.RedisStore`."""

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
