"""The cancel listener of the Redis store: one thread per store and process, subscribed to
``<prefix>cancel`` (and to ``<prefix>changed:<key>`` of each key watched here), that sets cancel
Events, wakes watchers, and re-checks stored flags after every (re)subscription and every
``sweep_interval`` seconds, so a cancel published while the link was down still arrives."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

import redis

from ..errors import StoreError
from .redis_client import chunks, is_refusal, text_of

log = logging.getLogger("flask_asyncstate")


class CancelListener:
    """The listener half of :class:`~flask_asyncstate.stores.redis.RedisStore`."""

    client: Any
    channel: str
    changes_channel: str
    sweep_interval: float
    events: Any
    watchers: Any
    subscribed: threading.Event
    _closed: threading.Event
    _listener: threading.Thread | None
    _listener_pid: int
    _listener_lock: threading.Lock
    _change_keys: set[str]

    def _io(self) -> AbstractContextManager[redis.Redis]:  # provided by RedisStore
        raise NotImplementedError

    def _on_watch(self) -> None:
        self._on_hold()
        if not self.watchers.key_set() <= self._change_keys:
            # Wake the listener now (not at its next poll) so it subscribes to the new key.
            with contextlib.suppress(StoreError), self._io() as client:
                client.publish(self.channel, "")

    def after_fork(self) -> None:
        super().after_fork()
        self._listener_lock = threading.Lock()
        self._probe = threading.Lock()
        self._listener = None  # the parent's thread did not come along

    def ensure_threads(self) -> None:
        """Start the listener again if it died while Events or watchers need it."""
        if self.events or self.watchers:
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
                heard: set[str] = set()
                while not self._closed.is_set():
                    heard = self._follow_watchers(pubsub, heard)
                    msg = pubsub.get_message(timeout=0.2 if heard else 0.5)
                    if msg is not None:
                        if msg["type"] == "subscribe" and text_of(msg["channel"]) == self.channel:
                            # (re)subscribed: anything published while we were away is in the flags
                            self.subscribed.set()
                            self._sweep()
                        elif msg["type"] == "message" and msg["data"]:  # empty: a wake-up call
                            key = text_of(msg["data"])
                            if text_of(msg["channel"]) == self.channel:
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
                if is_refusal(exc):
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
        rows = []
        with self._io() as client:
            for chunk in chunks(keys):
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.hmget(key, "x", "c")
                rows.extend(pipe.execute())
        for key, generation, (ttl, flag) in zip(keys, generations, rows):
            if ttl is None:
                self.events.release(key, generation)
            elif flag:
                self.events.deliver(key)
