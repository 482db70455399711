"""Cost of what operators see: Prometheus metrics and OpenTelemetry spans on ``start()`` and a run.

In one process, against one redis-server on loopback, an app context pushed and
no request, a job that returns at once, ``job.start()`` timed one call at a time
(each waited for, untimed, before the next), in five settings that take turns in
every repeat:

- off: as without ``prometheus_client`` and ``opentelemetry-api`` (no receiver
  connected, every hook a null context);
- metrics: ``prometheus_client``'s default registry, in-process values;
- tracing, API only: ``opentelemetry-api`` without an SDK (what an app that never
  set up tracing gets: non-recording spans, no context stored);
- tracing, SDK: the SDK's ``TracerProvider`` with a ``BatchSpanProcessor`` and an
  exporter that drops the spans (every span sampled, recorded and queued, as in
  production, minus the network);
- both: metrics and tracing with the SDK.

Two calls per setting and store (memory, Redis): ``start()`` on the thread pool
(the request's cost: admission and submission; the run happens in a pool thread)
and ``start()`` with the inline executor (admission *and* the whole run in the
caller's thread: what a run costs too). Also printed: what the hooks cost with
everything off, timed alone (a ``start()``'s span, count and label; a run's log
fields, span and gauge).

Against, in the same run: one bare SDK span (``tracer.start_as_current_span`` with
our span's name, kind and ``asyncstate.job.name``: the least any instrumentation of
``start()`` would pay, same provider), timed like the hooks.

Targets: with everything off, the hooks cost <= 1% of ``start()`` (memory store,
its cheapest); with metrics on, ``start()`` <= 1.05x off on either store; with
SDK tracing, a ``start()``'s hooks <= 1.5x one bare SDK span; with metrics and
SDK tracing on, ``start()`` on the Redis store (the production one) <= 1.05x off
(the issue's "under 5%").

    python bench/observability.py            # 5 x 400 calls per setting (about 40 s)
    python bench/observability.py --quick    # 3 x 150 (about 10 s)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import harness

try:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanKind
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    raise SystemExit(
        f"bench/observability.py needs the bench extra: pip install -e '.[bench]' ({exc})"
    )

TARGET_OFF = harness.Target("hooks with everything off / start() (memory store)", "<=", 1.0, "%")
TARGET_METRICS = harness.Target("start(), metrics on / off", "<=", 1.05, "x")
TARGET_SPAN = harness.Target("start() hooks, SDK tracing / one bare SDK span", "<=", 1.5, "x")
TARGET_BOTH = harness.Target("start(), metrics and SDK tracing on / off (Redis)", "<=", 1.05, "x")
FULL = {"calls": 400, "repeats": 5}
QUICK = {"calls": 150, "repeats": 3}
HELP = {"calls": "calls per setting and repeat", "repeats": "repeats (the settings take turns)"}
SETTINGS = {
    "off": "off (neither package)",
    "metrics": "metrics",
    "api": "tracing, API only",
    "sdk": "tracing, SDK",
    "both": "metrics + tracing, SDK",
}
NAME = "asyncstate.job.name"
#: Calls timed together to measure the hooks alone (each is well under a microsecond off).
HOOK_CALLS = 100_000
#: Calls timed together of the hooks with SDK tracing, and of a bare SDK span.
SPAN_CALLS = 10_000


class Dropped(SpanExporter):
    """Receives the batches and throws them away: the SDK's work without the network."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def settings(tracer: Any) -> dict[str, Callable[[], None]]:
    return {
        "off": lambda: harness.observing(False),
        "metrics": lambda: harness.observing(True),
        "api": lambda: harness.observing(False, "api"),
        "sdk": lambda: harness.observing(False, tracer),
        "both": lambda: harness.observing(True, tracer),
    }


def app_for(store: str, executor: str, redis_url: str) -> tuple[Any, Any]:
    app, ext = harness.make_app(
        f"bench-observe-{store}-{executor}",
        redis_url=redis_url if store == "redis" else None,
        ASYNCSTATE_EXECUTOR=executor,
        ASYNCSTATE_MAX_QUEUED=100_000,
    )

    @ext.job(name="bench_observe_nothing")
    def job(ctx: harness.JobContext) -> None:
        return None

    return app, job


