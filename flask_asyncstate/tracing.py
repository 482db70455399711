"""OpenTelemetry traces of jobs (extra ``otel``: ``opentelemetry-api``; the app brings the SDK).

Two spans per job, in the trace of the request that started it:

``asyncstate.start <name>`` (kind ``PRODUCER``)
    around :meth:`~flask_asyncstate.lifecycle.Lifecycle.start`, in the current
    context: a child of the request's span when the app is instrumented
    (``opentelemetry-instrumentation-flask``), of the parent job's run span for
    ``job.spawn()``. A refused start records its exception there.
``asyncstate.run <name>`` (kind ``CONSUMER``)
    around each run of the job, wherever it runs, a child of the start span.
    The start span's context is written into the job's document, as the internal
    field ``trace`` (W3C ``traceparent``/``tracestate``, nothing else: no baggage
    is stored), and read back by whoever runs the job: a pool thread, an RQ work
    horse or a Celery pool process, which all take the job from its document. So
    retries and resumes run in the same trace too, and nothing is added to the
    queue payload. When the worker is instrumented itself (a Celery or RQ
    instrumentation's span of the same trace is current), the run span nests
    under that span instead.

Attributes: ``asyncstate.job.name`` and ``asyncstate.job.id`` on both;
``asyncstate.job.attempt`` (and ``asyncstate.job.resumed``) on the run; at its
end, the status it left the job in (``asyncstate.job.status``: the final status,
or ``queued`` when it will run again) and ``asyncstate.job.reason``. A run that
ended ``failed`` or ``lost``, or that failed into a retry, has the span status
``ERROR``. Events: ``asyncstate.retry`` and ``asyncstate.resume`` on a run that
ends that way (with the next ``asyncstate.job.attempt``), ``asyncstate.cancel``
on the span current where a cancel is requested (the cancelling request's).

Without ``opentelemetry-api`` every function here returns at once (a shared null
context), and so it does with the API until the app sets a tracer provider (the
SDK's, or ``opentelemetry-instrument``'s): the API's non-recording spans would cost
a few microseconds each for nothing. It looks for one at most once a second; from
the first look that finds one (a provider, once set, stays), the spans are made.
"""

from __future__ import annotations

import contextlib
import logging
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import ProxyTracerProvider, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the extra ``otel`` is not installed: nothing is traced
    ENABLED = False
else:
    ENABLED = True
    _PROPAGATOR = TraceContextTextMapPropagator()
    #: Resolved at each span: the provider the app sets up later is the one used.
    _tracer: Any = trace.get_tracer("flask_asyncstate")

#: A tracer provider was found set: spans are made from then on.
_live = False
#: ``time.monotonic()`` of the next look for a provider while none is set.
_next_look = 0.0
#: Seconds between two looks (a provider set later is used within this time).
LOOK_EVERY = 1.0

if TYPE_CHECKING:
    from .jobs import JobBuffer

NAME = "asyncstate.job.name"
ID = "asyncstate.job.id"
NEW = "asyncstate.job.new"
ATTEMPT = "asyncstate.job.attempt"
RESUMED = "asyncstate.job.resumed"
STATUS = "asyncstate.job.status"
REASON = "asyncstate.job.reason"
#: The document field that carries the start span's context to the run.
FIELD = "trace"
#: Longest wait, in seconds, for the spans of a process that is about to end.
FLUSH_TIMEOUT = 2.0

log = logging.getLogger("flask_asyncstate")

_NULL = contextlib.nullcontext()


def tracing() -> bool:
    """Whether spans are made: the API is installed and a tracer provider was set."""
    global _live, _next_look
    if _live or not ENABLED:
        return _live and ENABLED
    now = time.monotonic()
    if now >= _next_look:
        _next_look = now + LOOK_EVERY
        _live = not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)
    return _live


def start_span(name: str) -> contextlib.AbstractContextManager[Any]:
    """The span around a ``start()`` of job ``name``, current inside (yields it, or None)."""
    return _StartSpan(name) if tracing() else _NULL


def started(span: Any, job_id: str, is_new: bool) -> None:
    """The start made (or, ``unique=``, found) job ``job_id``."""
    if span is not None and span.is_recording():
        span.set_attributes({ID: job_id, NEW: is_new})


