"""Scale: Redis memory per live job entry, and a backlog of queued jobs on one instance.

Against one redis-server on loopback:

1. Memory. An app on Redis (``ASYNCSTATE_MAX_WORKERS = 4``) starts ``--entries``
   trivial jobs (each ``progress(1, total=1, message="1 of 1 rows")``, returning
   ``{"rows": 1}``) and waits for them, so that many finished entries are live
   (for ``ASYNCSTATE_EXPIRES``, 900 s). Per entry: ``INFO memory``'s
   ``used_memory`` after minus before, divided by the entries (keyspace overhead
   included), and the median ``MEMORY USAGE key SAMPLES 0`` over ``--sample``
   keys, with the key's encoding. Against: the same JSON document as a plain
   string (``SET key doc EX 900``) under as many keys. An entry is a hash (``d``
   document, ``x`` expiry, ``c`` cancel flag once set); the document is longer
   than ``hash-max-listpack-value`` (64 bytes), so Redis keeps a hashtable rather
   than a listpack, most of the difference from the string.
2. Backlog. A fresh app (4 workers) starts ``--queued`` trivial jobs in a tight
   loop, then reads their documents from Redis every 50 ms until all are final
   (at most 120 s), and counts them by status.

Also: the cancel Events the store holds once every job has finished (0
expected) and what one pass of the listener's once-a-second sweep costs.

Targets: <= 1 KiB per entry; every queued job final; no Event held.

    python bench/scale.py                # 10,000 entries, 1,000 queued (about 12 s)
    python bench/scale.py --quick        # 2,000 entries, 1,000 queued (about 4 s)
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import harness
import redis

TARGETS = (
    harness.Target("Redis bytes per live job entry", "<=", 1024, " bytes"),
    harness.Target("queued jobs not final after 120 s", "<=", 0),
    harness.Target("cancel Events held once every job finished", "<=", 0),
)
WORKERS = 4
FULL = {"entries": 10_000, "queued": 1_000, "sample": 200}
QUICK = {**FULL, "entries": 2_000}
HELP = {
    "entries": "live entries measured",
    "queued": "jobs queued",
    "sample": "keys for MEMORY USAGE",
}
#: Longest the benchmark waits for jobs to finish.
WAIT_LIMIT = 120.0


def trivial_app(redis_url: str, name: str) -> tuple[Any, harness.AsyncState, Any]:
    """An app on Redis with ``WORKERS`` job threads, and its trivial job."""
    app, ext = harness.make_app(name, redis_url=redis_url, ASYNCSTATE_MAX_WORKERS=WORKERS)

    @ext.job(name="bench_trivial")
    def trivial(job: harness.JobContext) -> dict[str, int]:
        job.progress(1, total=1, message="1 of 1 rows")
        return {"rows": 1}

    return app, ext, trivial


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def final_documents(ext: harness.AsyncState, ids: list[str]) -> tuple[list[Any], float]:
    """Read the documents every 50 ms until all are final (or WAIT_LIMIT): (docs, seconds)."""
    start = time.perf_counter()
    deadline = time.monotonic() + WAIT_LIMIT
    docs: list[Any] = []
    while time.monotonic() < deadline:
        docs = [
            d for i in range(0, len(ids), 500) for d in harness.documents(ext, ids[i : i + 500])
        ]
        if all(d is not None and d["status"] in harness.FINAL for d in docs):
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
            chosen = rng.sample(handles, min(sample, entries))
            keys = [harness.job_key(ext, h.id) for h in chosen]
            usage = [int(client.memory_usage(k, samples=0) or 0) for k in keys]
            encoding = client.object("encoding", keys[0])
            document = client.hget(keys[0], "d") or b""
            first = harness.documents(ext, [h.id for h in handles[:500]])
            statuses = Counter(d["status"] if d else None for d in first)
            held = harness.held_events(ext)
            sweep = harness.timed(lambda: harness.sweep(ext))
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
    env = harness.environment(client)
    client.close()
    return {
        "entries": entries,
        "new_keys": keys_after - keys_before,
        "delta_per_entry": (after - before) / entries,
        "memory_usage": harness.median(usage),
        "encoding": encoding.decode() if isinstance(encoding, bytes) else str(encoding),
        "document_bytes": len(document),
        "bare_delta_per_entry": (bare_after - bare_before) / entries,
        "bare_memory_usage": harness.median(bare_usage),
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
            docs, waited = final_documents(ext, ids)
    finally:
        ext.shutdown(2)
    counts = Counter(d["status"] if d is not None else "missing" for d in docs)
    return {
        "queued": queued,
        "start_seconds": started,
        "all_final_seconds": started + waited,
        "counts": dict(counts),
        "final": sum(n for status, n in counts.items() if status in harness.FINAL),
    }


def main(argv: list[str] | None = None) -> None:
    found = harness.parser(__doc__, FULL, QUICK, HELP)
    found.add_argument("--seed", type=int, default=1, help="seed of the key sample")
    ranges = {"entries": (1, 100_000), "queued": (1, 20_000), "sample": (1, 10_000)}
    args = harness.parse(found, argv, ranges)
    report = harness.Report(__file__, args)
    rng = random.Random(args.seed)
    with harness.redis_server(args.redis_url) as server:
        client = redis.Redis.from_url(server.url)
        client.flushdb()  # a throwaway server: measure our keys alone
        client.close()
        m = memory_part(server.url, args.entries, args.sample, rng)
        b = backlog_part(server.url, args.queued)
    per_entry, unfinished, held = TARGETS
    worst = max(m["delta_per_entry"], m["memory_usage"])
    met = [
        report.check(per_entry, worst, "ours", f"{worst:,.0f} bytes"),
        report.check(
            unfinished, b["queued"] - b["final"], "backlog", f"{b['queued'] - b['final']:,}"
        ),
        report.check(held, m["held_events"], "memory part", str(m["held_events"])),
    ]
    report.out(
        m["env"],
        f"Redis memory per live job entry: {m['entries']:,} finished trivial jobs "
        f"({m['new_keys']:,} new keys; documents of {m['document_bytes']} bytes of JSON), MEMORY "
        f"USAGE over {min(args.sample, m['entries'])} random keys. Starting them took "
        f"{m['start_seconds']:.2f} s, all finished after {m['finished_seconds']:.2f} s.",
    )
    report.table(
        [
            "entry",
            "bytes per entry (used_memory delta / entries)",
            "bytes per entry (MEMORY USAGE, median)",
            "encoding",
            "of the 1 KiB target",
        ],
        [
            [
                "ours: job entry (hash: document, cancel flag, expiry)",
                f"{m['delta_per_entry']:,.0f}",
                f"{m['memory_usage']:,.0f}",
                m["encoding"],
                f"{m['delta_per_entry'] / per_entry.limit:.2f}",
            ],
            [
                "bare: the same document as a string (`SET key doc EX 900`)",
                f"{m['bare_delta_per_entry']:,.0f}",
                f"{m['bare_memory_usage']:,.0f}",
                "string",
                "-",
            ],
        ],
    )
    report.out(
        f"A backlog on one instance: {b['queued']:,} trivial jobs started in a tight loop with "
        f"ASYNCSTATE_MAX_WORKERS={WORKERS}, their documents polled from Redis every 50 ms until "
        "final."
    )
    counts = ", ".join(f"{status} {n:,}" for status, n in sorted(b["counts"].items()))
    report.table(
        [
            "jobs queued",
            "workers",
            "start() loop s",
            "all final after s",
            "jobs/s",
            "final",
            "statuses (read back from Redis)",
        ],
        [
            [
                f"{b['queued']:,}",
                str(WORKERS),
                f"{b['start_seconds']:.2f}",
                f"{b['all_final_seconds']:.2f}",
                f"{b['queued'] / b['all_final_seconds']:,.0f}",
                f"{b['final']:,} / {b['queued']:,}",
                counts,
            ]
        ],
    )
    report.out(
        f"Once all {m['entries']:,} jobs had finished the store held {m['held_events']:,} cancel "
        f"Events (a finished job's Event is released), and one pass of the listener's "
        f"once-a-second sweep over the held keys took {m['sweep_ms']:.1f} ms."
    )
    report.summary(
        "Redis memory per live job entry",
        f"{worst:,.0f} bytes",
        f"the same document as a string {m['bare_delta_per_entry']:,.0f} bytes",
        "<= 1 KiB",
        met[0],
    )
    report.summary(
        f"{b['queued']:,} jobs queued on one instance, {WORKERS} workers",
        f"{b['final']:,} final after {b['all_final_seconds']:.2f} s",
        "",
        "all final; no Event held after",
        all(met[1:]),
    )
    report.notes.append(
        f"{b['final']:,}/{b['queued']:,} queued jobs final in {b['all_final_seconds']:.1f} s "
        f"({WORKERS} workers)"
    )
    report.figures.update(memory={k: v for k, v in m.items() if k != "env"}, backlog=b)
    report.panel(
        harness.panel(
            f"scale.py: Redis bytes per live job entry ({m['entries']:,} entries)",
            "bytes",
            [
                ("ours, used_memory delta", m["delta_per_entry"]),
                ("ours, MEMORY USAGE", m["memory_usage"]),
                ("bare SET of the document, used_memory delta", m["bare_delta_per_entry"]),
            ],
            target=per_entry.limit,
            target_label="target 1 KiB",
        )
    )
    report.finish()


if __name__ == "__main__":
    main()
