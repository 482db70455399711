"""Jobs on production Redis topologies, real servers: a 3-primary cluster with replicas,
Sentinel failover, a TLS-only server, a least-privilege ACL user."""

from __future__ import annotations

import logging
import multiprocessing
import time
from typing import Any

import pytest
from support.apps import define_jobs
from support.redis_topologies import AclRedis, RedisClusterServers, SentinelSet, TlsRedis
from support.topology_procs import make_topology_app, run_job
from support.waiting import wait_until

from flask_asyncstate import StoreError
from flask_asyncstate.stores.redis import acl_rules

pytestmark = [pytest.mark.reliability, pytest.mark.topology]

spawn = multiprocessing.get_context("spawn")


def _cross_process_cancel(spec: dict[str, Any]) -> str:
    """Instance A (another process) runs a job; B here polls it and cancels it."""
    out = spawn.Queue()
    proc = spawn.Process(target=run_job, args=(spec, "until_cancelled", out), daemon=True)
    proc.start()
    try:
        kind, token = out.get(timeout=60)
        assert kind == "started"
        app, ext = make_topology_app(spec)
        with app.app_context():
            wait_until(lambda: (ext.status(token) or {}).get("current", 0) >= 3, 15, interval=0.05)
            seen = ext.status(token)["current"]
            asked = time.monotonic()
            assert ext.cancel(token) is True
            assert out.get(timeout=20) == ("event_set", True)
            took = time.monotonic() - asked
            kind, final = out.get(timeout=20)
            assert final["status"] == "cancelled"
        ext.shutdown(2)
        proc.join(20)
        return f"B saw progress {seen}, its cancel reached A's job in {1000 * took:.0f} ms"
    finally:
        if proc.is_alive():
            proc.kill()


def _failover_mid_job(spec: dict[str, Any], failover: Any) -> str:
    """A running job survives a failover: it finishes, its final document is there, progress
    resumes, and a cancel afterwards still reaches a running job."""
    app, ext = make_topology_app(spec)
    jobs = define_jobs(ext)
    with app.app_context():
        handle = jobs["count"].start(120, 0.05)  # about 6 s
        wait_until(lambda: (handle.status() or {}).get("current", 0) >= 5, 15, interval=0.05)
        began = time.monotonic()
        failover(ext.app_state().records.job_key(handle.id))
        switched = time.monotonic() - began
        # a write made while the sentinel still named the old master is lost with it (even
        # the document, if the replica lagged): the job's next flush recreates it. A slow
        # failover may outlast the job: then its final document shows the writes resumed.
        before = (handle.status() or {}).get("current", 0)

        def resumed_writes() -> bool:
            doc = handle.status() or {}
            return doc.get("current", 0) > before or doc.get("status") == "succeeded"

        wait_until(resumed_writes, 10, interval=0.05)
        resumed = time.monotonic() - began
        doc = handle.wait(30)
        assert (doc["status"], doc["result"]) == ("succeeded", {"rows": 120}), doc
        later = jobs["until_cancelled"].start()
        wait_until(lambda: later.status()["status"] == "running", 10, interval=0.05)
        ctx = ext.app_state().local_context(later.id)
        other_app, other = make_topology_app(spec)  # another instance: its own clients
        with other_app.app_context():
            assert other.app_state().cancel_job(later.id) is True  # A's listener must hear it
        assert ctx is not None and ctx.cancelled.wait(5)
        assert later.wait(10)["status"] == "cancelled"
        other.shutdown(2)
    ext.shutdown(2)
    return f"failover took {switched:.1f} s; progress resumed {resumed:.1f} s after it began"


# -- Redis Cluster -----------------------------------------------------------------


def test_cluster_jobs_across_processes(cluster: RedisClusterServers) -> None:
    print("cluster:", _cross_process_cancel({"cluster": cluster.startup_nodes}))


def test_cluster_listings_cover_every_primary(cluster: RedisClusterServers) -> None:
    app, ext = make_topology_app({"cluster": cluster.startup_nodes}, ASYNCSTATE_KEY_PREFIX="ls:")
    jobs = define_jobs(ext)
    with app.test_request_context():
        handles = [jobs["count"].start(1) for _ in range(5)]  # ids spread over the slots
        for h in handles:
            h.wait(10)
        primaries = {
            cluster.primary_for_key(ext.app_state().records.job_key(h.id)) for h in handles
        }
        listed = {j["id"] for j in ext.app_state().records.all_jobs()}
        assert listed == {h.id for h in handles}
        assert {j["id"] for j in ext.jobs()} == {h.id for h in handles}
    output = app.test_cli_runner().invoke(args=["asyncstate", "list"]).output
    assert all(h.id in output for h in handles)
    ext.shutdown(2)
    print(
        f"cluster: 5 jobs on {len(primaries)} primaries, all listed by get_all, /jobs and the CLI"
    )


def test_cluster_failover_mid_job(cluster: RedisClusterServers) -> None:
    print("cluster:", _failover_mid_job({"cluster": cluster.startup_nodes}, cluster.failover_key))


# -- Sentinel ------------------------------------------------------------------------


