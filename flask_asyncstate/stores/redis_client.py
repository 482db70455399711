"""The Redis clients of a store: the patient one for background work, the short-timeout one
of the request path and its circuit breaker, the translation of redis-py's errors, and
small helpers for replies and pipelines."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pybreaker
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.client import Pipeline
from redis.cluster import ClusterPipeline
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry

from ..errors import StoreError, StoreUnavailable

log = logging.getLogger("flask_asyncstate")


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
        if is_refusal(exc):  # an ACL user missing a right: say which, loudly
            log.error(
                "flask-asyncstate: Redis refused a command: %s (see 'flask asyncstate acl')", exc
            )
            raise StoreError(
                f"Redis refused the command for lack of an ACL permission: {exc}"
            ) from exc
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


def sentinel_client(sentinels: Any, master: str) -> redis.Redis:
    """The patient client of ``ASYNCSTATE_REDIS_SENTINELS``: the master, found by asking them."""
    from redis.sentinel import Sentinel

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


def request_client(client: redis.Redis, timeout: float) -> redis.Redis:
    """A copy of ``client`` (same server, credentials, TLS) whose calls wait at most ``timeout`` s.

    Falls back to ``client`` itself (with a warning) for a client that cannot be copied.
    """
    from redis.cluster import RedisCluster
    from redis.sentinel import SentinelConnectionPool

    if isinstance(client, RedisCluster):
        return _cluster_copy(client, timeout)
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):  # the same master, found the same way
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_BOUND}
        kwargs.update(_fast_options(timeout))
        kwargs["connection_class"] = pool.connection_class  # TLS stays TLS
        return pool.sentinel_manager.master_for(pool.service_name, **kwargs)  # type: ignore[no-any-return]
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


def _cluster_copy(client: Any, timeout: float) -> Any:
    """A RedisCluster on the same nodes with request-path timeouts (falls back to ``client``)."""
    from redis.cluster import ClusterNode, RedisCluster

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


class BreakerListener(pybreaker.CircuitBreakerListener):
    """Log each state change and hand it to ``owner.on_circuit_change`` (the extension's signal)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", str(old_state))
        new = getattr(new_state, "name", str(new_state))
        level = logging.INFO if new == "closed" else logging.WARNING
        log.log(level, "flask-asyncstate: Redis circuit %s -> %s", old, new)
        callback: Callable[[str, str], None] | None = self._owner.on_circuit_change
        if callback is not None:
            try:
                callback(old, new)
            except Exception:
                log.exception("flask-asyncstate: circuit change callback failed")


def is_refusal(exc: BaseException) -> bool:
    """An ACL refusal: NOPERM, or its wording inside a script (``can't publish to the channel``)."""
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return True
    text = str(exc)
    return isinstance(exc, redis.ResponseError) and (
        "NOPERM" in text
        or "no permissions" in text
        or "The user executing the script can't" in text
    )


def is_outage(exc: BaseException) -> bool:
    # A cluster with no reachable node raises RedisClusterException, not a RedisError.
    return isinstance(
        exc, (redis.ConnectionError, redis.TimeoutError, OSError, RedisClusterException)
    )


def text_of(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def chunks(keys: list[str], size: int = 1000) -> Iterator[list[str]]:
    """Pipelines of at most ``size`` commands, so a huge batch never builds one giant reply."""
    for i in range(0, len(keys), size):
        yield keys[i : i + size]


def glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class Scripts:
    """Runs the store's Lua scripts on any client: ``EVALSHA``, sending the script with
    ``EVAL`` where a node lacks it (new, restarted, promoted). In a plain pipeline the
    ``EVALSHA`` is queued as is and :meth:`execute` re-runs the ones a node answered
    ``NOSCRIPT``, so a pipeline costs one round trip (redis-py's registered scripts add a
    ``SCRIPT EXISTS`` before each). A Cluster pipeline cannot run scripts: the store runs
    them one by one there."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._sha: dict[str, str] = {}

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
            return client.eval(text, len(keys), *keys, *args)

    def execute(self, pipe: Any) -> list[Any]:
        """``pipe.execute()``, with the scripts a node did not know run again, one by one
        (``NOSCRIPT`` means the script did not run: running it again is safe)."""
        queued = pipe.__dict__.pop("_asyncstate_scripts", None)
        if not queued:
            return list(pipe.execute())
        results = list(pipe.execute(raise_on_error=False))
        failed = [q for q in queued if isinstance(results[q[0]], NoScriptError)]
        if failed:  # load each script once, then send those commands again in one pipeline
            for text in {text for _, text, _, _ in failed}:
                self._client.script_load(text)
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
