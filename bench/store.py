"""Per-operation cost of the typed state API on both stores, against bare redis-py.

Measures ``StateAPI.create`` / ``update`` / ``get`` of a small dataclass
(``ImportState(progress: int, message: str)``) through ``MemoryStore`` and
``RedisStore``, against, in the same run on the same server, a bare redis-py
client doing the least equivalent with the same JSON payload: ``SET`` (create),
``GET`` (get) and a ``WATCH``/``GET``/``MULTI``/``SET``/``EXEC`` transaction
(update). The round trips match: create is one ``MULTI`` pipeline
(``DEL``+``HSET``+``PEXPIRE``) against one ``SET``, get one ``EVALSHA`` against
one ``GET``, update three on both sides. The bare column does no JSON
(de)serialisation and keeps no sliding expiry or cancel flag, so ``redis /
bare`` is the library's whole cost over the round trips.

Each figure is the median of ``--repeats`` batches of ``--ops`` operations, in
µs per operation (GC paused); the columns take turns within each repeat, after
a warm-up batch. Afterwards the last entry is checked to exist and to have been
updated.

Target: on Redis, each operation <= 2x bare redis-py (the ratio grows as the
loopback round trip shrinks: 1.28x at most in the full run at 561bfbf, 1.75x in
quick runs on an idle machine).

    python bench/store.py                  # 5 repeats x 2,000 ops (about 12 s)
    python bench/store.py --quick          # 3 x 200 (about 1 s)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import harness
import redis

TARGET = harness.Target("StateAPI on Redis / bare redis-py, each operation", "<=", 2.0, "x")
OPERATIONS = ("create", "update", "get")
COLUMNS = ("memory", "redis", "bare")
FULL = {"ops": 2000, "repeats": 5}
QUICK = {"ops": 200, "repeats": 3}
HELP = {"ops": "operations per batch", "repeats": "batches per figure"}

#: One benchmark body: runs operation ``i`` of a batch.
Op = Callable[[int], object]


@dataclass
class ImportState:
    progress: int = 0
    message: str = ""


def initial_state() -> ImportState:
    return ImportState(progress=0, message="importing customers.csv")


def bump(state: ImportState) -> None:
    state.progress += 1


def state_ops(api: harness.StateAPI, ops: int) -> dict[str, Op]:
    """create / update / get of ``ops`` named entries through the typed API."""
    names = [f"job-{i}" for i in range(ops)]
    return {
        "create": lambda i: api.create(initial_state(), name=names[i]),
        "update": lambda i: api.update(ImportState, bump, name=names[i]),
        "get": lambda i: api.get(ImportState, name=names[i]),
    }


def bare_ops(client: redis.Redis, ops: int) -> dict[str, Op]:
    """The least redis-py equivalent of each operation, same payload, no serialisation."""
    keys = [f"bench:bare:{i}" for i in range(ops)]
    doc = harness.serialization.to_document(initial_state())
    payload = harness.serialization.dumps(doc)

    def update(i: int) -> None:
        with client.pipeline() as pipe:
            pipe.watch(keys[i])
            pipe.get(keys[i])
            pipe.multi()
            pipe.set(keys[i], payload)
            pipe.execute()

    return {
        "create": lambda i: client.set(keys[i], payload),
        "update": update,
        "get": lambda i: client.get(keys[i]),
    }


def batch(op: Op) -> Callable[[int], float]:
    """µs per call of ``op(0) .. op(n - 1)``."""

    def run(n: int) -> float:
        def body() -> None:
            for i in range(n):
                op(i)

        return harness.timed(body) / n * 1e6

    return run


def check(api: harness.StateAPI, ops: int) -> None:
    """The timed calls did real work: the last entry exists and was updated since created."""
    got = api.get(ImportState, name=f"job-{ops - 1}")
    expected = initial_state()
    bump(expected)
    if got != expected:
        raise RuntimeError(f"benchmark sanity check failed: {got!r} != {expected!r}")


def main(argv: list[str] | None = None) -> None:
    found = harness.parser(__doc__, FULL, QUICK, HELP)
    args = harness.parse(found, argv, {"ops": (1, 1e6), "repeats": (1, 50)})
    report = harness.Report(__file__, args)
    with harness.redis_server(args.redis_url) as server:
        store_client = harness.client_from_url(server.url)
        bare_client = harness.client_from_url(server.url)  # same settings, its own pool
        memory = harness.MemoryStore(key_prefix=harness.KEY_PREFIX)
        red = harness.RedisStore(store_client, key_prefix=harness.KEY_PREFIX, sweep_interval=1.0)
        try:
            bare_client.flushdb()
            suites = {
                "memory": state_ops(harness.StateAPI(memory), args.ops),
                "redis": state_ops(harness.StateAPI(red), args.ops),
                "bare": bare_ops(bare_client, args.ops),
            }
            runs = {(col, op): batch(suites[col][op]) for op in OPERATIONS for col in COLUMNS}
            us = harness.in_turns(runs, args.ops, args.repeats)
            check(harness.StateAPI(memory), args.ops)
            check(harness.StateAPI(red), args.ops)
            env = harness.environment(bare_client)
        finally:
            memory.close()
            red.close()
            store_client.close()
            bare_client.close()
    ratio = {op: us["redis", op] / us["bare", op] for op in OPERATIONS}
    met = [report.check(TARGET, ratio[op], op) for op in OPERATIONS]
    report.out(env, f"{args.repeats} repeats x {args.ops:,} ops, median µs per operation.")
    report.table(
        ["operation", "memory µs/op", "redis µs/op", "bare redis-py µs/op", "redis / bare"],
        [
            [op, *(f"{us[col, op]:.1f}" for col in COLUMNS), f"{ratio[op]:.2f}x"]
            for op in OPERATIONS
        ],
    )
    report.summary(
        "typed state API on Redis: create / update / get",
        " / ".join(f"{us['redis', op]:.0f}" for op in OPERATIONS) + " µs",
        "bare redis-py "
        + " / ".join(f"{us['bare', op]:.0f}" for op in OPERATIONS)
        + " µs ("
        + " / ".join(f"{ratio[op]:.2f}x" for op in OPERATIONS)
        + ")",
        f"<= {TARGET.limit:g}x bare",
        all(met),
    )
    report.figures["us_per_op"] = {f"{col} {op}": v for (col, op), v in us.items()}
    report.panel(
        harness.panel(
            "store.py: StateAPI on Redis / bare redis-py (µs per op)",
            "x",
            [(op, ratio[op], TARGET.limit) for op in OPERATIONS],
            reference=1.0,
        )
    )
    report.finish()


if __name__ == "__main__":
    main()
