"""The state API contract: every test runs against MemoryStore, a real RedisStore and a
RedisStore on a Redis Cluster (that one marked reliability and topology: conftest's STORES)."""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass, field

import pytest
from support.stores import STORES
from support.waiting import wait_until

from flask_asyncstate.errors import StateTooLarge, UnserializableState
from flask_asyncstate.state import StateAPI
from flask_asyncstate.stores import Store

pytestmark = pytest.mark.parametrize("store", STORES, indirect=True)


@dataclass
class ImportState:
    progress: int = 0
    message: str = ""
    rows: list = field(default_factory=list)


@dataclass
class Inner:
    a: int = 0


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    tags: dict = field(default_factory=dict)


class Hooked:
    def __init__(self, when: datetime.date) -> None:
        self.when = when

    def to_dict(self) -> dict:
        return {"when": self.when.isoformat()}

    @classmethod
    def from_dict(cls, data: dict) -> Hooked:
        return cls(datetime.date.fromisoformat(data["when"]))


@pytest.fixture
def state(store: Store) -> StateAPI:
    return StateAPI(store)


def test_dataclass_round_trips_exactly(state: StateAPI) -> None:
    original = ImportState(3, "héllo ✓", [1, 2.5, None, True, {"k": ["x"]}])
    state.create(original, name="import")
    assert state.get(ImportState, name="import") == original


def test_nested_dataclass_dict_and_hooks_round_trip(state: StateAPI) -> None:
    state.create(Outer(Inner(7), {"a": 1}))
    assert state.get(Outer) == Outer(Inner(7), {"a": 1})
    state.create({"plain": [1, 2]}, name="d")
    assert state.get(dict, name="d") == {"plain": [1, 2]}
    state.create(Hooked(datetime.date(2026, 11, 23)))
    assert state.get(Hooked).when == datetime.date(2026, 11, 23)


def test_unknown_entry_answers_none_false(state: StateAPI) -> None:
    assert state.get(ImportState, name="nope") is None
    assert state.contains(ImportState, name="nope") is False
    assert state.cancel(ImportState, name="nope") is False
    assert state.update(ImportState, lambda s: None, name="nope") is False
    assert state.remove(ImportState, name="nope") is False
    assert state.get(ImportState, name="nope") is None  # update did not create it


def test_type_and_name_make_the_key(state: StateAPI) -> None:
    state.create(ImportState(1), name="a")
    state.create(ImportState(2), name="b")
    state.create(ImportState(3))
    state.create({"progress": 4}, name="a")
    assert state.get(ImportState, name="a").progress == 1
    assert state.get(ImportState, name="b").progress == 2
    assert state.get(ImportState).progress == 3
    assert state.get(dict, name="a") == {"progress": 4}
    assert sorted(s.progress for s in state.get_all(ImportState)) == [1, 2, 3]


def test_update_mutates_or_replaces(state: StateAPI) -> None:
    state.create(ImportState(), name="i")
    assert state.update(ImportState, lambda s: setattr(s, "progress", 50), name="i") is True
    assert state.get(ImportState, name="i").progress == 50
    assert state.update(ImportState, lambda s: ImportState(99, "new"), name="i") is True
    assert state.get(ImportState, name="i") == ImportState(99, "new")


@pytest.mark.parametrize(
    "value, path",
    [
        ({1, 2}, "rows"),
        ((1, 2), "rows"),
        (datetime.datetime(2026, 1, 1), "rows"),
        (object(), "rows"),
        ([1, {"deep": {3}}], "rows[1].deep"),
        ([float("nan")], "rows[0]"),
        ({1: "int key"}, "rows[1]"),
    ],
)
def test_create_refuses_what_cannot_round_trip(state: StateAPI, value: object, path: str) -> None:
    with pytest.raises(TypeError) as info:
        state.create(ImportState(rows=value), name="bad")  # type: ignore[arg-type]
    assert isinstance(info.value, UnserializableState)
    assert info.value.path == path
    assert repr(path) in str(info.value)
    assert state.get(ImportState, name="bad") is None


def test_update_refuses_unserialisable_and_keeps_old_value(state: StateAPI) -> None:
    state.create(ImportState(5), name="i")
    with pytest.raises(TypeError, match="'message'"):
        state.update(ImportState, lambda s: setattr(s, "message", {1}), name="i")
    assert state.get(ImportState, name="i") == ImportState(5)


def test_oversized_entry_is_refused(store: Store, state: StateAPI) -> None:
    store.max_entry_size = 1000
    state.create(ImportState(message="x" * 900), name="ok")
    with pytest.raises(StateTooLarge, match="max_entry_size"):
        state.create(ImportState(message="x" * 2000), name="big")
    assert state.get(ImportState, name="big") is None
    with pytest.raises(ValueError):
        state.update(ImportState, lambda s: setattr(s, "message", "y" * 2000), name="ok")
    assert state.get(ImportState, name="ok").message == "x" * 900


def test_non_state_objects_are_refused(state: StateAPI) -> None:
    with pytest.raises(TypeError, match="dataclass"):
        state.create(object())
    with pytest.raises(TypeError, match="pass the class"):
        state.get(ImportState(), name="x")  # type: ignore[arg-type]


