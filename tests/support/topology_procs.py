"""The other instance of the topology tests, in its own OS process: the same app on a client
built from a picklable description (a URL, cluster nodes, or sentinels)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_asyncstate import AsyncState
from support.apps import SECRET, define_jobs


def client_for(spec: dict[str, Any]) -> Any:
    """A redis-py client for ``spec``: ``{"url": ...}``, ``{"cluster": [(host, port)]}`` or
    ``{"sentinels": [(host, port)], "master": name}``."""
    if "cluster" in spec:
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in spec["cluster"]])
    if "sentinels" in spec:
        from redis.sentinel import Sentinel

        return Sentinel(spec["sentinels"], socket_timeout=1).master_for(spec["master"])
    import redis

    return redis.Redis.from_url(spec["url"])


def make_topology_app(spec: dict[str, Any], **config: Any) -> tuple[Flask, AsyncState]:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=SECRET,
        TESTING=True,
        ASYNCSTATE_KEY_PREFIX="topo:",
        ASYNCSTATE_FLUSH_INTERVAL=0.05,
        ASYNCSTATE_HEARTBEAT_INTERVAL=0.5,
    )
    app.config.update(config)
    if "url" in spec:
        app.config["ASYNCSTATE_REDIS_URL"] = spec["url"]
        return app, AsyncState(app)
    return app, AsyncState(app, redis=client_for(spec))


def run_job(spec: dict[str, Any], job_name: str, out: Any) -> None:
    """Instance A: start one job, report its token, then how it ended and whether its Event
    was set (by a cancel from the other process)."""
    app, ext = make_topology_app(spec)
    jobs = define_jobs(ext)
    with app.app_context():
        handle = jobs[job_name].start()
        out.put(("started", handle.token))
        ctx = ext.app_state().local_context(handle.id)
        assert ctx is not None
        ctx.done.wait(60)
        out.put(("event_set", ctx.cancelled.is_set()))
        out.put(("final", handle.status()))
    ext.shutdown()
