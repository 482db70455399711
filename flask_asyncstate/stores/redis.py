"""The Redis store: entries shared by every process and host that uses the same Redis.

Layout. One hash per entry (``d`` document, ``c`` cancel flag, ``x`` expiry in ms,
``e``:``v`` epoch and version), so document and flag live apart but expire together.
Every operation is a single-key Lua script (``redis.lua``, beside this file) or command
(atomic, Cluster-safe); ``update`` is a compare-and-set on the version, no WATCH/MULTI.
An owner's index is its unfinished job ids (a set, what the quota counts) and its recent
ones (a sorted set), both under the owner key's hash tag: one slot. A ranked list (the
newest jobs of the app, its live instances) is one sorted set, its key hash-tagged like
every other (``<prefix>{flask_asyncstate.index:jobs}``), trimmed to its size by each add.

Notifications. A cancel sets ``c`` and publishes the key on ``<prefix>cancel``, heard by
every process; every write publishes it on the entry's own ``<prefix>changed:<key>``,
heard only by processes that watch that entry. One listener thread per store and process
sets the matching local cancel Events, and wakes local watchers (push updates) while
there are any; it re-checks the stored flags after every (re)subscription and every
``sweep_interval`` seconds, so a cancel published while the link was down is still
delivered. The same sweep releases Events of expired entries.

Clients. Two clients share the work: calls made while serving a request (see
:func:`~flask_asyncstate.stores.base.on_request_path`) use a client with short
timeouts and no retry on timeout, behind a circuit breaker (pybreaker) that
fails them at once while Redis is stalled; background work (the writer, the
listener, jobs) uses the patient client and retries, so nothing is lost. redis-py's
errors become :class:`~flask_asyncstate.errors.StoreUnavailable` (an outage) or
:class:`~flask_asyncstate.errors.StoreError` (:func:`translate`).

ACL. :func:`acl_rules` is the least-privilege rule for a flask-asyncstate user: its keys,
its two channels, and only the commands the store runs (scripts included: Redis checks
their commands too); ``flask asyncstate acl`` prints it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from typing import Any, NamedTuple, TypeAlias

import pybreaker
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.client import Pipeline
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import ClusterCrossSlotError, NoScriptError, RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from ..errors import StoreError, StoreUnavailable
from .base import Found, Store, on_request_path

__all__ = [
    "RedisStore",
    "acl_rules",
    "acl_setuser",
    "client_from_url",
    "request_client",
    "request_client_from_url",
    "sentinel_client",
    "translate",
]

log = logging.getLogger("flask_asyncstate")

#: What the store talks to: a plain or Sentinel ``redis.Redis``, or a ``RedisCluster``.
Client: TypeAlias = redis.Redis | RedisCluster


# -- the Lua scripts ------------------------------------------------------------------


class _Lua(NamedTuple):
    """The scripts of ``redis.lua``, by name (their keys and arguments are described there)."""

    read: str
    create: str
    peek: str
    swap: str
    take: str
    write: str
    cancel: str
    touch: str
    claim: str
    tally: str


def _load_lua() -> _Lua:
    """Each script of ``redis.lua`` runs from its ``-- script: <name>`` line to the next."""
    package = resources.files(__name__.rpartition(".")[0])
    text = package.joinpath("redis.lua").read_text(encoding="utf-8")
    parts = re.split(r"^-- script: (\w+)\n", text, flags=re.MULTILINE)
    return _Lua(**{name: body.strip() + "\n" for name, body in zip(parts[1::2], parts[2::2])})


_LUA = _load_lua()


# -- clients ----------------------------------------------------------------------------


def client_from_url(url: str) -> redis.Redis:
    """The patient client for background work: a few seconds' timeouts, quick retries."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
    )


