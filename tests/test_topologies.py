"""The Redis topology helpers (tests/support/redis_topologies.py) work, checked with plain redis-py.

Each test prints one line with its timings; the suite lists them in its report.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator

import pytest
import redis
import redis.crc
from redis.backoff import NoBackoff
from redis.retry import Retry
from support.redis_topologies import AclRedis, RedisClusterServers, SentinelSet, TlsRedis

pytestmark = [pytest.mark.reliability, pytest.mark.topology]

# for clients that must fail: redis-py retries a refused connection 10 times by default
NO_RETRY = Retry(NoBackoff(), 0)


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[TlsRedis]:
    with TlsRedis() as server:
        yield server


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[AclRedis]:
    with AclRedis() as server:
        yield server


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[SentinelSet]:
    with SentinelSet() as topology:
        yield topology


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as cluster:
        yield cluster


def _ssl_error_in_chain(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def test_tls_verified_client_and_refused_without_ca(tls_redis: TlsRedis) -> None:
    began = time.monotonic()
    with redis.Redis.from_url(tls_redis.url) as client:
        assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == tls_redis.ca_path
        assert client.set("tls:a", "1")
        assert client.get("tls:a") == b"1"
    with tls_redis.client() as client:
        assert client.get("tls:a") == b"1"
    took = time.monotonic() - began

    # the system CAs do not know our throwaway CA: verification fails, nothing is sent
    no_ca_url = tls_redis.url.split("?")[0]
    with (
        redis.Redis.from_url(no_ca_url, retry=NO_RETRY) as stranger,
        pytest.raises(redis.ConnectionError) as info,
    ):
        stranger.ping()
    error = _ssl_error_in_chain(info.value)
    assert error is not None, info.value
    assert "certificate verify failed" in str(info.value)
    with (
        redis.Redis(port=tls_redis.port, retry=NO_RETRY) as plain,
        pytest.raises(redis.ConnectionError),
    ):
        plain.ping()  # a TLS-only server: no plain-text port
    print(
        f"TLS redis (CA + cert for IP:127.0.0.1) ready in {tls_redis.startup_seconds:.2f} s;"
        f" verified set/get {took * 1000:.0f} ms; without the CA: {type(error).__name__}"
    )


def test_acl_user_limited_to_a_key_pattern(acl_redis: AclRedis) -> None:
    acl_redis.add_user("limited", "s3cret", ["~test:*", "+@all"])
    with redis.Redis.from_url(acl_redis.url_for("limited", "s3cret")) as client:
        assert client.acl_whoami() in ("limited", b"limited")
        assert client.set("test:a", "1")
        assert client.get("test:a") == b"1"
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("other:a", "1")
    with acl_redis.admin() as admin:
        assert admin.get("other:a") is None
        assert admin.set("other:a", "admin")
    with (
        redis.Redis(port=acl_redis.port, retry=NO_RETRY) as anonymous,
        pytest.raises(redis.AuthenticationError),
    ):
        anonymous.ping()  # the default user is off
    with (
        redis.Redis.from_url(acl_redis.url_for("limited", "wrong"), retry=NO_RETRY) as impostor,
        pytest.raises(redis.AuthenticationError),
    ):
        impostor.ping()
    print(
        f"ACL redis ready in {acl_redis.startup_seconds:.2f} s; user limited to ~test:*"
        " writes test:a, gets NoPermissionError on other:a"
    )


def test_sentinel_failover_keeps_replicated_data(sentinel_set: SentinelSet) -> None:
    before = sentinel_set.master_address()
    with sentinel_set.client() as client:
        assert client.set("sentinel:before", "1")
        assert client.wait(1, 2000) == 1  # replicated before the switch
    began = time.monotonic()
    after = sentinel_set.failover()
    took = time.monotonic() - began
    assert after != before
    assert sentinel_set.master_address() == after
    with sentinel_set.client() as client:  # a fresh master_for finds the new master
        assert client.set("sentinel:after", "2")
        assert client.get("sentinel:before") == b"1"
        assert client.get("sentinel:after") == b"2"
        assert client.info("replication")["role"] == "master"
        assert client.connection_pool.get_master_address() == after
    print(
        f"sentinel set (master, replica, sentinel) ready in {sentinel_set.startup_seconds:.2f} s;"
        f" sentinel failover took {took:.1f} s ({before[1]} -> {after[1]})"
    )


def test_cluster_keys_across_slots(redis_cluster: RedisClusterServers) -> None:
    assert len(redis_cluster.startup_nodes) == 6
    with redis_cluster.client() as client:
        began = time.monotonic()
        keys = [f"test:{{kind:{n}}}" for n in range(100)]
        for n, key in enumerate(keys):
            assert client.set(key, str(n))
        assert [client.get(key) for key in keys] == [str(n).encode() for n in range(100)]
        took = time.monotonic() - began
    slots = {redis.crc.key_slot(key.encode()) for key in keys}
    primaries = {redis_cluster.primary_for_slot(slot) for slot in slots}
    assert len(primaries) == 3  # 100 tags spread over every primary
    # hash tags: only the text inside the first {...} decides the slot
    assert redis_cluster.keyslot("prefix{kind:name}") == redis.crc.key_slot(b"kind:name")
    assert redis_cluster.keyslot("other{kind:name}{x}") == redis.crc.key_slot(b"kind:name")
    print(
        f"cluster of 6 nodes ready in {redis_cluster.startup_seconds:.1f} s;"
        f" 100 keys over {len(slots)} slots set and read in {took * 1000:.0f} ms"
    )


def test_cluster_failover_key(redis_cluster: RedisClusterServers) -> None:
    key = "test:{kind:name}"
    old = redis_cluster.primary_for_key(key)
    replica = redis_cluster.replica_of(old)
    with redis_cluster.client() as client:
        assert client.set(key, "before")
        began = time.monotonic()
        new = redis_cluster.failover_key(key)
        took = time.monotonic() - began
        assert new == replica
        assert redis_cluster.primary_for_key(key) == new
        assert redis_cluster.replica_of(new) == old
        assert client.get(key) == b"before"  # the old client follows MOVED
        assert client.set(key, "after")
        assert client.get(key) == b"after"
    with redis_cluster.client() as fresh:
        assert fresh.get(key) == b"after"
    print(f"cluster failover took {took:.1f} s ({old[1]} -> {new[1]}, key {key})")
