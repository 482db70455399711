"""What the observability tests read from other processes: spans written to a file, and
``/metrics`` texts.

:func:`export_spans_to` sets up the OpenTelemetry SDK in a process (a web instance, an RQ or
Celery worker: ``support.worker_app`` calls it when ``WT_SPANS`` names a file) with a
batch processor and an exporter that appends one JSON line per ended span; forked work
horses and pool processes inherit it. :func:`read_spans` reads them back; :func:`samples` parses a Prometheus text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def export_spans_to(path: str) -> None:
    """Make this process's global tracer provider write every ended span to ``path``."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class FileExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            lines = "".join(json.dumps(_described(span)) + "\n" for span in spans)
            with open(path, "a", encoding="utf-8") as fh:  # one write: lines never interleave
                fh.write(lines)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    # A batch, as in production: an RQ work horse's spans are exported only because its
    # end flushes them (flask_asyncstate.tracing.flush); a short delay for the test's sake.
    provider.add_span_processor(BatchSpanProcessor(FileExporter(), schedule_delay_millis=100))
    trace.set_tracer_provider(provider)


def _described(span: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
        "status": span.status.status_code.name,
        "pid": os.getpid(),
    }


def read_spans(path: Path) -> list[dict[str, Any]]:
    """The spans written to ``path`` so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of a Prometheus text exposition, by name and labels (see :func:`sample`)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (one.name, frozenset(one.labels.items())): one.value
        for family in text_string_to_metric_families(text)
        for one in family.samples
    }


def sample(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One value of :func:`samples`' answer; 0 when the series is not there."""
    return found.get((name, frozenset(labels.items())), 0.0)
