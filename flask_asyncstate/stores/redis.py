"""Redis store: entries shared by every process and host that uses the same Redis.

One hash per entry (``d`` document, ``c`` cancel flag, ``x`` expiry in ms),
so the document and the cancel flag live apart but expire together. Reads and
conditional writes are single-key Lua scripts (atomic, Cluster-safe);
``update`` is a WATCH/MULTI transaction. A cancel sets ``c`` and publishes the
key on ``<prefix>cancel``; every write publishes the key on
``<prefix>changed``. One listener thread per store sets the matching local
cancel Events, and wakes local watchers (push updates) while there are any;
it re-checks the stored flags after every (re)subscription and every
``sweep_interval`` seconds, so a cancel published while the link was down is
still delivered. The same sweep releases Events of expired entries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..errors import StoreError, StoreUnavailable
from .base import Store

log = logging.getLogger("flask_asyncstate")

_READ = """
local v = redis.call('HMGET', KEYS[1], 'd', 'c', 'x')
if not v[1] then return false end
if tonumber(v[3]) > 0 then redis.call('PEXPIRE', KEYS[1], v[3]) end
return {v[1], v[2] or ''}
"""

_WRITE = """
local x = redis.call('HGET', KEYS[1], 'x')
if not x then return false end
redis.call('HSET', KEYS[1], 'd', ARGV[1])
if tonumber(x) > 0 then redis.call('PEXPIRE', KEYS[1], x) end
redis.call('PUBLISH', ARGV[2], KEYS[1])
return redis.call('HGET', KEYS[1], 'c') or ''
"""

_CANCEL = """
local x = redis.call('HGET', KEYS[1], 'x')
if not x then return 0 end
redis.call('HSET', KEYS[1], 'c', '1')
if tonumber(x) > 0 then redis.call('PEXPIRE', KEYS[1], x) end
redis.call('PUBLISH', ARGV[1], KEYS[1])
return 1
"""

_TOUCH = """
local x = redis.call('HGET', KEYS[1], 'x')
if x and tonumber(x) > 0 then redis.call('PEXPIRE', KEYS[1], x) end
return 0
"""


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


@contextlib.contextmanager
def _translate() -> Iterator[None]:
    """Turn redis-py errors into ours, cause chained."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
    except redis.RedisError as exc:
        raise StoreError(f"Redis error: {exc}") from exc