def test_cancel_sets_event_and_survives_state_writes(state: StateAPI) -> None:
    event = threading.Event()
    state.create(ImportState(), name="c", cancel_event=event)
    assert not state.is_cancelled(ImportState, name="c")
    assert state.cancel(ImportState, name="c") is True
    assert event.wait(2)
    state.update(ImportState, lambda s: setattr(s, "progress", 10), name="c")
    assert state.is_cancelled(ImportState, name="c")
    assert state.get(ImportState, name="c").progress == 10


def test_create_replaces_and_clears_cancel(state: StateAPI) -> None:
    state.create(ImportState(1), name="r")
    state.cancel(ImportState, name="r")
    state.create(ImportState(2), name="r")
    assert state.get(ImportState, name="r") == ImportState(2)
    assert not state.is_cancelled(ImportState, name="r")


def test_remove_releases_local_event(store: Store, state: StateAPI) -> None:
    event = threading.Event()
    state.create(ImportState(), name="x", cancel_event=event)
    assert store.held_keys()
    assert state.remove(ImportState, name="x") is True
    assert store.held_keys() == []
    assert state.cancel(ImportState, name="x") is False
    assert not event.is_set()


def test_concurrent_updates_lose_nothing(state: StateAPI) -> None:
    state.create(ImportState(), name="n")

    def work() -> None:
        for _ in range(300):
            state.update(ImportState, lambda s: setattr(s, "progress", s.progress + 1), name="n")

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.get(ImportState, name="n").progress == 1800


def test_sliding_expiry(store: Store, state: StateAPI) -> None:
    store.expires = 1
    event = threading.Event()
    state.create(ImportState(1), name="idle", cancel_event=event)
    state.create(ImportState(2), name="busy")
    state.create(ImportState(3), name="forever", never_expires=True)
    for _ in range(5):  # 2.5 s: "busy" is read every 0.5 s, "idle" never (the silence under test)
        time.sleep(0.5)
        assert state.get(ImportState, name="busy") == ImportState(2)
    assert state.contains(ImportState, name="idle") is False
    assert state.get(ImportState, name="idle") is None
    assert state.get(ImportState, name="forever") == ImportState(3)

    def released() -> bool:
        state.contains(ImportState, name="busy")  # any operation lets the memory store sweep
        return store.held_keys() == []

    wait_until(released, 3, interval=0.1, message="expiry must release the local Event")


def test_contains_does_not_refresh_expiry(store: Store, state: StateAPI) -> None:
    store.expires = 1
    state.create(ImportState(), name="peek")
    for _ in range(4):  # 1.6 s of peeks and no read: longer than the expiry
        time.sleep(0.4)
        state.contains(ImportState, name="peek")
    assert state.contains(ImportState, name="peek") is False


def test_release_decided_on_an_old_read_keeps_a_newer_hold(store: Store) -> None:
    first, second = threading.Event(), threading.Event()
    key = store.key("kind", "x")
    store.create(key, {}, cancel_event=first)
    old = store.events.generation(key)
    store.create(key, {}, cancel_event=second)  # re-created meanwhile (a Redis restart)
    store.events.release(key, old)
    assert store.held_keys() == [key]
    store.cancel(key)
    assert second.wait(2)


# -- ranked lists: bounded, ordered, what the operator's page reads instead of a scan ------------


def test_a_ranked_list_keeps_the_highest_scores_newest_first(store: Store) -> None:
    key = store.key("flask_asyncstate.index", "contract")
    assert store.ranks is True
    assert store.ranked(key, 10) == []  # none yet
    for i in range(12):
        store.rank(key, f"m{i:02}", 100.0 + i, keep=5)
    assert store.ranked(key, 10) == ["m11", "m10", "m09", "m08", "m07"]  # the 5 highest
    assert store.ranked(key, 2) == ["m11", "m10"]
    assert store.ranked(key, 0) == []
    store.rank(key, "m03", 200.0, keep=5)  # an old member comes back: moved to its new score
    assert store.ranked(key, 10) == ["m03", "m11", "m10", "m09", "m08"]
    store.rank(key, "m11", 50.0, keep=5)  # moved below the others (m07 dropped off before)
    assert store.ranked(key, 10) == ["m03", "m10", "m09", "m08", "m11"]
    store.rank(key, "m12", 112.0, keep=5)  # one too many: the lowest goes
    assert store.ranked(key, 10) == ["m03", "m12", "m10", "m09", "m08"]
    store.unrank(key, ["m10", "never-listed"])
    store.unrank(key, [])
    assert store.ranked(key, 10) == ["m03", "m12", "m09", "m08"]
    store.rank(key, "a", 5.0, keep=3, floor=109.0)  # the floor drops the low ones, "a" too
    assert store.ranked(key, 10) == ["m03", "m12", "m09"]