def test_sentinel_failover_mid_job(sentinels: SentinelSet) -> None:
    spec = {"sentinels": sentinels.sentinels, "master": sentinels.master_name}
    print("sentinel:", _failover_mid_job(spec, lambda key: sentinels.failover()))


def test_sentinel_from_configuration_alone(sentinels: SentinelSet) -> None:
    from flask import Flask

    from flask_asyncstate import AsyncState

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="s",
        ASYNCSTATE_KEY_PREFIX="cfg:",
        ASYNCSTATE_REDIS_SENTINELS=[f"{h}:{p}" for h, p in sentinels.sentinels],
        ASYNCSTATE_REDIS_SENTINEL_MASTER=sentinels.master_name,
    )
    ext = AsyncState(app)
    jobs = define_jobs(ext)
    with app.app_context():
        assert jobs["count"].start(3).wait(10)["status"] == "succeeded"
    ext.shutdown(2)


# -- TLS ------------------------------------------------------------------------------


def test_tls_only_server_lifecycle_and_cross_process_cancel(tls: TlsRedis) -> None:
    app, ext = make_topology_app({"url": tls.url})
    jobs = define_jobs(ext)
    with app.app_context():
        assert jobs["count"].start(5).wait(10)["result"] == {"rows": 5}
    ext.shutdown(2)
    print("tls:", _cross_process_cancel({"url": tls.url}))


# -- ACL ------------------------------------------------------------------------------


def test_acl_user_runs_the_lifecycle_and_a_missing_permission_is_named(caplog: Any) -> None:
    with AclRedis() as server:
        server.add_user("jobs", "pw1", ["on", *acl_rules("topo:")])
        spec = {"url": server.url_for("jobs", "pw1")}
        message = _cross_process_cancel(spec)
        app, ext = make_topology_app(spec)
        jobs = define_jobs(ext)
        with app.test_request_context():
            handle = jobs["count"].start(3)
            assert handle.wait(10)["status"] == "succeeded"
            assert [j["id"] for j in ext.jobs()] == [handle.id]
            assert app.test_cli_runner().invoke(args=["asyncstate", "list"]).exit_code == 0
        ext.shutdown(2)

        # The cancel channel left out: starting works, the first cancel is refused, loudly.
        rules = [r for r in acl_rules("topo:") if r != "&topo:cancel"]
        server.add_user("nocancel", "pw2", ["on", *rules])
        app, ext = make_topology_app({"url": server.url_for("nocancel", "pw2")})
        jobs = define_jobs(ext)
        caplog.set_level(logging.ERROR, logger="flask_asyncstate")
        with app.app_context():
            running = jobs["until_cancelled"].start()
            with pytest.raises(StoreError, match="lack of an ACL permission") as refused:
                running.cancel()
            assert "topo:cancel" in str(refused.value) or "channel" in str(refused.value)
        assert any("Redis refused" in r.getMessage() for r in caplog.records)
        ext.app_state().local_context(running.id).cancelled.set()  # end it for shutdown
        ext.shutdown(2)
    print(
        f"acl: least-privilege user ran the lifecycle; {message}; a missing channel right was named"
    )


def test_flask_session_does_not_take_a_cluster_client(cluster: RedisClusterServers) -> None:
    """Flask-Session's Redis backend accepts only a ``redis.Redis`` (a Sentinel ``master_for``
    client is one): given a RedisCluster it warns and falls back to localhost. Sessions then
    belong on a plain Redis or Sentinel beside the cluster (docs/deployment.rst says so)."""
    from flask_session import Session

    app, ext = make_topology_app({"cluster": cluster.startup_nodes})
    app.config.update(SESSION_TYPE="redis", SESSION_REDIS=cluster.client())
    with pytest.warns(RuntimeWarning, match="No valid Redis instance provided"):
        Session(app)
    ext.shutdown(2)
    print("cluster: Flask-Session's redis backend refuses a RedisCluster client (falls back)")


def test_acl_user_on_the_cluster(cluster: RedisClusterServers) -> None:
    """The printed rule is enough for redis-py's cluster client too (slot map, command table)."""
    from redis.cluster import ClusterNode, RedisCluster

    for address in cluster.startup_nodes:
        cluster.node_client(address).execute_command(
            "ACL", "SETUSER", "clusterjobs", "reset", "on", ">pw3", *acl_rules("topo:")
        )
    nodes = [ClusterNode(h, p) for h, p in cluster.startup_nodes]
    client = RedisCluster(startup_nodes=nodes, username="clusterjobs", password="pw3")
    from flask import Flask
    from support.apps import SECRET

    from flask_asyncstate import AsyncState

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=SECRET, ASYNCSTATE_KEY_PREFIX="topo:", ASYNCSTATE_FLUSH_INTERVAL=0.05
    )
    ext = AsyncState(app, redis=client)
    jobs = define_jobs(ext)
    with app.test_request_context():
        assert jobs["count"].start(3).wait(10)["status"] == "succeeded"
        running = jobs["until_cancelled"].start()
        wait_until(lambda: running.status()["status"] == "running", 10)
        assert running.cancel() is True
        assert running.wait(10)["status"] == "cancelled"
        assert [j["id"] for j in ext.app_state().records.all_jobs()]
    ext.shutdown(2)
    print("cluster: the least-privilege ACL user ran and cancelled jobs on every primary")