def client_from_url(url: str) -> redis.Redis:
    """A client tuned for a web app: short timeouts, a quick retry, no multi-second backoff."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
    )


class RedisStore(Store):
    """Entries in Redis; see the module docstring for the layout."""

    def __init__(self, client: redis.Redis, *, sweep_interval: float = 1.0, **options: Any) -> None:
        super().__init__(**options)
        self.client = client
        self.channel = f"{self.key_prefix}cancel"
        self.changes_channel = f"{self.key_prefix}changed"
        self.sweep_interval = sweep_interval
        self._read_script = client.register_script(_READ)
        self._write_script = client.register_script(_WRITE)
        self._cancel_script = client.register_script(_CANCEL)
        self._touch_script = client.register_script(_TOUCH)
        self._closed = threading.Event()
        self._listener: threading.Thread | None = None
        self._listener_pid = 0
        self._listener_lock = threading.Lock()
        self._hearing_changes = False
        #: Set each time the listener is subscribed; tests and bench wait on it.
        self.subscribed = threading.Event()

    # -- storage hooks -----------------------------------------------------

    def _create(self, key: str, text: str, ttl_ms: int) -> None:
        with _translate():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping={"d": text, "x": ttl_ms})
            if ttl_ms:
                pipe.pexpire(key, ttl_ms)
            pipe.publish(self.changes_channel, key)
            pipe.execute()

    def _read(self, keys: list[str], refresh: bool) -> list[tuple[str, bool] | None]:
        # A read that restarts the expiry needs the entry's own ttl: a script. One that
        # does not is a plain HMGET (the hot path of a progress poll).
        with _translate():
            if len(keys) == 1:
                raws = [self._read_script(keys=keys, args=["1"]) if refresh
                        else self.client.hmget(keys[0], "d", "c")]
            else:
                pipe = self.client.pipeline(transaction=False)
                for key in keys:
                    if refresh:
                        self._read_script(keys=[key], args=["1"], client=pipe)
                    else:
                        pipe.hmget(key, "d", "c")
                raws = pipe.execute()
        return [None if raw is None or raw[0] is None else (_text(raw[0]), bool(raw[1]))
                for raw in raws]

    def _write(self, key: str, text: str) -> bool | None:
        with _translate():
            flag = self._write_script(keys=[key], args=[text, self.changes_channel])
        return None if flag is None else bool(flag)

    def _update(self, key: str, apply: Callable[[str], str]) -> bool | None:
        result: list[bool | None] = [None]

        def attempt(pipe: Any) -> None:
            text, flag, ttl = pipe.hmget(key, "d", "c", "x")
            if text is None:
                pipe.multi()  # an empty transaction: nothing to update
                result[0] = None
                return
            new_text = apply(_text(text))
            pipe.multi()
            pipe.hset(key, "d", new_text)
            if int(ttl):
                pipe.pexpire(key, int(ttl))
            pipe.publish(self.changes_channel, key)
            result[0] = bool(flag)

        with _translate():
            self.client.transaction(attempt, key)
        return result[0]

    def _cancel(self, key: str) -> bool:
        with _translate():
            return bool(self._cancel_script(keys=[key], args=[self.channel]))

    def _remove(self, key: str) -> bool:
        with _translate():
            return bool(self.client.delete(key))

    def _exists(self, key: str) -> bool:
        with _translate():
            return bool(self.client.exists(key))

    def _keys(self, kind: str) -> list[str]:
        pattern = _glob_escape(self.key(kind, "")[:-1]) + "*}"
        with _translate():
            return [_text(k) for k in self.client.scan_iter(match=pattern, count=1000)]

    def _touch(self, keys: list[str]) -> None:
        with _translate():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                self._touch_script(keys=[key], client=pipe)
            pipe.execute()

    def _changed(self, key: str) -> None:
        """Watchers here and elsewhere hear of the write through ``<prefix>changed``."""

    # -- listener ------------------------------------------------------------

    def _on_watch(self) -> None:
        self._on_hold()
        if not self._hearing_changes:
            # Wake the listener now (not at its next poll) so it subscribes to changes.
            with contextlib.suppress(redis.RedisError, OSError):
                self.client.publish(self.channel, "")

    def _on_hold(self) -> None:
        if self._closed.is_set():
            return
        with self._listener_lock:
            alive = self._listener is not None and self._listener.is_alive()
            if alive and self._listener_pid == os.getpid():
                return
            self._listener_pid = os.getpid()  # a forked child needs its own thread
            self.subscribed.clear()
            self._listener = threading.Thread(
                target=self._listen, name="asyncstate-listener", daemon=True
            )
            self._listener.start()

    def _listen(self) -> None:
        backoff = 0.05
        while not self._closed.is_set():
            pubsub = self.client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                next_sweep = 0.0
                changes = False
                while not self._closed.is_set():
                    if changes != bool(self._watchers):  # only hear of writes while someone watches
                        changes = self._hearing_changes = not changes
                        (pubsub.subscribe if changes else pubsub.unsubscribe)(self.changes_channel)
                    msg = pubsub.get_message(timeout=0.2 if changes else 0.5)
                    if msg is not None:
                        if msg["type"] == "subscribe" and _text(msg["channel"]) == self.channel:
                            # (re)subscribed: anything published while we were away is in the flags
                            self.subscribed.set()
                            self._sweep()
                        elif msg["type"] == "message" and msg["data"]:  # empty: a wake-up call
                            key = _text(msg["data"])
                            if _text(msg["channel"]) == self.channel:
                                self._deliver(key)
                            self._notify(key)
                        backoff = 0.05
                    now = time.monotonic()
                    if now >= next_sweep:
                        self._sweep()
                        next_sweep = now + self.sweep_interval
            except (redis.RedisError, OSError, StoreError) as exc:
                self.subscribed.clear()
                self._hearing_changes = False
                log.warning("asyncstate cancel listener lost Redis (%s); retrying", exc)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def _sweep(self) -> None:
        """Deliver stored cancel flags and release Events of entries that are gone."""
        keys = self.held_keys()
        if not keys:
            return
        generations = [self.generation(key) for key in keys]
        with _translate():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, "x", "c")
            rows = pipe.execute()
        for key, generation, (ttl, flag) in zip(keys, generations, rows):
            if ttl is None:
                self._release(key, generation)
            elif flag:
                self._deliver(key)

    def close(self) -> None:
        self._closed.set()
        thread = self._listener
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=2)
        super().close()