def test_ranked_ties_order_alike_and_lists_are_apart(store: Store) -> None:
    one, two = (
        store.key("flask_asyncstate.index", "one"),
        store.key("flask_asyncstate.index", "two"),
    )
    for member in ("b", "a", "c"):
        store.rank(one, member, 1.0, keep=2)  # ties: the greater member ranks higher
    store.rank(two, "z", 1.0, keep=2)
    assert store.ranked(one, 10) == ["c", "b"]
    assert store.ranked(two, 10) == ["z"]
    store.unrank(two, ["z"])
    assert store.ranked(two, 10) == [] and store.ranked(one, 10) == ["c", "b"]


def test_ranked_lists_never_expire(store: Store) -> None:
    store.expires = 1
    store.index_expires = 1
    key = store.key("flask_asyncstate.index", "kept")
    store.rank(key, "x", 1.0, keep=3)
    time.sleep(1.3)  # longer than any expiry of the store: the silence under test
    assert store.ranked(key, 3) == ["x"]


def test_concurrent_ranks_keep_the_bound(store: Store) -> None:
    key = store.key("flask_asyncstate.index", "busy")

    def add(start: int) -> None:
        for i in range(start, start + 50):
            store.rank(key, f"m{i:04}", float(i), keep=20)

    threads = [threading.Thread(target=add, args=(n * 50,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.ranked(key, 100) == [f"m{i:04}" for i in range(299, 279, -1)]


def test_create_with_claims_and_ranks_answers_each_claim_and_tries_every_step(
    store: Store,
) -> None:
    """A start's document, its places and listings (one round trip on Redis)."""
    owner, queue = store.key("flask_asyncstate.owner", "o"), store.key("flask_asyncstate.q", "")
    listed = store.key("flask_asyncstate.index", "newest")
    assert store.claim(owner, "old", limit=1, keep=5, score=1.0)  # the owner's one slot is taken
    taken = store.create(
        store.key("j", "new"),
        {"n": 1},
        member="new",
        claims=[(owner, 1, 5), (queue, 3, 0)],
        ranks=[(listed, 10.0, 2)],
    )
    assert taken == [False, True]  # refused by the owner's index, and the queue still claimed
    assert store.read(store.key("j", "new")).data == {"n": 1}
    assert store.claims(queue).active == {"new"} and store.claims(owner).active == {"old"}
    assert store.ranked(listed, 5) == ["new"]
    for name, score in (("b", 11.0), ("c", 12.0)):  # the listing keeps its bound
        store.create(store.key("j", name), {}, member=name, ranks=[(listed, score, 2)])
    assert store.ranked(listed, 5) == ["c", "b"]
    assert store.create(store.key("j", "plain"), {}) == []  # no claims: nothing to answer


def test_update_from_an_expected_document_and_leaving_an_index(store: Store) -> None:
    """A worker's take: the queued document from its payload, the queue index left at once."""
    key, index = store.key("j", "take"), store.key("flask_asyncstate.q", "take")
    store.create(key, {"status": "queued", "n": 0})
    for member in ("take", "other"):
        assert store.claim(index, member, limit=10, keep=0, score=1.0)
    seen: list[dict] = []

    def run(doc: dict) -> dict:
        seen.append(dict(doc))
        return {**doc, "status": "running"}

    stored = {"status": "queued", "n": 0}
    assert store.update(key, run, expect=stored, forget=(index, "take"))
    assert seen == [stored] and store.read(key).data == {"status": "running", "n": 0}
    assert store.claims(index).active == {"other"}
    seen.clear()  # an expectation the store no longer holds: fn sees what is stored
    assert store.update(key, run, expect=stored, forget=(index, "other"))
    assert seen[-1] == {"status": "running", "n": 0} and store.claims(index).active == set()
    gone = store.key("j", "gone")
    assert store.claim(index, "gone", limit=10, keep=0, score=1.0)
    assert not store.update(gone, run, expect=stored, forget=(index, "gone"))  # no entry
    assert store.claims(index).active == set()  # and the index is left all the same


# -- counters: a parent job's children, one atomic step per change ---------------------------


def test_counters_add_atomically_and_read_in_one_step(store: Store) -> None:
    import threading

    assert store.tallies([]) == []
    assert store.tallies(["test:none"]) == [{}]
    store.tally("test:c1", {"total": 2, "running": 1})
    store.tally("test:c1", {"running": -1, "succeeded": 1})
    store.tally("test:c2", {})  # nothing to add: nothing written

    def many() -> None:
        for _ in range(100):
            store.tally("test:c3", {"running": 1, "total": 1})
            store.tally("test:c3", {"running": -1, "failed": 1})

    threads = [threading.Thread(target=many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    one, two, three = store.tallies(["test:c1", "test:c2", "test:c3"])
    assert one == {"total": 2, "running": 0, "succeeded": 1}
    assert two == {}
    assert three == {"running": 0, "total": 400, "failed": 400}


def test_counters_expire_like_an_index(store: Store) -> None:
    import time

    store.index_expires = 0.3
    store.tally("test:short", {"total": 1})
    assert store.tallies(["test:short"]) == [{"total": 1}]
    time.sleep(0.5)
    assert store.tallies(["test:short"]) == [{}]
