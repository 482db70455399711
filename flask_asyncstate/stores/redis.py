"""Redis store: entries shared by every process and host that uses the same Redis.

One hash per entry (``d`` document, ``c`` cancel flag, ``x`` expiry in ms, ``e``:``v``
epoch and version), so document and flag live apart but expire together. Every
operation is a single-key Lua script or command (atomic, Cluster-safe); ``update``
is a compare-and-set on the version, no WATCH/MULTI. A cancel sets ``c`` and
publishes the key on ``<prefix>cancel``; every write publishes it on the entry's own
``<prefix>changed:<key>``. One listener thread per store sets the matching local
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
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pybreaker
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from ..errors import StoreUnavailable
from . import redis_scripts as scripts
from .base import Found, Store, on_request_path
from .redis_client import (
    BreakerListener,
    Scripts,
    chunks,
    client_from_url,
    glob_escape,
    is_outage,
    request_client,
    request_client_from_url,
    text_of,
    translate,
)
from .redis_index import OwnerIndexes
from .redis_listener import CancelListener

__all__ = ["RedisStore", "client_from_url", "request_client", "request_client_from_url"]

log = logging.getLogger("flask_asyncstate")


class RedisStore(OwnerIndexes, CancelListener, Store):
    """Entries in Redis; see the module docstring for the layout.

    Every write publishes its key, and the listener wakes watchers in each process.

    :param request_timeout: longest wait of a request-path call, connect and read included.
    :param circuit_failures: consecutive timeouts or connection errors that open the circuit.
    :param circuit_reset: seconds an open circuit fails calls at once before it lets one probe.
    :param fast_client: the request-path client, if not derived from ``client``.
    """

    notifies_changes = True  # every write publishes its key; the listener wakes the watchers
    ranks = True  # ranked lists: sorted sets (stores/redis_index.py)

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
            fail_max=circuit_failures,
            reset_timeout=circuit_reset,
            exclude=[lambda exc: not is_outage(exc)],
            listeners=[BreakerListener(self)],
            name="asyncstate-redis",
        )
        self.channel = f"{self.key_prefix}cancel"
        #: Prefix of the per-entry change channels: ``<prefix>changed:<key>``.
        self.changes_channel = f"{self.key_prefix}changed:"
        self.sweep_interval = sweep_interval
        self._scripts = Scripts(client)
        #: A Redis Cluster client: its pipelines cannot run scripts, so those go one by one.
        self.cluster = isinstance(client, RedisCluster)
        self._closed = threading.Event()
        self._listener: threading.Thread | None = None
        self._listener_pid = 0
        self._listener_lock = threading.Lock()
        self._change_keys: set[str] = set()  # keys whose change channel the listener hears
        #: Set each time the listener is subscribed; tests and bench wait on it.
        self.subscribed = threading.Event()

    # -- storage hooks -----------------------------------------------------

    def _run(self, text: str, keys: list[str], args: list[Any], client: Any) -> Any:
        """Run one of :mod:`.redis_scripts` on ``client`` (a client or a pipeline)."""
        return self._scripts.run(text, keys, args, client)

    @contextlib.contextmanager
    def _io(self) -> Iterator[redis.Redis]:
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

    def _create(self, key: str, text: str, ttl_ms: int) -> None:
        with self._io() as client:
            epoch = secrets.token_hex(4)
            self._run(scripts.CREATE, [key], [text, ttl_ms, self.changes_channel, epoch], client)

    def _read(self, keys: list[str], refresh: bool) -> list[tuple[str, bool] | None]:
        # A read that restarts the expiry needs the entry's own ttl: a script. One that
        # does not is a plain HMGET (the hot path of a progress poll).
        with self._io() as client:
            if refresh and self.cluster:
                raws = [self._run(scripts.READ, [key], ["1"], client) for key in keys]
            elif len(keys) == 1:
                raws = [
                    self._run(scripts.READ, keys, ["1"], client)
                    if refresh
                    else client.hmget(keys[0], "d", "c")
                ]
            else:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    if refresh:
                        self._run(scripts.READ, [key], ["1"], pipe)
                    else:
                        pipe.hmget(key, "d", "c")
                raws = self._scripts.execute(pipe)
        return [
            None if raw is None or raw[0] is None else (text_of(raw[0]), bool(raw[1]))
            for raw in raws
        ]

    def _write(self, key: str, text: str) -> Found:
        with self._io() as client:
            flag = self._run(scripts.WRITE, [key], [text, self.changes_channel], client)
        return Found.of(None if flag is None else bool(flag))

    def _write_many(self, keys: list[str], texts: list[str]) -> list[Found]:
        if self.cluster:  # a cluster pipeline cannot run scripts
            return super()._write_many(keys, texts)
        flags: list[Any] = []
        with self._io() as client:
            for start in range(0, len(keys), 1000):  # one round trip per 1,000 documents
                pipe = client.pipeline(transaction=False)
                for key, text in zip(keys[start : start + 1000], texts[start : start + 1000]):
                    self._run(scripts.WRITE, [key], [text, self.changes_channel], pipe)
                flags.extend(self._scripts.execute(pipe))
        return [Found.of(None if flag is None else bool(flag)) for flag in flags]

    def _update(self, key: str, apply: Callable[[str], str]) -> Found:
        # Optimistic: read the document and its version, apply, swap if the version held.
        while True:
            with self._io() as client:
                peeked = self._run(scripts.PEEK, [key], [], client)
            if peeked is None:
                return Found.MISSING
            text, _flag, version = peeked
            new_text = apply(text_of(text))
            with self._io() as client:
                swapped = self._run(
                    scripts.SWAP, [key], [new_text, text_of(version), self.changes_channel], client
                )
            if swapped is None:
                return Found.MISSING
            if int(swapped[0]):
                return Found.of(bool(swapped[1]))

    def _cancel(self, key: str) -> bool:
        with self._io() as client:
            found = bool(self._run(scripts.CANCEL, [key], [self.channel], client))
            if found and self.cluster:
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
        pattern = glob_escape(self.key(kind, "")[:-1]) + "*}"
        with self._io() as client:
            return [text_of(k) for k in client.scan_iter(match=pattern, count=1000)]

    def _touch(self, keys: list[str]) -> list[str]:
        missing: list[str] = []
        with self._io() as client:
            for chunk in chunks(keys):
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
                    self._run(scripts.TOUCH, [key], [], pipe)
                found = self._scripts.execute(pipe)
                missing += [k for k, hit in zip(chunk, found) if not int(hit)]
        return missing

    def close(self) -> None:
        self._closed.set()
        if self.request_client is not self.client:  # our own; a client passed to us stays open
            if self.cluster:
                self.request_client.close()
            else:
                self.request_client.connection_pool.disconnect()
        thread = self._listener
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=2)
        super().close()
