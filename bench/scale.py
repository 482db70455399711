"""Scale: Redis memory per live job entry, and a backlog of queued jobs on one instance.

What it measures, against one ``redis-server`` on loopback:

1. Memory. An app on Redis (``ASYNCSTATE_MAX_WORKERS = 4``) starts
   ``--entries`` trivial tracked jobs (each reports ``progress(1, total=1,
   message="1 of 1 rows")`` and returns ``{"rows": 1}``) and waits for them, so
   that many finished job entries are live in Redis (they expire after
   ``ASYNCSTATE_EXPIRES``, 900 s). Per entry: ``INFO memory``'s ``used_memory``
   after minus before, divided by the entries (keyspace overhead included), and
   the median ``MEMORY USAGE key SAMPLES 0`` over ``--sample`` keys; with the
   key's encoding. For scale, the same document as a plain string (``SET key
   doc EX 900``) under as many keys, measured the same way. Target: <= 1 KiB
   per entry.
2. Backlog. A fresh app on the same Redis with ``ASYNCSTATE_MAX_WORKERS = 4``
   starts ``--queued`` trivial jobs in a tight loop (so nearly all of them
   queue), then reads their documents back from Redis every 50 ms until every
   one has a final status (at most 120 s): how many ended how, how long the
   ``start()`` loop took and how long until the last one was final.

Also printed, from the memory part: how many cancel Events the app's store
still holds once every job has finished (0 expected), and what one pass of
its listener's once-a-second sweep over the held keys costs.

It starts its own redis-server on a free loopback port (never 6379) unless
given ``--redis-url``; everything it writes uses the prefix ``bench:``.

Run from the repository root::

    python bench/scale.py                  # 10,000 entries, 1,000 queued jobs (about 20 s)
    python bench/scale.py --quick          # 2,000 entries, 1,000 queued jobs (about 6 s)
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from typing import Any

import redis
from _common import (
    add_common_options,
    environment,
    fill_defaults,
    make_app,
    markdown_table,
    median,
    panel,
    redis_server,
    write_json,
)
from flask import Flask

from flask_asyncstate import AsyncState, JobContext
from flask_asyncstate.records import FINAL

WORKERS = 4
TARGET_BYTES = 1024
DEFAULT_ENTRIES, QUICK_ENTRIES = 10_000, 2_000
QUEUED = 1_000
SAMPLE = 200
#: Longest the benchmark waits for jobs to finish.
WAIT_LIMIT = 120.0


def trivial_app(redis_url: str, name: str) -> tuple[Flask, AsyncState, Any]:
    """An app on Redis with ``WORKERS`` job threads, and its trivial job."""
    app, ext = make_app(name, redis_url=redis_url, ASYNCSTATE_MAX_WORKERS=WORKERS)

    @ext.job(name="bench_trivial")
    def trivial(job: JobContext) -> dict[str, int]:
        job.progress(1, total=1, message="1 of 1 rows")
        return {"rows": 1}

    return app, ext, trivial


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def wait_final(
    ext: AsyncState, ids: list[str], limit: float
) -> tuple[list[dict[str, Any] | None], float]:
    """Poll the stored documents every 50 ms until all are final (or ``limit`` s): (docs, seconds)."""
    records = ext.app_state().records
    start = time.perf_counter()
    deadline = time.monotonic() + limit
    docs: list[dict[str, Any] | None] = []
    while time.monotonic() < deadline:
        docs = []
        for i in range(0, len(ids), 500):
            docs += records.statuses(ids[i : i + 500])
        if all(d is not None and d["status"] in FINAL for d in docs):
            break
        time.sleep(0.05)
    return docs, time.perf_counter() - start


def memory_part(redis_url: str, entries: int, sample: int, rng: random.Random) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    app, ext, trivial = trivial_app(redis_url, "bench-scale-memory")
    try:
        with app.app_context():
            trivial.start().wait(10)  # threads, listener, instance entry, scripts
            time.sleep(0.3)
            keys_before, before = client.dbsize(), used_memory(client)
            start = time.perf_counter()
            handles = [trivial.start() for _ in range(entries)]
            started = time.perf_counter() - start
            for handle in handles:
                handle.wait(WAIT_LIMIT)
            finished = time.perf_counter() - start
            time.sleep(0.3)  # the writer's last flush; nothing else should change
            keys_after, after = client.dbsize(), used_memory(client)
            records = ext.app_state().records
            keys = [records.job_key(h.id) for h in rng.sample(handles, min(sample, entries))]
            usage = [int(client.memory_usage(k, samples=0) or 0) for k in keys]
            encoding = client.object("encoding", keys[0])
            document = client.hget(keys[0], "d") or b""
            statuses = Counter(
                d["status"] if d else None for d in records.statuses([h.id for h in handles[:500]])
            )
            store = ext.app_state().store
            held = len(store.held_keys())
            sweep = time.perf_counter()
            store._sweep()  # type: ignore[attr-defined]  # what the listener does every second
            sweep = time.perf_counter() - sweep
    finally:
        ext.shutdown(2)
    # the same document as a plain string, under as many keys, for scale
    bare_before = used_memory(client)
    for i in range(0, entries, 1000):
        pipe = client.pipeline(transaction=False)
        for j in range(i, min(i + 1000, entries)):
            pipe.set(f"bench:bare:{j:06d}", document, ex=900)
        pipe.execute()
    bare_after = used_memory(client)
    bare_usage = [
        int(client.memory_usage(f"bench:bare:{rng.randrange(entries):06d}", samples=0) or 0)
        for _ in range(min(sample, entries))
    ]
    env = environment(client)
    client.close()
    return {
        "entries": entries,
        "new_keys": keys_after - keys_before,
        "delta_per_entry": (after - before) / entries,
        "memory_usage": median(usage),
        "encoding": encoding.decode() if isinstance(encoding, bytes) else str(encoding),
        "document_bytes": len(document),
        "bare_delta_per_entry": (bare_after - bare_before) / entries,
        "bare_memory_usage": median(bare_usage),
        "start_seconds": started,
        "finished_seconds": finished,
        "statuses": dict(statuses),
        "held_events": held,
        "sweep_ms": sweep * 1000,
        "env": env,
    }


def backlog_part(redis_url: str, queued: int) -> dict[str, Any]:
    app, ext, trivial = trivial_app(redis_url, "bench-scale-backlog")
    try:
        with app.app_context():
            trivial.start().wait(10)  # warm-up
            start = time.perf_counter()
            ids = [trivial.start().id for _ in range(queued)]
            started = time.perf_counter() - start
            docs, waited = wait_final(ext, ids, WAIT_LIMIT)
    finally:
        ext.shutdown(2)
    counts = Counter(d["status"] if d is not None else "missing" for d in docs)
    final = sum(n for status, n in counts.items() if status in FINAL)
    return {
        "queued": queued,
        "start_seconds": started,
        "all_final_seconds": started + waited,
        "counts": dict(counts),
        "final": final,
    }


def memory_table(m: dict[str, Any]) -> str:
    rows = [
        [
            "ours: job entry (hash: document, cancel flag, expiry)",
            f"{m['delta_per_entry']:,.0f}",
            f"{m['memory_usage']:,.0f}",
            m["encoding"],
            f"{m['delta_per_entry'] / TARGET_BYTES:.2f}",
        ],
        [
            "bare: the same document as a string (`SET key doc EX 900`)",
            f"{m['bare_delta_per_entry']:,.0f}",
            f"{m['bare_memory_usage']:,.0f}",
            "string",
            "-",
        ],
    ]
    header = [
        "entry",
        "bytes per entry (used_memory delta / entries)",
        "bytes per entry (MEMORY USAGE, median)",
        "encoding",
        "of the 1 KiB target",
    ]
    return markdown_table(header, rows)


def memory_caption(m: dict[str, Any], sample: int) -> str:
    worst = max(m["delta_per_entry"], m["memory_usage"])
    verdict = "met" if worst <= TARGET_BYTES else "NOT met"
    return (
        f"Redis memory per live job entry: {m['entries']:,} finished trivial jobs "
        f"({m['new_keys']:,} new keys; documents of {m['document_bytes']} bytes of JSON), "
        f"MEMORY USAGE over {min(sample, m['entries'])} random keys. Target: <= {TARGET_BYTES:,} "
        f"bytes; this run: {worst:,.0f} ({verdict}). Starting them took "
        f"{m['start_seconds']:.2f} s, all finished after {m['finished_seconds']:.2f} s."
    )


def backlog_table(b: dict[str, Any]) -> str:
    counts = ", ".join(f"{status} {n:,}" for status, n in sorted(b["counts"].items()))
    rows = [
        [
            f"{b['queued']:,}",
            str(WORKERS),
            f"{b['start_seconds']:.2f}",
            f"{b['all_final_seconds']:.2f}",
            f"{b['queued'] / b['all_final_seconds']:,.0f}",
            f"{b['final']:,} / {b['queued']:,}",
            counts,
        ]
    ]
    header = [
        "jobs queued",
        "workers",
        "start() loop s",
        "all final after s",
        "jobs/s",
        "final",
        "statuses (read back from Redis)",
    ]
    return markdown_table(header, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--entries",
        type=int,
        help=f"live entries measured (default {DEFAULT_ENTRIES:,}, quick {QUICK_ENTRIES:,})",
    )
    parser.add_argument("--queued", type=int, default=QUEUED, help=f"jobs queued ({QUEUED:,})")
    parser.add_argument(
        "--sample", type=int, default=SAMPLE, help=f"keys for MEMORY USAGE ({SAMPLE})"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the key sample")
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_ENTRIES:,} entries"
    )
    add_common_options(parser)
    args = fill_defaults(
        parser.parse_args(argv), {"entries": DEFAULT_ENTRIES}, {"entries": QUICK_ENTRIES}
    )
    if not (1 <= args.entries <= 100_000) or not (1 <= args.queued <= 20_000) or args.sample < 1:
        parser.error("--entries must be 1..100,000, --queued 1..20,000, --sample positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    with redis_server(args.redis_url) as server:
        client = redis.Redis.from_url(server.url)
        client.flushdb()  # a throwaway server: measure our keys alone
        client.close()
        m = memory_part(server.url, args.entries, args.sample, rng)
        b = backlog_part(server.url, args.queued)
    print(m["env"])
    print()
    print(memory_caption(m, args.sample))
    print()
    print(memory_table(m))
    print()
    verdict = "all reached a final status" if b["final"] == b["queued"] else "NOT all final"
    print(
        f"A backlog on one instance: {b['queued']:,} trivial jobs started in a tight loop with "
        f"ASYNCSTATE_MAX_WORKERS={WORKERS}, their documents polled from Redis every 50 ms until "
        f"final: {verdict}."
    )
    print()
    print(backlog_table(b))
    print()
    print(
        f"Check: once all {m['entries']:,} jobs had finished, the app's store held "
        f"{m['held_events']:,} cancel Events (0 expected: a finished job's Event is released), "
        f"and one pass of the listener's once-a-second sweep over the held keys (an HMGET per "
        f"key, pipelined) took {m['sweep_ms']:.1f} ms."
    )
    write_json(
        args.json,
        {
            "memory": {k: v for k, v in m.items() if k != "env"},
            "backlog": b,
            "panels": [
                panel(
                    f"scale.py: Redis bytes per live job entry ({m['entries']:,} entries)",
                    "bytes",
                    [
                        ("ours, used_memory delta", m["delta_per_entry"]),
                        ("ours, MEMORY USAGE", m["memory_usage"]),
                        ("bare SET of the document, used_memory delta", m["bare_delta_per_entry"]),
                    ],
                    target=TARGET_BYTES,
                    target_label="target 1 KiB",
                )
            ],
            "notes": [
                (
                    f"{b['final']:,}/{b['queued']:,} queued jobs final in "
                    f"{b['all_final_seconds']:.1f} s ({WORKERS} workers)"
                )
            ],
        },
    )


if __name__ == "__main__":
    main()