def wait(handle: Any) -> None:
    doc = handle.wait(60)
    if doc is None or doc["status"] != "succeeded":
        raise RuntimeError(f"a started job ended {doc!r}")


def measure(
    apps: dict[tuple[str, str], tuple[Any, Any]],
    switch: dict[str, Callable[[], None]],
    calls: int,
    repeats: int,
) -> dict[tuple[str, str, str], float]:
    """Median µs of one ``start()`` per (store, executor, setting), the settings in turns."""
    found: dict[tuple[str, str, str], list[float]] = {}
    for round_ in range(repeats + 1):  # round 0 warms up every app in every setting
        for (store, executor), (app, job) in apps.items():
            after = wait if executor == "threads" else None
            for setting, turn_on in switch.items():
                turn_on()
                with app.app_context():
                    took = harness.each_timed(job.start, calls if round_ else 30, after=after)
                if round_:
                    found.setdefault((store, executor, setting), []).extend(took)
    harness.observing(False)
    return {key: harness.median(values) for key, values in found.items()}


def hooks_alone(tracer: Any, repeats: int) -> dict[str, float]:
    """µs per call, medians of ``repeats``: the hooks with everything off (a start's, a
    run's); a start's with SDK tracing; one bare SDK span, as any instrumentation makes."""
    name = "bench_observe_nothing"

    def bare() -> None:  # the least span a start could have: its name, kind and job name
        with tracer.start_as_current_span(
            f"asyncstate.start {name}", kind=SpanKind.PRODUCER, attributes={NAME: name}
        ):
            pass

    found: dict[str, list[float]] = {}
    for _ in range(repeats):
        harness.observing(False)
        found.setdefault("start off", []).append(_per_call(harness.start_hooks(name), HOOK_CALLS))
        run = harness.run_hooks_off("0" * 32, name)
        found.setdefault("run off", []).append(_per_call(run, HOOK_CALLS))
        harness.observing(False, tracer)
        found.setdefault("start sdk", []).append(_per_call(harness.start_hooks(name), SPAN_CALLS))
        found.setdefault("bare span", []).append(_per_call(bare, SPAN_CALLS))
    harness.observing(False)
    return {key: harness.median(values) for key, values in found.items()}


def _per_call(hooks: Callable[[], None], calls: int) -> float:
    def body() -> None:
        for _ in range(calls):
            hooks()

    return harness.timed(body) / calls * 1e6


