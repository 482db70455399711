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

Two clients share the work: calls made while serving a request (see
:func:`~flask_asyncstate.stores.base.on_request_path`) use a client with short
timeouts and no retry on timeout, behind a circuit breaker (pybreaker) that
fails them at once while Redis is stalled; background work (the writer, the
listener, jobs) uses the patient client and retries, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pybreaker
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from ..errors import StoreError, StoreUnavailable
from .base import Store, on_request_path

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

# An owner's index: KEYS[1] the set of active members, KEYS[2] a sorted set of recent ones.
# ARGV: member, limit, keep, score, ttl_ms. Both keys share the hash tag: one slot.
_CLAIM = """
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local excess = redis.call('ZCARD', KEYS[2]) - redis.call('SCARD', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if excess <= 0 then break end
    if redis.call('SISMEMBER', KEYS[1], m) == 0 then
      redis.call('ZREM', KEYS[2], m)
      excess = excess - 1
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _chunks(keys: list[str], size: int = 1000) -> Iterator[list[str]]:
    """Pipelines of at most ``size`` commands, so a huge batch never builds one giant reply."""
    for i in range(0, len(keys), size):
        yield keys[i:i + size]


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


@contextlib.contextmanager
def _translate() -> Iterator[None]:
    """Turn redis-py errors into ours, cause chained."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
    except pybreaker.CircuitBreakerError as exc:
        raise StoreUnavailable(f"Redis is unreachable (circuit open: {exc})") from exc
    except redis.RedisError as exc:
        raise StoreError(f"Redis error: {exc}") from exc


def client_from_url(url: str) -> redis.Redis:
    """The patient client for background work: a few seconds' timeouts, quick retries."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
    )


def _fast_options(timeout: float) -> dict[str, Any]:
    # Half the budget each for connect and read, no retry after a timeout (a stalled server
    # would only stall again); one immediate retry after a dropped connection (Redis restarted).
    return {
        "socket_connect_timeout": timeout / 2,
        "socket_timeout": timeout / 2,
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }


def request_client_from_url(url: str, timeout: float) -> redis.Redis:
    """The request-path client for ``ASYNCSTATE_REDIS_URL``: every call waits at most ``timeout``."""
    return redis.Redis.from_url(url, **_fast_options(timeout))


#: Connection options that belong to the pool they were made for, not to a copy of it.
_POOL_BOUND = ("maint_notifications_pool_handler",)


def request_client(client: redis.Redis, timeout: float) -> redis.Redis:
    """A copy of ``client`` (same server, credentials, TLS) whose calls wait at most ``timeout`` s.

    Falls back to ``client`` itself (with a warning) for a client that cannot be copied.
    """
    pool = client.connection_pool
    try:
        kwargs = {k: v for k, v in pool.connection_kwargs.items()
                  if not k.startswith("orig_") and k not in _POOL_BOUND}
        kwargs.update(_fast_options(timeout))
        if isinstance(pool, redis.BlockingConnectionPool):  # its wait for a free connection too
            kwargs["timeout"] = timeout / 2
        copy = pool.__class__(
            connection_class=pool.connection_class, max_connections=pool.max_connections,
            **kwargs,
        )
        return redis.Redis(connection_pool=copy)
    except Exception as exc:  # noqa: BLE001 - an unusual pool: keep working, say what it costs
        log.warning(
            "flask-asyncstate: cannot derive a short-timeout client from %r (%s); request-path"
            " calls use its own timeouts", client, exc,
        )
        return client


class _BreakerListener(pybreaker.CircuitBreakerListener):
    """Log each state change and hand it to the store's callback (the extension's signal)."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", str(old_state))
        new = getattr(new_state, "name", str(new_state))
        level = logging.INFO if new == "closed" else logging.WARNING
        log.log(level, "flask-asyncstate: Redis circuit %s -> %s", old, new)
        callback = self._store.on_circuit_change
        if callback is not None:
            try:
                callback(old, new)
            except Exception:
                log.exception("flask-asyncstate: circuit change callback failed")


def _is_outage(exc: BaseException) -> bool:
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError))


