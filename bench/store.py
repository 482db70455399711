"""Per-operation cost of the typed state API on both backends, against bare redis-py.

What it measures: ``StateAPI.create`` / ``update`` / ``get`` of a small dataclass
(``ImportState(progress: int, message: str)``) through :class:`MemoryStore` and
:class:`RedisStore`, and, in the same run against the same server, a bare
redis-py client doing the minimal equivalent: ``SET`` (create), ``GET`` (get) and a
``WATCH``/``GET``/``MULTI``/``SET``/``EXEC`` transaction (update), with the same
JSON payload. Each figure is the median over ``--repeats`` runs of ``--ops``
operations, in microseconds per operation (``time.perf_counter``, garbage
collector paused while timing, as ``timeit`` does). Backends are interleaved
within every repeat so that machine drift hits all columns alike.

The bare column does no JSON (de)serialization and keeps no sliding expiry or
cancel flag, so ``redis / bare`` is the whole cost of the library on top of
the network round trips.

It starts its own throwaway ``redis-server`` on a free loopback port (never
6379) and stops it at the end. Needs ``redis-server`` on PATH and redis-py.

Run from the repository root::

    python bench/store.py                      # 5 repeats x 2000 ops
    python bench/store.py --ops 5000 --repeats 7
    python bench/store.py --quick              # smoke run: 3 x 200
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import redis
from _common import (  # also puts the checkout on sys.path: no install needed
    KEY_PREFIX,
    add_common_options,
    environment,
    fill_defaults,
    markdown_table,
    median,
    panel,
    redis_server,
    timed,
    write_json,
)

from flask_asyncstate import serialization
from flask_asyncstate.state import StateAPI
from flask_asyncstate.stores import MemoryStore
from flask_asyncstate.stores.redis import RedisStore, client_from_url

OPERATIONS = ("create", "update", "get")
COLUMNS = ("memory", "redis", "bare")
QUICK_OPS, QUICK_REPEATS = 200, 3
DEFAULT_OPS, DEFAULT_REPEATS = 2000, 5
QUICK = {"ops": QUICK_OPS, "repeats": QUICK_REPEATS}
DEFAULTS = {"ops": DEFAULT_OPS, "repeats": DEFAULT_REPEATS}

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


# -- operations ---------------------------------------------------------------


def state_ops(api: StateAPI, ops: int) -> dict[str, Op]:
    """create / update / get of ``ops`` named entries through the typed API."""
    names = [f"job-{i}" for i in range(ops)]
    return {
        "create": lambda i: api.create(initial_state(), name=names[i]),
        "update": lambda i: api.update(ImportState, bump, name=names[i]),
        "get": lambda i: api.get(ImportState, name=names[i]),
    }


def bare_ops(client: redis.Redis, ops: int) -> dict[str, Op]:
    """The minimal redis-py equivalent of each operation, same payload, no serialization."""
    keys = [f"bench:bare:{i}" for i in range(ops)]
    payload = serialization.dumps(serialization.to_document(initial_state()))

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


# -- timing -------------------------------------------------------------------


def time_batch(op: Op, ops: int) -> float:
    """Microseconds per call of ``op(0) .. op(ops - 1)`` (GC paused)."""

    def body() -> None:
        for i in range(ops):
            op(i)

    return timed(body) / ops * 1e6


def measure(
    suites: dict[str, dict[str, Op]], ops: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Median µs/op per column and operation; one warm-up batch first (scripts, sockets)."""
    samples: dict[str, dict[str, list[float]]] = {
        column: {op: [] for op in OPERATIONS} for column in suites
    }
    for suite in suites.values():
        for op in OPERATIONS:  # create before update/get: those need the entries
            time_batch(suite[op], min(ops, 200))
    for _ in range(repeats):
        for op in OPERATIONS:
            for column, suite in suites.items():
                samples[column][op].append(time_batch(suite[op], ops))
    return {
        column: {op: median(values) for op, values in by_op.items()}
        for column, by_op in samples.items()
    }


def check(api: StateAPI, ops: int) -> None:
    """The timed calls did real work: the last entry exists and was updated once since created."""
    got = api.get(ImportState, name=f"job-{ops - 1}")
    expected = initial_state()
    bump(expected)
    if got != expected:
        raise RuntimeError(f"benchmark sanity check failed: {got!r} != {expected!r}")


# -- output -------------------------------------------------------------------


def table(results: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per operation."""
    rows = []
    for op in OPERATIONS:
        memory, red, bare = (results[column][op] for column in COLUMNS)
        rows.append([op, f"{memory:.1f}", f"{red:.1f}", f"{bare:.1f}", f"{red / bare:.2f}x"])
    header = ["operation", "memory µs/op", "redis µs/op", "bare redis-py µs/op", "redis / bare"]
    return markdown_table(header, rows)


# -- driver -------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, help=f"operations per batch (default {DEFAULT_OPS})")
    parser.add_argument(
        "--repeats", type=int, help=f"batches per figure (default {DEFAULT_REPEATS})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_REPEATS} x {QUICK_OPS} unless --ops/--repeats say otherwise",
    )
    add_common_options(parser)
    args = fill_defaults(parser.parse_args(argv), DEFAULTS, QUICK)
    if args.ops < 1 or args.repeats < 1:
        parser.error("--ops and --repeats must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with redis_server(args.redis_url) as server:
        store_client = client_from_url(server.url)
        bare_client = client_from_url(server.url)  # same settings, its own connection pool
        memory = MemoryStore(key_prefix=KEY_PREFIX)
        red = RedisStore(store_client, key_prefix=KEY_PREFIX, sweep_interval=1.0)
        try:
            bare_client.flushdb()
            suites = {
                "memory": state_ops(StateAPI(memory), args.ops),
                "redis": state_ops(StateAPI(red), args.ops),
                "bare": bare_ops(bare_client, args.ops),
            }
            results = measure(suites, args.ops, args.repeats)
            check(StateAPI(memory), args.ops)
            check(StateAPI(red), args.ops)
            print(f"{args.repeats} repeats x {args.ops} ops, median; {environment(bare_client)}")
            print()
            print(table(results))
            write_json(
                args.json,
                {
                    "results": results,
                    "panels": [
                        panel(
                            "store.py: StateAPI on Redis / bare redis-py (µs per op)",
                            "x",
                            [(op, results["redis"][op] / results["bare"][op]) for op in OPERATIONS],
                            reference=1.0,
                        )
                    ],
                },
            )
        finally:
            memory.close()
            red.close()
            store_client.close()
            bare_client.close()


if __name__ == "__main__":
    main()
