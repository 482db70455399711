"""What only the Redis backend must show: separate processes, atomicity, outages, key layout."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
import redis
from support.procs import Counter, hold_event, increment, state_api
from support.redis_server import RedisServer, free_port

from flask_asyncstate.errors import StoreError, StoreUnavailable
from flask_asyncstate.state import StateAPI
from flask_asyncstate.stores.redis import RedisStore, client_from_url

spawn = multiprocessing.get_context("spawn")


def test_cancel_from_other_process_sets_event(redis_url: str) -> None:
    ready, result = spawn.Event(), spawn.Queue()
    holder = spawn.Process(target=hold_event, args=(redis_url, "job", ready, result, 10))
    holder.start()
    assert ready.wait(30)
    state = state_api(redis_url)
    assert state.cancel(Counter, name="job") is True
    assert result.get(timeout=15) is True
    holder.join(10)
    print("cross-process cancel: Event set in the holder process")


@pytest.mark.reliability  # processes, servers or a flood: the whole suite runs it
def test_updates_from_two_processes_are_atomic(redis_url: str) -> None:
    state = state_api(redis_url)
    state.create(Counter(), name="count")
    procs = [spawn.Process(target=increment, args=(redis_url, "count", 4, 2000)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert state.get(Counter, name="count") == Counter(16000)
    print("2 processes x 4 threads x 2,000 updates -> 16,000")


def test_cancel_while_listener_disconnected_is_not_lost(redis_url: str) -> None:
    state = state_api(redis_url)
    store = state.store
    assert isinstance(store, RedisStore)
    event = threading.Event()
    state.create(Counter(), name="gap", cancel_event=event)
    assert store.subscribed.wait(5)
    admin = redis.Redis.from_url(redis_url)
    admin.client_kill_filter(_type="pubsub")  # drop the listener's link, then cancel at once
    assert state_api(redis_url).cancel(Counter, name="gap") is True
    assert event.wait(5)
    store.close()


def test_keys_are_cluster_friendly(redis_url: str) -> None:
    state = state_api(redis_url)
    state.create(Counter(), name="x")
    keys = [k.decode() for k in redis.Redis.from_url(redis_url).keys("test:*")]
    assert keys == ["test:{support.procs.Counter:x}"]  # one key per entry, hash-tagged


def test_redis_down_raises_our_error() -> None:
    client = client_from_url(f"redis://127.0.0.1:{free_port()}/0")
    state = StateAPI(RedisStore(client))
    for call in (
        lambda: state.create(Counter()),
        lambda: state.get(Counter),
        lambda: state.update(Counter, lambda c: None),
        lambda: state.cancel(Counter),
        lambda: state.remove(Counter),
        lambda: state.get_all(Counter),
    ):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert isinstance(info.value.__cause__, redis.ConnectionError)


def test_redis_restart_listener_recovers() -> None:
    server = RedisServer().start()
    try:
        state = state_api(server.url)
        store = state.store
        assert isinstance(store, RedisStore)
        event = threading.Event()
        state.create(Counter(), name="r", cancel_event=event, never_expires=True)
        assert store.subscribed.wait(5)
        server.stop()
        with pytest.raises(StoreUnavailable):
            state.get(Counter, name="r")
        server.start()  # empty again: no persistence
        state.create(Counter(), name="r", cancel_event=event)
        assert store.subscribed.wait(10), "listener must resubscribe after a restart"
        assert state_api(server.url).cancel(Counter, name="r")
        assert event.wait(5)
        store.close()
    finally:
        server.stop()


def test_server_error_is_store_error(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).set("test:{support.procs.Counter:}", "a string, not a hash")
    with pytest.raises(StoreError) as info:
        state_api(redis_url).get(Counter)
    assert isinstance(info.value.__cause__, redis.RedisError)


def test_a_pipeline_of_scripts_is_one_round_trip_and_survives_a_script_flush(redis_url) -> None:
    """No SCRIPT EXISTS before each pipeline; a node that lost the scripts (a restart, a
    failover) answers NOSCRIPT and those commands run again, with the script sent along."""
    import hashlib

    import redis as redis_py

    from flask_asyncstate.stores.redis import _LUA, RedisStore

    sent: list[int] = []

    class Counting(redis_py.Connection):
        def send_packed_command(self, command, check_health=True):
            sent.append(1)
            return super().send_packed_command(command, check_health)

    client = redis_py.Redis.from_url(redis_url, connection_class=Counting)
    store = RedisStore(client, key_prefix="pipe:")
    try:
        keys = [store.key("doc", str(i)) for i in range(50)]
        for key in keys:
            store.create(key, {"n": 0})
        store.write_many([(k, {"n": 1}) for k in keys])  # the first time loads the script
        sent.clear()
        assert store.write_many([(k, {"n": 1}) for k in keys]) == [True] * 50
        assert len(sent) == 1  # one pipeline, one round trip, however many documents
        client.script_flush()
        sent.clear()
        assert store.write_many([(k, {"n": 2}) for k in keys]) == [True] * 50
        assert len(sent) == 3  # NOSCRIPT: load the scripts at once, send those 50 again at once
        assert all(e is not None and e.data == {"n": 2} for e in store.read_many(keys))
        sent.clear()
        store.write_many([(k, {"n": 3}) for k in keys])
        assert len(sent) == 1  # known again
        assert store.touch(keys + [store.key("doc", "gone")]) == [store.key("doc", "gone")]
        # A node lacking one script is sent all of them, whichever call finds out: it never
        # knows a later script of a pipeline (a start's claim) and not an earlier one (create).
        client.script_flush()
        store.create(store.key("doc", "lone"), {"n": 0})  # one script, run alone
        assert all(client.script_exists(*[hashlib.sha1(t.encode()).hexdigest() for t in _LUA]))
    finally:
        store.close()
        client.close()


# -- the ranked lists of the operator's page ----------------------------------------------------


def test_ranked_lists_are_hash_tagged_sorted_sets_that_never_expire_and_fit_the_acl(
    redis_url: str,
) -> None:
    """One key per list, tagged like every other (``{flask_asyncstate.index:jobs}``): one slot
    on a cluster, under the app's prefix, so ``flask asyncstate acl``'s rule covers it; and
    every command of the list operations is in that rule."""
    from flask_asyncstate.stores.redis import acl_rules

    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", "ranker", "on", ">pw", *acl_rules("acl:"))
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    client = redis.Redis(host=host, port=int(port), username="ranker", password="pw")
    store = RedisStore(client, key_prefix="acl:")
    try:
        key = store.key("flask_asyncstate.index", "jobs")
        assert key == "acl:{flask_asyncstate.index:jobs}"
        for i in range(5):
            store.rank(key, f"j{i}", float(i), keep=3, floor=0.5)
        assert store.ranked(key, 10) == ["j4", "j3", "j2"]
        store.unrank(key, ["j3"])
        assert store.ranked(key, 10) == ["j4", "j2"]
        assert admin.type(key) == b"zset" and admin.ttl(key) == -1  # bounded, not expiring
    finally:
        store.close()
        client.close()
        admin.execute_command("ACL", "DELUSER", "ranker")
        admin.close()


def test_the_admin_page_is_right_again_after_redis_lost_everything() -> None:
    """No counter to drift: after a restart without persistence the running job's entry and
    this instance's heartbeat are written again, each listed again as it is, and the page's
    counts, taken over the documents it reads, are right at once."""
    from support.apps import Gate, define_jobs, make_app
    from support.waiting import wait_until

    server = RedisServer().start()
    app, ext = make_app(server.url, admin_guard=lambda: None)
    gate = Gate()
    try:
        jobs = define_jobs(ext)
        with app.app_context():
            running = jobs["blocked"].start(gate.name)
            done = jobs["count"].start(1)
            assert done.wait(10)["status"] == "succeeded"
            wait_until(lambda: running.status()["status"] == "running", 10)
        web = app.test_client()
        before = web.get("/asyncstate/admin/jobs").json
        assert before["counts"] == {"running": 1, "succeeded": 1}
        server.stop()
        server.start()  # empty again: no persistence
        admin = redis.Redis.from_url(server.url)
        assert admin.dbsize() == 0

        def listed() -> dict:
            answer = web.get("/asyncstate/admin/jobs")
            return answer.json if answer.status_code == 200 and answer.json["jobs"] else {}

        after = wait_until(listed, 15, interval=0.1, message="the running job is listed again")
        assert [j["id"] for j in after["jobs"]] == [running.id]  # the finished one was lost
        assert after["counts"] == {"running": 1} and after["counted"] == 1
        wait_until(lambda: listed().get("instances"), 10, message="the instance is listed again")
        admin.close()
    finally:
        gate.set()
        ext.shutdown(2)
        server.stop()


def test_a_take_on_a_server_that_enforces_slots_leaves_the_index_in_a_call_of_its_own(
    redis_url: str,
) -> None:
    """A standalone client in front of a server that enforces hash slots (a one-node Redis
    Cluster here, as a proxy in front of shards would): the take's script over the document
    and the queue index is refused with CROSSSLOT, so the take runs alone and the index is
    left by a call of its own, then and from then on."""
    from support.waiting import wait_until

    version = redis.Redis.from_url(redis_url).info("server")["redis_version"]
    if tuple(int(p) for p in version.split(".")[:2]) < (7, 0):
        pytest.skip(f"CLUSTER ADDSLOTSRANGE and --cluster-port need redis-server 7.0 ({version})")
    bus = free_port()  # a bus port of its own: port + 10000 may not exist
    server = RedisServer(
        next(p for p in iter(free_port, None) if p != bus),
        extra=["--cluster-enabled", "yes", "--cluster-port", str(bus)],
    ).start()
    client = redis.Redis(port=server.port)
    store = RedisStore(client, key_prefix="slots:")
    try:
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_until(lambda: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"), 10)
        index = store.key("flask_asyncstate.q", "take")
        running = {"status": "running"}
        for name in ("one", "two"):
            key = store.key("j", name)
            assert store.claim(index, name, limit=10, keep=0, score=1.0)
            store.create(key, {"status": "queued"})
            assert store.update(
                key, lambda d: dict(running), expect={"status": "queued"}, forget=(index, name)
            )
            assert store.read(key).data == running
        assert store.claims(index).active == set()  # both left it: the first after a refusal
        assert store._cross_slot is False
    finally:
        store.close()
        client.close()
        server.stop()


def test_a_cancel_flag_read_for_one_hold_never_reaches_the_next() -> None:
    """The listener's sweep reads the flags of the keys held when it starts; a flag read for
    a run that ended (a cancelled job) must not cancel the run that holds the key by the
    time the answer comes ("Try again" runs the same job id at once)."""
    from flask_asyncstate.stores.base import CancelEvents

    events = CancelEvents()
    last_run, next_run = threading.Event(), threading.Event()
    events.hold("job", last_run)
    read_for = events.generation("job")  # the sweep's snapshot
    events.release("job")
    events.hold("job", next_run)  # "Try again" holds it anew before the sweep answers
    events.deliver("job", read_for)
    assert not next_run.is_set() and not last_run.is_set()
    events.deliver("job", events.generation("job"))  # a flag read for this run reaches it
    assert next_run.is_set()