class RedisStore(Store):
    """Entries in Redis; see the module docstring for the layout.

    :param request_timeout: longest wait of a request-path call, connect and read included.
    :param circuit_failures: consecutive timeouts or connection errors that open the circuit.
    :param circuit_reset: seconds an open circuit fails calls at once before it lets one probe.
    :param fast_client: the request-path client, if not derived from ``client``.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        sweep_interval: float = 1.0,
        request_timeout: float = 1.0,
        circuit_failures: int = 3,
        circuit_reset: float = 2.0,
        fast_client: redis.Redis | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.client = client
        #: The short-timeout client of request-path calls (derived from ``client`` if not given).
        self.request_client = fast_client or request_client(client, request_timeout)
        #: Called with (old, new) state names when the request-path circuit changes.
        self.on_circuit_change: Callable[[str, str], None] | None = None
        self._probe = threading.Lock()
        # Only outages count: a script or type error is an answer, and resets the count.
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=circuit_failures, reset_timeout=circuit_reset,
            exclude=[lambda exc: not _is_outage(exc)], listeners=[_BreakerListener(self)],
            name="asyncstate-redis",
        )
        self.channel = f"{self.key_prefix}cancel"
        self.changes_channel = f"{self.key_prefix}changed"
        self.sweep_interval = sweep_interval
        self._read_script = client.register_script(_READ)
        self._write_script = client.register_script(_WRITE)
        self._cancel_script = client.register_script(_CANCEL)
        self._touch_script = client.register_script(_TOUCH)
        self._claim_script = client.register_script(_CLAIM)
        self._closed = threading.Event()
        self._listener: threading.Thread | None = None
        self._listener_pid = 0
        self._listener_lock = threading.Lock()
        self._hearing_changes = False
        #: Set each time the listener is subscribed; tests and bench wait on it.
        self.subscribed = threading.Event()

    # -- storage hooks -----------------------------------------------------

    @contextlib.contextmanager
    def _io(self) -> Iterator[redis.Redis]:
        """The client for this call, errors translated; request-path calls go through the breaker."""
        if on_request_path():
            if self.breaker.current_state == "closed":
                with _translate(), self.breaker.calling():
                    yield self.request_client
                return
            # Open or half-open: one call at a time may probe; the others fail at once rather
            # than each waiting out the timeout against a server that may still be stalled.
            if not self._probe.acquire(blocking=False):
                raise StoreUnavailable("Redis is unreachable (circuit open, probe in flight)")
            try:
                with _translate(), self.breaker.calling():
                    yield self.request_client
            finally:
                self._probe.release()
        else:
            with _translate():
                yield self.client

    def _create(self, key: str, text: str, ttl_ms: int) -> None:
        with self._io() as client:
            pipe = client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping={"d": text, "x": ttl_ms})
            if ttl_ms:
                pipe.pexpire(key, ttl_ms)
            pipe.publish(self.changes_channel, key)
            pipe.execute()

    def _read(self, keys: list[str], refresh: bool) -> list[tuple[str, bool] | None]:
        # A read that restarts the expiry needs the entry's own ttl: a script. One that
        # does not is a plain HMGET (the hot path of a progress poll).
        with self._io() as client:
            if len(keys) == 1:
                raws = [self._read_script(keys=keys, args=["1"], client=client) if refresh
                        else client.hmget(keys[0], "d", "c")]
            else:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    if refresh:
                        self._read_script(keys=[key], args=["1"], client=pipe)
                    else:
                        pipe.hmget(key, "d", "c")
                raws = pipe.execute()
        return [None if raw is None or raw[0] is None else (_text(raw[0]), bool(raw[1]))
                for raw in raws]

    def _write(self, key: str, text: str) -> bool | None:
        with self._io() as client:
            flag = self._write_script(keys=[key], args=[text, self.changes_channel], client=client)
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

        with self._io() as client:
            client.transaction(attempt, key)
        return result[0]

    def _cancel(self, key: str) -> bool:
        with self._io() as client:
            return bool(self._cancel_script(keys=[key], args=[self.channel], client=client))

    def _remove(self, key: str) -> bool:
        with self._io() as client:
            return bool(client.delete(key))

    def _exists(self, key: str) -> bool:
        with self._io() as client:
            return bool(client.exists(key))

    def _keys(self, kind: str) -> list[str]:
        pattern = _glob_escape(self.key(kind, "")[:-1]) + "*}"
        with self._io() as client:
            return [_text(k) for k in client.scan_iter(match=pattern, count=1000)]

    def _touch(self, keys: list[str]) -> None:
        with self._io() as client:
            for chunk in _chunks(keys):
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    self._touch_script(keys=[key], client=pipe)
                pipe.execute()

    def _claim(
        self, key: str, member: str, limit: int, keep: int, score: float, ttl_ms: int
    ) -> bool:
        with self._io() as client:
            return bool(self._claim_script(
                keys=[f"{key}:a", f"{key}:r"], args=[member, limit, keep, score, ttl_ms],
                client=client,
            ))

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
        return [_text(m) for m in active], [_text(m) for m in recent]

    def _touch_claims(self, keys: list[str], ttl_ms: int) -> None:
        with self._io() as client:
            for chunk in _chunks(keys):
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.pexpire(f"{key}:a", ttl_ms)
                    pipe.pexpire(f"{key}:r", ttl_ms)
                pipe.execute()

    def _changed(self, key: str) -> None:
        """Watchers here and elsewhere hear of the write through ``<prefix>changed``."""

    # -- listener ------------------------------------------------------------

    def _on_watch(self) -> None:
        self._on_hold()
        if not self._hearing_changes:
            # Wake the listener now (not at its next poll) so it subscribes to changes.
            with contextlib.suppress(StoreError), self._io() as client:
                client.publish(self.channel, "")

    def ensure_threads(self) -> None:
        """Start the listener again if it died while Events or watchers need it."""
        if self._events or self._watchers:
            self._on_hold()

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
            except Exception as exc:
                self.subscribed.clear()
                self._hearing_changes = False
                if isinstance(exc, (redis.RedisError, OSError, StoreError)):
                    log.warning("asyncstate cancel listener lost Redis (%s); retrying", exc)
                else:
                    log.exception("asyncstate cancel listener failed; restarting it")
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
        rows = []
        with self._io() as client:
            for chunk in _chunks(keys):
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.hmget(key, "x", "c")
                rows.extend(pipe.execute())
        for key, generation, (ttl, flag) in zip(keys, generations, rows):
            if ttl is None:
                self._release(key, generation)
            elif flag:
                self._deliver(key)

    def close(self) -> None:
        self._closed.set()
        if self.request_client is not self.client:  # our own; a client passed to us stays open
            self.request_client.connection_pool.disconnect()
        thread = self._listener
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=2)
        super().close()