def sentinel_client(sentinels: Any, master: str) -> redis.Redis:
    """The patient client of ``ASYNCSTATE_REDIS_SENTINELS``: the master, found by asking them."""
    found = Sentinel(list(sentinels), socket_timeout=2, socket_connect_timeout=2)
    return found.master_for(
        master,
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


def request_client(client: Client, timeout: float) -> Client:
    """A copy of ``client`` (same server, credentials, TLS) whose calls wait at most ``timeout`` s.

    Falls back to ``client`` itself (with a warning) for a client that cannot be copied.
    """
    if isinstance(client, RedisCluster):
        return _cluster_copy(client, timeout)
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):  # the same master, found the same way
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_BOUND}
        kwargs.update(_fast_options(timeout))
        kwargs["connection_class"] = pool.connection_class  # TLS stays TLS
        return pool.sentinel_manager.master_for(pool.service_name, **kwargs)
    try:
        kwargs = {
            k: v
            for k, v in pool.connection_kwargs.items()
            if not k.startswith("orig_") and k not in _POOL_BOUND
        }
        kwargs.update(_fast_options(timeout))
        if isinstance(pool, redis.BlockingConnectionPool):  # its wait for a free connection too
            kwargs["timeout"] = timeout / 2
        copy = pool.__class__(
            connection_class=pool.connection_class,
            max_connections=pool.max_connections,
            **kwargs,
        )
        return redis.Redis(connection_pool=copy)
    except Exception as exc:  # noqa: BLE001 - an unusual pool: keep working, say what it costs
        log.warning(
            "flask-asyncstate: cannot derive a short-timeout client from %r (%s); request-path"
            " calls use its own timeouts",
            client,
            exc,
        )
        return client


def _cluster_copy(client: RedisCluster, timeout: float) -> RedisCluster:
    """A RedisCluster on the same nodes with request-path timeouts (falls back to ``client``)."""
    try:
        kwargs = {
            k: v
            for k, v in client.nodes_manager.connection_kwargs.items()
            if k not in _POOL_BOUND
            and k not in ("host", "port", "retry")
            and not k.startswith("orig_")
        }
        kwargs.update(_fast_options(timeout))
        kwargs.pop("health_check_interval", None)
        nodes = [ClusterNode(n.host, n.port) for n in client.get_nodes()]
        return RedisCluster(startup_nodes=nodes, **kwargs)
    except Exception as exc:  # noqa: BLE001 - keep working, say what it costs
        log.warning(
            "flask-asyncstate: cannot derive a short-timeout cluster client (%s); request-path"
            " calls use its own timeouts",
            exc,
        )
        return client


# -- the store ----------------------------------------------------------------------------