def main(argv: list[str] | None = None) -> None:
    found = harness.parser(__doc__, FULL, QUICK, HELP)
    args = harness.parse(found, argv, {"calls": (10, 100_000), "repeats": (1, 50)})
    report = harness.Report(__file__, args)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped(), max_queue_size=100_000))
    switch_tracer = provider.get_tracer("bench")
    switch = settings(switch_tracer)
    with harness.redis_server(args.redis_url) as server:
        apps = {
            (store, executor): app_for(store, executor, server.url)
            for store in ("memory", "redis")
            for executor in ("threads", "inline")
        }
        try:
            us = measure(apps, switch, args.calls, args.repeats)
            alone = hooks_alone(switch_tracer, args.repeats)
        finally:
            for app, job in apps.values():
                job.extension.shutdown(2)
            provider.shutdown()
        env = harness.environment(
            server.url,
            f"prometheus_client {version('prometheus_client')}, "
            f"opentelemetry-sdk {version('opentelemetry-sdk')}",
        )
    report.out(
        env,
        f"µs per `job.start()`, median of {args.repeats} x {args.calls:,} calls per setting "
        f"(each timed alone, waited for untimed; the settings take turns), and its ratio to "
        f"off. Threads: the call a request makes (the run happens in a pool thread); inline: "
        f"admission and the whole run in the caller's thread. A job that returns at once, so "
        f"these are the largest ratios a real job can see.",
    )
    header = ["setting"]
    columns = [(s, e) for s in ("memory", "redis") for e in ("threads", "inline")]
    for store, executor in columns:
        header += [f"{store}, {executor} µs", "/ off"]
    rows = []
    for setting, label in SETTINGS.items():
        row = [label]
        for store, executor in columns:
            value = us[(store, executor, setting)]
            row += [f"{value:.1f}", f"{value / us[(store, executor, 'off')]:.3f}x"]
        rows.append(row)
    report.table(header, rows)
    start_off = us[("memory", "threads", "off")]
    run_off = us[("memory", "inline", "off")] - start_off
    off = {"start": alone["start off"], "run": alone["run off"]}
    report.out(
        f"The hooks alone, everything off: {off['start']:.3f} µs per `start()` "
        f"({100 * off['start'] / start_off:.2f}% of its {start_off:.1f} µs, memory store) and "
        f"{off['run']:.3f} µs per run ({100 * off['run'] / max(run_off, 1e-9):.2f}% of the "
        f"{run_off:.1f} µs an inline run adds to it); {HOOK_CALLS:,} calls timed together, "
        f"median of {args.repeats}.",
        f"With SDK tracing, a `start()`'s hooks (its span, the context kept, the attributes) "
        f"timed alone, against one bare SDK span (`start_as_current_span` with the same "
        f"name, kind and job name: the least any instrumentation pays), same provider, "
        f"{SPAN_CALLS:,} calls each: ours {alone['start sdk']:.1f} µs, bare span "
        f"{alone['bare span']:.1f} µs ({alone['start sdk'] / alone['bare span']:.2f}x). The SDK's own span is most of "
        f"what tracing adds to `start()`; the run span costs the same again in the thread "
        f"running the job (in the threads columns above, partly overlapping the next call).",
    )
    off_pct = 100 * off["start"] / start_off
    met_off = report.check(TARGET_OFF, off_pct, "start(), memory store", f"{off_pct:.2f}%")
    met_metrics = True
    for store in ("memory", "redis"):
        ratio_ = us[(store, "threads", "metrics")] / us[(store, "threads", "off")]
        met_metrics &= report.check(TARGET_METRICS, ratio_, f"{store} store, threads")
    met_span = report.check(
        TARGET_SPAN, alone["start sdk"] / alone["bare span"], "start() hooks, timed alone"
    )
    both = us[("redis", "threads", "both")] / us[("redis", "threads", "off")]
    met_both = report.check(TARGET_BOTH, both, "Redis store, threads")

    def ratio(store: str, setting: str) -> float:
        return us[(store, "threads", setting)] / us[(store, "threads", "off")]

    report.summary(
        "`start()` with metrics / SDK tracing / both on, over off (memory; Redis)",
        f"{ratio('memory', 'metrics'):.2f} / {ratio('memory', 'sdk'):.2f} / "
        f"{ratio('memory', 'both'):.2f}x; {ratio('redis', 'metrics'):.2f} / "
        f"{ratio('redis', 'sdk'):.2f} / {ratio('redis', 'both'):.2f}x; hooks off "
        f"{off['start']:.2f} µs ({off_pct:.1f}%)",
        f"off: memory {start_off:.0f} µs, Redis {us[('redis', 'threads', 'off')]:.0f} µs",
        "off <= 1%; metrics <= 1.05x; tracing <= 1.5x a bare span; both, Redis <= 1.05x",
        met_off and met_metrics and met_span and met_both,
    )
    report.figures.update(
        us_per_start={"/".join(key): value for key, value in us.items()}, hooks_us=alone
    )
    report.panel(
        harness.panel(
            "observability.py: start() / off (threads; memory, Redis)",
            "x",
            [
                (f"{SETTINGS[setting]}, {store}", ratio(store, setting))
                for store in ("memory", "redis")
                for setting in SETTINGS
                if setting != "off"
            ],
            reference=1.0,
        )
    )
    report.finish()


if __name__ == "__main__":
    main()