def carry(doc: dict[str, Any]) -> None:
    """Write the current span's context into a job's document (its ``trace`` field), for
    the run to continue the trace wherever and whenever it runs; nothing when untraced."""
    if not tracing():
        return
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return
    # W3C trace context, written directly (the propagator's inject costs four times more);
    # the run reads it back with the propagator, which checks it.
    carrier = {
        "traceparent": f"00-{found.trace_id:032x}-{found.span_id:016x}-{found.trace_flags:02x}"
    }
    if found.trace_state:
        carrier["tracestate"] = found.trace_state.to_header()
    doc[FIELD] = carrier


def cancel_requested(job_id: str) -> None:
    """A cancel of ``job_id`` was stored: an event on the current span (the request's)."""
    if tracing():
        trace.get_current_span().add_event("asyncstate.cancel", {ID: job_id})


def flush(timeout: float = FLUSH_TIMEOUT) -> None:
    """This process is about to end without running ``atexit`` (an RQ work horse ends with
    ``os._exit`` after its job): export the spans the SDK's batch processor still holds,
    waiting at most ``timeout`` s."""
    if not _live:
        return
    force = getattr(trace.get_tracer_provider(), "force_flush", None)
    if force is None:
        return
    try:
        force(int(timeout * 1000))
    except Exception:  # an exporter's failure must not keep the process from ending
        log.warning("flask-asyncstate: spans not exported before the process ended", exc_info=True)


def run_span(ctx: JobBuffer) -> contextlib.AbstractContextManager[Any]:
    """The span around one run of the job ``ctx`` holds (see the module docstring)."""
    return _RunSpan(ctx) if tracing() else _NULL


class _StartSpan:
    """``asyncstate.start <name>``, current inside; a start that raises records it."""

    __slots__ = ("_name", "_span", "_token")

    def __init__(self, name: str) -> None:
        self._name = name
        self._span: Any = None
        self._token: Any = None

    def __enter__(self) -> Any:
        self._span = _tracer.start_span(
            f"asyncstate.start {self._name}", kind=SpanKind.PRODUCER, attributes={NAME: self._name}
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        try:
            if exc is not None and span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))
        finally:
            otel_context.detach(self._token)
            span.end()


class _RunSpan:
    """``asyncstate.run <name>``: started and made current on entry, described and ended
    on exit from what the job's document says then."""

    __slots__ = ("_ctx", "_retries", "_span", "_token")

    def __init__(self, ctx: JobBuffer) -> None:
        self._ctx = ctx
        self._span: Any = None
        self._token: Any = None
        self._retries: Any = None

    def __enter__(self) -> Any:
        ctx = self._ctx
        doc = ctx.doc
        attributes: dict[str, Any] = {NAME: ctx.name, ID: ctx.id, ATTEMPT: doc.get("attempt") or 1}
        if doc.get("resumed"):
            attributes[RESUMED] = True
        self._retries = doc.get("retries_left")
        self._span = _tracer.start_span(
            f"asyncstate.run {ctx.name}",
            context=_parent(doc.get(FIELD)),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        try:
            if span.is_recording():
                self._describe(span, exc)
        finally:
            otel_context.detach(self._token)
            span.end()

    def _describe(self, span: Any, exc: BaseException | None) -> None:
        doc = self._ctx.doc
        status, reason, error = doc.get("status"), doc.get("reason"), doc.get("error")
        span.set_attribute(STATUS, str(status))
        if reason:
            span.set_attribute(REASON, str(reason))
        retried = False
        if status == "queued":  # this run ended, the job did not: it runs again
            retried = doc.get("retries_left") != self._retries
            event = "asyncstate.retry" if retried else "asyncstate.resume"
            span.add_event(event, {ATTEMPT: doc.get("attempt") or 1})
        if status in ("failed", "lost") or (retried and error):
            described = error if isinstance(error, dict) else {}
            text = f"{described.get('type', 'Error')}: {described.get('message', '')}"
            span.set_status(Status(StatusCode.ERROR, text[:500]))
        if exc is not None:
            span.record_exception(exc)


def _parent(carrier: Any) -> Any:
    """The context a run continues: the carried start span's, or the current one when it is
    a span of the same trace (an instrumented worker's), or the current one when nothing
    was carried."""
    if not isinstance(carrier, dict):
        return None
    carried = _PROPAGATOR.extract(carrier)
    current = trace.get_current_span().get_span_context()
    if current.is_valid:
        parent = trace.get_current_span(carried).get_span_context()
        if parent.trace_id == current.trace_id:
            return None
    return carried