class RedisStore(Store):
    """Entries in Redis; see the module docstring for the layout.

    Every write publishes its key, and the listener wakes watchers in each process.

    :param request_timeout: longest wait of a request-path call, connect and read included.
    :param circuit_failures: consecutive timeouts or connection errors that open the circuit.
    :param circuit_reset: seconds an open circuit fails calls at once before it lets one probe.
    :param fast_client: the request-path client, if not derived from ``client``.
    """

    notifies_changes = True  # every write publishes its key; the listener wakes the watchers
    ranks = True  # ranked lists: sorted sets

    def __init__(
        self,
        client: Client,
        *,
        sweep_interval: float = 1.0,
        request_timeout: float = 1.0,
        circuit_failures: int = 3,
        circuit_reset: float = 2.0,
        fast_client: Client | None = None,
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
            fail_max=circuit_failures,
            reset_timeout=circuit_reset,
            exclude=[lambda exc: not _is_outage(exc)],
            listeners=[_BreakerListener(self)],
            name="asyncstate-redis",
        )
        self.channel = f"{self.key_prefix}cancel"
        #: Prefix of the per-entry change channels: ``<prefix>changed:<key>``.
        self.changes_channel = f"{self.key_prefix}changed:"
        self.sweep_interval = sweep_interval
        self._scripts = _ScriptRunner(client)
        #: A Redis Cluster client: its pipelines cannot run scripts, so those go one by one.
        self.cluster = isinstance(client, RedisCluster)
        #: Whether one script may touch keys of several slots (standalone Redis; not a
        #: Cluster, nor a proxy that enforces slots: found out at the first refusal).
        self._cross_slot = not self.cluster
        self._closed = threading.Event()
        self._listener: threading.Thread | None = None
        self._listener_pid = 0
        self._listener_lock = threading.Lock()
        self._change_keys: set[str] = set()  # keys whose change channel the listener hears
        #: Set each time the listener is subscribed; tests and bench wait on it.
        self.subscribed = threading.Event()
        #: False in a process whose cancels another process hears and hands over (an RQ
        #: work horse: its worker listens): no listener thread, no subscription here.
        self.listens = True

    # -- talking to Redis ----------------------------------------------------

    def _run(self, script: str, keys: list[str], args: list[Any], client: Any) -> Any:
        """Run one of the scripts of ``redis.lua`` on ``client`` (a client or a pipeline)."""
        return self._scripts.run(script, keys, args, client)

    @contextlib.contextmanager
    def _io(self) -> Iterator[Client]:
        """The client for this call, errors translated; request-path calls go through the breaker."""
        if on_request_path():
            if self.breaker.current_state == "closed":
                with translate(), self.breaker.calling():
                    yield self.request_client
                return
            # Open or half-open: one call at a time may probe; the others fail at once rather
            # than each waiting out the timeout against a server that may still be stalled.
            if not self._probe.acquire(blocking=False):
                raise StoreUnavailable("Redis is unreachable (circuit open, probe in flight)")
            try:
                with translate(), self.breaker.calling():
                    yield self.request_client
            finally:
                self._probe.release()
        else:
            with translate():
                yield self.client

    # -- storage hooks -----------------------------------------------------

    def _create(self, key: str, text: str, ttl_ms: int) -> None:
        with self._io() as client:
            epoch = secrets.token_hex(4)
            self._run(_LUA.create, [key], [text, ttl_ms, self.changes_channel, epoch], client)

    def _create_with(
        self,
        key: str,
        text: str,
        ttl_ms: int,
        member: str,
        claims: list[tuple[str, int, int]],
        ranks: list[tuple[str, float, int]],
        index_ttl_ms: int,
    ) -> list[bool]:
        # One pipeline, one round trip: a start's document, its places and listings. The
        # server runs them in order, so the document exists before any claim sees the id.
        # A cluster spreads them over nodes (no order between them), and its pipelines
        # cannot run scripts: one by one there.
        if self.cluster or not (claims or ranks):
            return super()._create_with(key, text, ttl_ms, member, claims, ranks, index_ttl_ms)
        now = time.time()
        with self._io() as client:
            pipe = client.pipeline(transaction=False)
            epoch = secrets.token_hex(4)
            self._run(_LUA.create, [key], [text, ttl_ms, self.changes_channel, epoch], pipe)
            for index, limit, keep in claims:
                self._run(
                    _LUA.claim,
                    [f"{index}:a", f"{index}:r"],
                    [member, limit, keep, now, index_ttl_ms],
                    pipe,
                )
            for ranked, score, keep in ranks:
                pipe.zadd(ranked, {member: score})
                pipe.zremrangebyrank(ranked, 0, -keep - 1)
            results = self._scripts.execute(pipe)
        return [bool(taken) for taken in results[1 : 1 + len(claims)]]

    def _read(self, keys: list[str], refresh: bool) -> list[tuple[str, bool] | None]:
        # A read that restarts the expiry needs the entry's own ttl: a script. One that
        # does not is a plain HMGET (the hot path of a progress poll).
        with self._io() as client:
            if refresh and self.cluster:
                raws = [self._run(_LUA.read, [key], ["1"], client) for key in keys]
            elif len(keys) == 1:
                raws = [
                    self._run(_LUA.read, keys, ["1"], client)
                    if refresh
                    else client.hmget(keys[0], "d", "c")
                ]
            else:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    if refresh:
                        self._run(_LUA.read, [key], ["1"], pipe)
                    else:
                        pipe.hmget(key, "d", "c")
                raws = self._scripts.execute(pipe)
        return [
            None if raw is None or raw[0] is None else (_text_of(raw[0]), bool(raw[1]))
            for raw in raws
        ]

    def _write(self, key: str, text: str) -> Found:
        with self._io() as client:
            flag = self._run(_LUA.write, [key], [text, self.changes_channel], client)
        return Found.of(None if flag is None else bool(flag))

    def _write_many(self, keys: list[str], texts: list[str]) -> list[Found]:
        if self.cluster:  # a cluster pipeline cannot run scripts
            return super()._write_many(keys, texts)
        flags: list[Any] = []
        with self._io() as client:
            for start in range(0, len(keys), 1000):  # one round trip per 1,000 documents
                pipe = client.pipeline(transaction=False)
                for key, text in zip(keys[start : start + 1000], texts[start : start + 1000]):
                    self._run(_LUA.write, [key], [text, self.changes_channel], pipe)
                flags.extend(self._scripts.execute(pipe))
        return [Found.of(None if flag is None else bool(flag)) for flag in flags]

    def _update(self, key: str, apply: Callable[[str], str]) -> Found:
        # Optimistic: read the document and its version, apply, swap if the version held.
        while True:
            with self._io() as client:
                peeked = self._run(_LUA.peek, [key], [], client)
            if peeked is None:
                return Found.MISSING
            text, _flag, version = peeked
            new_text = apply(_text_of(text))
            with self._io() as client:
                swapped = self._run(
                    _LUA.swap, [key], [new_text, _text_of(version), self.changes_channel], client
                )
            if swapped is None:
                return Found.MISSING
            if int(swapped[0]):
                return Found.of(bool(swapped[1]))

    def _swap_known(
        self, key: str, expected: str, text: str, forget: tuple[str, str] | None
    ) -> tuple[Found | None, bool]:
        # The index leaves in the same script where one script may touch it: standalone
        # Redis (a script's keys in a cluster must share a slot; these do not).
        keys, member = [key], ""
        if forget is not None and self._cross_slot:
            keys, member = [key, f"{forget[0]}:a", f"{forget[0]}:r"], forget[1]
        with self._io() as client:

            def take() -> Any:
                args = [text, expected, self.changes_channel, member]
                return self._run(_LUA.take, keys, args, client)

            try:
                taken = take()
            except redis.ResponseError as exc:  # (a script that did not run at all)
                if len(keys) == 1 or not _cross_slot_refusal(exc):
                    raise
                # A server that enforces slots without being a Cluster (a proxy in front of
                # shards): the index leaves in a call of its own from now on.
                log.warning("flask-asyncstate: Redis refuses scripts over two slots (%s)", exc)
                self._cross_slot = False
                keys, member = [key], ""
                taken = take()
        forgot = len(keys) == 3
        if taken is None:
            return Found.MISSING, forgot
        if not int(taken[0]):
            return None, forgot
        return Found.of(bool(taken[1])), forgot

    def _cancel(self, key: str) -> bool:
        with self._io() as client:
            found = bool(self._run(_LUA.cancel, [key], [self.channel], client))
            if found and isinstance(client, RedisCluster):
                # The script published on the key's node; the bus may forward that ~40 ms late
                # (Redis 7.0 bus links): publish on the channel's node, where listeners are.
                with contextlib.suppress(redis.RedisError, RedisClusterException):
                    node = client.get_node_from_key(self.channel)
                    client.get_redis_connection(node).publish(self.channel, key)
            return found

    def _remove(self, key: str) -> bool:
        with self._io() as client:
            return bool(client.delete(key))

    def _exists(self, key: str) -> bool:
        with self._io() as client:
            return bool(client.exists(key))

    def _keys(self, kind: str) -> list[str]:
        pattern = _glob_escape(self.key(kind, "")[:-1]) + "*}"
        with self._io() as client:
            return [_text_of(k) for k in client.scan_iter(match=pattern, count=1000)]

    def _touch(self, keys: list[str]) -> list[str]:
        missing: list[str] = []
        with self._io() as client:
            for chunk in _chunks(keys):
                if self.cluster:  # two pipelined rounds instead of a script per key
                    pipe = client.pipeline(transaction=False)
                    for key in chunk:
                        pipe.hget(key, "x")
                    ttls = pipe.execute()
                    missing += [k for k, ttl in zip(chunk, ttls) if ttl is None]
                    pipe = client.pipeline(transaction=False)
                    for key, ttl in zip(chunk, ttls):
                        if ttl is not None and int(ttl) > 0:
                            pipe.pexpire(key, int(ttl))
                    pipe.execute()
                    continue
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    self._run(_LUA.touch, [key], [], pipe)
                found = self._scripts.execute(pipe)
                missing += [k for k, hit in zip(chunk, found) if not int(hit)]
        return missing

    # -- owners' indexes: a set of active members, a sorted set of recent ones --------

    def _claim(
        self, key: str, member: str, limit: int, keep: int, score: float, ttl_ms: int
    ) -> bool:
        with self._io() as client:
            return bool(
                self._run(
                    _LUA.claim,
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
        return [_text_of(m) for m in active], [_text_of(m) for m in recent]

    def _forget(self, key: str, members: list[str]) -> None:
        with self._io() as client:
            pipe = client.pipeline(transaction=False)
            pipe.srem(f"{key}:a", *members)
            pipe.zrem(f"{key}:r", *members)
            pipe.execute()

    def _touch_claims(self, keys: list[str], ttl_ms: int) -> None:
        with self._io() as client:
            for chunk in _chunks(keys):
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.pexpire(f"{key}:a", ttl_ms)
                    pipe.pexpire(f"{key}:r", ttl_ms)
                pipe.execute()

    # -- ranked lists: one sorted set each ---------------------------------------------

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

    def _tally(self, key: str, changes: list[tuple[str, int]], ttl_ms: int) -> None:
        args: list[Any] = [x for pair in changes for x in pair]
        with self._io() as client:
            self._run(_LUA.tally, [key], [*args, ttl_ms], client)

    def _tallies(self, keys: list[str]) -> list[dict[str, int]]:
        with self._io() as client:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            found = pipe.execute()
        return [{_text_of(k): int(v) for k, v in f.items()} for f in found]

    def _ranked(self, key: str, count: int) -> list[str]:
        with self._io() as client:
            return [_text_of(m) for m in client.zrevrange(key, 0, count - 1)]

    def _unrank(self, key: str, members: list[str]) -> None:
        with self._io() as client:
            client.zrem(key, *members)

    # -- the listener: cancels and changes published by any process ---------------------

    def _on_hold(self) -> None:
        if self._closed.is_set() or not self.listens:
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

    def _on_watch(self) -> None:
        self._on_hold()
        if not self.watchers.key_set() <= self._change_keys:
            # Wake the listener now (not at its next poll) so it subscribes to the new key.
            with contextlib.suppress(StoreError), self._io() as client:
                client.publish(self.channel, "")

    def ensure_threads(self) -> None:
        """Start the listener again if it died while Events or watchers need it."""
        if self.events or self.watchers:
            self._on_hold()

    def _listen(self) -> None:
        backoff = 0.05
        while not self._closed.is_set():
            pubsub = self.client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                next_sweep = 0.0
                heard: set[str] = set()
                while not self._closed.is_set():
                    heard = self._follow_watchers(pubsub, heard)
                    msg = pubsub.get_message(timeout=0.2 if heard else 0.5)
                    if msg is not None:
                        if msg["type"] == "subscribe" and _text_of(msg["channel"]) == self.channel:
                            # (re)subscribed: anything published while we were away is in the flags
                            self.subscribed.set()
                            self._sweep()
                        elif msg["type"] == "message" and msg["data"]:  # empty: a wake-up call
                            key = _text_of(msg["data"])
                            if _text_of(msg["channel"]) == self.channel:
                                self.events.deliver(key)
                            self.watchers.notify(key)
                        backoff = 0.05
                    now = time.monotonic()
                    if now >= next_sweep:
                        self._sweep()
                        next_sweep = now + self.sweep_interval
            except Exception as exc:
                self.subscribed.clear()
                self._change_keys = set()
                if _is_refusal(exc):
                    log.error(
                        "asyncstate cancel listener: Redis refused SUBSCRIBE to %s (%s): cancels"
                        " reach jobs only at their next write until the ACL allows it",
                        self.channel,
                        exc,
                    )
                elif isinstance(exc, (redis.RedisError, OSError, StoreError)):
                    log.warning("asyncstate cancel listener lost Redis (%s); retrying", exc)
                else:
                    log.exception("asyncstate cancel listener failed; restarting it")
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def _follow_watchers(self, pubsub: Any, heard: set[str]) -> set[str]:
        """Hear the change channels of exactly the keys watched in this process: a write
        wakes only the instances that watch that entry, once each, whatever their streams."""
        wanted = self.watchers.key_set()
        if wanted != heard:
            added, dropped = wanted - heard, heard - wanted
            if added:
                pubsub.subscribe(*(self.changes_channel + k for k in added))
            if dropped:
                pubsub.unsubscribe(*(self.changes_channel + k for k in dropped))
            self._change_keys = wanted
        return wanted

    def _sweep(self) -> None:
        """Deliver stored cancel flags and release Events of entries that are gone."""
        keys = self.events.keys()
        if not keys:
            return
        generations = [self.events.generation(key) for key in keys]
        rows: list[list[Any]] = []
        with self._io() as client:
            for chunk in _chunks(keys):
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.hmget(key, "x", "c")
                rows.extend(pipe.execute())
        for key, generation, (ttl, flag) in zip(keys, generations, rows):
            if ttl is None:
                self.events.release(key, generation)
            elif flag:
                self.events.deliver(key, generation)

    # -- process life ----------------------------------------------------------------

    def after_fork(self) -> None:
        super().after_fork()
        self._listener_lock = threading.Lock()
        self._probe = threading.Lock()
        self._listener = None  # the parent's thread did not come along

    def close(self) -> None:
        self._closed.set()
        if self.request_client is not self.client:  # our own; a client passed to us stays open
            if isinstance(self.request_client, RedisCluster):
                self.request_client.close()
            else:
                self.request_client.connection_pool.disconnect()
        thread = self._listener
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=2)
        super().close()


# -- what the store needs around redis-py ---------------------------------------------------


@contextlib.contextmanager
def translate() -> Iterator[None]:
    """Turn redis-py errors into ours, cause chained."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, OSError, RedisClusterException) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
    except pybreaker.CircuitBreakerError as exc:
        raise StoreUnavailable(f"Redis is unreachable (circuit open: {exc})") from exc
    except redis.RedisError as exc:
        if _is_refusal(exc):  # an ACL user missing a right: say which, loudly
            log.error(
                "flask-asyncstate: Redis refused a command: %s (see 'flask asyncstate acl')", exc
            )
            raise StoreError(
                f"Redis refused the command for lack of an ACL permission: {exc}"
            ) from exc
        raise StoreError(f"Redis error: {exc}") from exc


def _cross_slot_refusal(exc: redis.ResponseError) -> bool:
    """``CROSSSLOT``: the server enforces hash slots and the keys of one call span two."""
    return isinstance(exc, ClusterCrossSlotError) or "CROSSSLOT" in str(exc)


def _is_refusal(exc: BaseException) -> bool:
    """An ACL refusal: NOPERM, or its wording inside a script (``can't publish to the channel``)."""
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return True
    text = str(exc)
    return isinstance(exc, redis.ResponseError) and (
        "NOPERM" in text
        or "no permissions" in text
        or "The user executing the script can't" in text
    )


def _is_outage(exc: BaseException) -> bool:
    # A cluster with no reachable node raises RedisClusterException, not a RedisError.
    return isinstance(
        exc, (redis.ConnectionError, redis.TimeoutError, OSError, RedisClusterException)
    )


class _BreakerListener(pybreaker.CircuitBreakerListener):
    """Log each state change and hand it to ``store.on_circuit_change`` (the extension's signal)."""

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


class _ScriptRunner:
    """Runs the store's Lua scripts on any client: ``EVALSHA``, sending the script with
    ``EVAL`` where a node lacks it (new, restarted, promoted). In a plain pipeline the
    ``EVALSHA`` is queued as is and :meth:`execute` re-runs the ones a node answered
    ``NOSCRIPT``, so a pipeline costs one round trip (redis-py's registered scripts add a
    ``SCRIPT EXISTS`` before each). A node found lacking one script is sent all of them:
    a node then knows all or none, so a pipeline whose scripts depend on one another (a
    start's document before its claims) has a later one run and an earlier one fail only
    if another connection loads them while the pipeline runs.
    A Cluster pipeline cannot run scripts: the store runs them one by one there."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._sha: dict[str, str] = {}

    def _load_all(self, client: Any) -> None:
        """Send every script of ``redis.lua`` to the node behind ``client`` (one round trip
        where a pipeline can carry them)."""
        if isinstance(client, RedisCluster):
            for text in _LUA:
                client.script_load(text)
            return
        pipe = client.pipeline(transaction=False)
        for text in _LUA:
            pipe.script_load(text)
        pipe.execute()

    def _sha_of(self, text: str) -> str:
        sha = self._sha.get(text)
        if sha is None:
            sha = self._sha[text] = hashlib.sha1(text.encode()).hexdigest()
        return sha

    def run(self, text: str, keys: Sequence[Any], args: Sequence[Any], client: Any) -> Any:
        if isinstance(client, ClusterPipeline):
            raise TypeError("a Redis Cluster pipeline cannot run scripts; run them one by one")
        sha = self._sha_of(text)
        if isinstance(client, Pipeline):
            queued = client.__dict__.setdefault("_asyncstate_scripts", [])
            queued.append((len(client.command_stack), text, list(keys), list(args)))
            return client.evalsha(sha, len(keys), *keys, *args)
        try:
            return client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:  # this node has not seen it (new, restarted, or promoted)
            result = client.eval(text, len(keys), *keys, *args)
            with contextlib.suppress(Exception):  # (the next NOSCRIPT tries again)
                self._load_all(client)
            return result

    def execute(self, pipe: Any) -> list[Any]:
        """``pipe.execute()``, with the scripts a node did not know run again, one by one
        (``NOSCRIPT`` means the script did not run: running it again is safe)."""
        queued = pipe.__dict__.pop("_asyncstate_scripts", None)
        if not queued:
            return list(pipe.execute())
        results = list(pipe.execute(raise_on_error=False))
        failed = [q for q in queued if isinstance(results[q[0]], NoScriptError)]
        if failed:  # load the scripts, then send those commands again in one pipeline
            self._load_all(self._client)
            again = self._client.pipeline(transaction=False)
            for _, text, keys, args in failed:
                again.evalsha(self._sha_of(text), len(keys), *keys, *args)
            for (index, text, keys, args), result in zip(
                failed, again.execute(raise_on_error=False)
            ):
                if isinstance(result, NoScriptError):  # lost again (a failover meanwhile)
                    result = self.run(text, keys, args, self._client)
                results[index] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results


def _text_of(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _chunks(keys: list[str], size: int = 1000) -> Iterator[list[str]]:
    """Pipelines of at most ``size`` commands, so a huge batch never builds one giant reply."""
    for i in range(0, len(keys), size):
        yield keys[i : i + size]


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


# -- the least-privilege ACL rule -------------------------------------------------------

#: Every command the Redis store sends or runs inside its Lua scripts, plus what redis-py
#: sends on connect (its ``CLIENT SETINFO``, Redis 7.2+, may be refused: it ignores that).
#: RQ's and Flask-Session's own keys and commands are not covered.
ACL_COMMANDS = (
    "hello", "auth", "ping", "select", "client|setname",
    "eval", "evalsha", "script|load", "script|exists",
    "del", "exists", "scan",
    "hget", "hmget", "hset", "hincrby", "hgetall", "pexpire",
    "sadd", "srem", "scard", "smembers", "sismember",
    "zadd", "zrem", "zcard", "zrange", "zrevrange", "zremrangebyrank", "zremrangebyscore",
    "publish", "subscribe", "unsubscribe",
    "cluster|slots", "cluster|shards", "command",  # what redis-py's cluster client asks first
)  # fmt: skip


def acl_rules(key_prefix: str) -> list[str]:
    """The ``ACL SETUSER`` rules for a user limited to ``key_prefix`` keys and channels."""
    return [
        "resetkeys",
        f"~{key_prefix}*",
        "resetchannels",
        f"&{key_prefix}cancel",
        f"&{key_prefix}changed:*",
        "-@all",
        *(f"+{c}" for c in ACL_COMMANDS),
    ]


def acl_setuser(user: str, key_prefix: str, password: str = "<password>") -> str:
    """The whole ``ACL SETUSER`` command, as ``flask asyncstate acl`` prints it."""
    return " ".join(["ACL SETUSER", user, "on", f">{password}", *acl_rules(key_prefix)])
