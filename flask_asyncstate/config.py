"""Configuration: the ``ASYNCSTATE_*`` keys, the tuning keywords of ``init_app``, their checks.

Each key is declared once, as a field of :class:`Settings` made by :func:`option`:
its default, its check and its doc. Everything else comes from those fields:
:data:`DEFAULTS` (what ``init_app`` sets with ``app.config.setdefault``), the
validation in ``init_app`` (:meth:`Settings.from_config`), the :class:`Settings`
an app's code reads, and the configuration page of the docs (``docs/conf.py``
renders the fields). Internal tuning is declared the same way as the fields of
:class:`Tuning`, given as keywords of ``AsyncState(app, **tuning)`` or
``init_app(app, **tuning)``. Keys removed in 0.2 are in :data:`REMOVED`, with what
replaces each: ``init_app`` refuses them, so no upgrade is silent.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .stores.base import Store

#: Prefix of every key in ``app.config``.
PREFIX = "ASYNCSTATE_"

#: A check: ``check(label, value)`` returns the value to use, or raises ``ValueError`` or
#: ``TypeError`` naming ``label`` (the key, or the tuning keyword) and what to set instead.
Check = Callable[[str, Any], Any]


def option(default: Any, check: Check, doc: str) -> Any:
    """A field of :class:`Settings` (one key) or :class:`Tuning` (one keyword).

    ``doc`` is reStructuredText: its first paragraph is the one-line meaning in the
    docs' table, the whole text the key's entry below it.
    """
    return field(default=default, metadata={"check": check, "doc": inspect.cleandoc(doc)})


# -- checks ---------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _positive(label: str, value: Any) -> float:
    if not _number(value) or value <= 0:
        raise ValueError(f"{label} must be a positive number, got {value!r}")
    return float(value)


def _positive_int(label: str, value: Any) -> int:
    if not _number(value) or value <= 0:
        raise ValueError(f"{label} must be a positive number, got {value!r}")
    return int(value)


def _optional_positive(label: str, value: Any) -> float | None:
    return None if value is None else _positive(label, value)


def _nonempty(label: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{label} must be a non-empty string, got {value!r}")
    return value


def _text(label: str, value: Any) -> str:
    return str(value)


def _as_is(label: str, value: Any) -> Any:
    return value


def _redis_url(label: str, value: Any) -> str | None:
    if not value:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"{label} must be a redis-py URL such as 'redis://localhost:6379/0'"
            f" (or None for the in-memory store), got {value!r}"
        )
    return value


def _streams(label: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{label} must be None (streams only on gevent/eventlet), 0 (off)"
            f" or a positive int, got {value!r}"
        )
    return value


#: The values :data:`ASYNCSTATE_EXECUTOR` accepts.
EXECUTORS = ("threads", "rq", "celery", "inline")


def _executor(label: str, value: Any) -> str:
    if value not in EXECUTORS:
        raise ValueError(f"{label} must be one of {EXECUTORS}, got {value!r}")
    return str(value)


def _sentinels(label: str, value: Any) -> tuple[tuple[str, int], ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    out = []
    for item in value:
        host, _, port = str(item).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{label} takes 'host:port' entries, got {item!r}")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError(f"{label} is empty: list the sentinels, or set it to None")
    return tuple(out)


def _url_prefix(label: str, value: Any) -> str:
    prefix = str(value or "").rstrip("/")
    if not prefix.startswith("/"):
        raise ValueError(
            f"{label} must be a path like '/asyncstate': the blueprint's catch-all"
            f" would otherwise answer for the whole app (got {value!r})"
        )
    return prefix


# -- the keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tuning:
    """Internal tuning: keywords of ``AsyncState(app, **tuning)`` and ``init_app(app,
    **tuning)`` (those of ``init_app`` win), with the defaults below.

    Their defaults suit every deployment we know of; they are keywords for tests, and
    for the rare app that must change one. An unknown keyword raises ``TypeError``,
    a bad value ``ValueError``, both naming it.
    """

    max_entry_size: int = option(
        64 * 1024,
        _positive_int,
        """
        Largest encoded (UTF-8 JSON) state entry or job document, in bytes (64 KiB).

        A bigger state raises :exc:`~flask_asyncstate.StateTooLarge`; a job whose result
        makes its document bigger ends ``failed``. Keep big data in your database and store
        its id rather than raising it. A store class named by :data:`ASYNCSTATE_STORE` gets
        it as ``max_entry_size``.
        """,
    )
    shutdown_timeout: float = option(
        10.0,
        _positive,
        """
        Seconds shutdown waits for running jobs before it records them ``lost``.

        They wait after their cancel Events were set. Keep it below the time your process
        manager allows for a graceful stop (see :doc:`deployment`).
        """,
    )
    timeout_grace: float = option(
        5.0,
        _positive,
        """
        Seconds a job past its ``timeout=`` is given to stop by itself.

        A job declared with ``@asyncstate.job(timeout=...)`` has its cancel Event set at
        the deadline; after this grace it is recorded ``failed`` with a ``JobTimeout``
        error anyway. RQ and Celery also enforce the deadline plus twice this: RQ raises
        ``JobTimeoutException`` in the job then (and kills the work horse a minute later),
        Celery's soft limit (deadline plus this) raises in the job and its hard limit kills
        the pool process.
        """,
    )
    sse_max_age: float = option(
        25.0,
        _positive,
        """
        Longest life, in seconds, of one ``/events/<token>`` stream.

        After that, even if the job is still running, the server sends an
        ``event: reconnect`` frame and closes the stream, and the widget opens a new one.
        The default stays below gunicorn's default graceful timeout (30 s), so a stream
        never holds a stopping worker past it by itself; keep it below yours.
        """,
    )
    sse_ping_interval: float = option(
        15.0,
        _positive,
        """
        Seconds between two ``: ping`` comments of an ``/events/<token>`` stream.

        Keep it below your proxies' idle timeouts; it is also how the server notices a
        closed page and frees the thread.
        """,
    )
    max_streams_per_owner: int = option(
        4,
        _positive_int,
        """
        Streams one owner may keep open in one process at once.

        The owner is a session, or a logged-in user: so one browser with many tabs cannot
        take all of :data:`ASYNCSTATE_MAX_STREAMS`. Beyond it: the same JSON 429 with
        ``Retry-After: 10``. The count is per process, not across instances.
        """,
    )
    circuit_failures: int = option(
        3,
        _positive_int,
        """
        Consecutive timeouts or connection errors that open the Redis circuit breaker.

        Counted over request-path Redis calls; once open, further request-path calls fail
        at once with :exc:`~flask_asyncstate.StoreUnavailable` (a JSON 503) instead of each
        waiting out :data:`ASYNCSTATE_REDIS_TIMEOUT`. Other Redis errors do not count. The
        breaker is per process (per app), and only for Redis.
        """,
    )
    circuit_reset: float = option(
        2.0,
        _positive,
        """
        Seconds an open circuit fails calls at once before it lets one probe call through.

        One probe at a time; the others keep failing at once. A probe that succeeds closes
        the circuit; one that fails opens it again for this long. ``Retry-After`` on every
        503 for an unavailable store (the job store, or the session store under the
        prefix) is this value rounded up, at least 1.
        """,
    )

    def __post_init__(self) -> None:
        _check_fields(self, lambda name: f"the tuning keyword {name}")

    def replace(self, **given: Any) -> Tuning:
        """A copy with ``given`` keywords changed; ``TypeError`` names an unknown one."""
        for name in given:
            if name not in TUNING_NAMES:
                raise TypeError(_unknown_keyword(name))
        return dataclasses.replace(self, **given)


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one app: a field per ``ASYNCSTATE_*`` key (the field
    ``redis_url`` is the key ``ASYNCSTATE_REDIS_URL``), and the app's :class:`Tuning`."""

    redis_url: str | None = option(
        None,
        _redis_url,
        """
        The Redis that keeps jobs and state, as a redis-py URL; ``None``: process memory.

        A URL such as ``"redis://redis:6379/0"`` (``rediss://`` and the other redis-py
        forms work). ``None`` keeps jobs and state in process
        memory, seen by the threads of one process only: set it as soon as more than one
        process serves the app. A client passed as ``init_app(app, redis=client)`` wins over
        this key, and :data:`ASYNCSTATE_STORE` over both (see :doc:`deployment`).

        The client built from the URL is the patient one, for background work (the writer
        thread, the cancel listener, job code in pool threads): 2 s to connect, 5 s per
        command, and two quick retries, so nothing is lost to a short hiccup. Calls made
        while serving a request use a second client derived from it, with the waits of
        :data:`ASYNCSTATE_REDIS_TIMEOUT`, behind a circuit breaker (see
        :ref:`deployment-stalls`).
        """,
    )
    redis_sentinels: tuple[tuple[str, int], ...] | None = option(
        None,
        _sentinels,
        """
        Sentinels to ask for the Redis master, as ``["host:port", ...]``.

        Instead of :data:`ASYNCSTATE_REDIS_URL`; with
        :data:`ASYNCSTATE_REDIS_SENTINEL_MASTER`. After a failover every client (the
        writer, the listener, request-path calls) follows the new master. For passwords or
        TLS, pass ``redis=Sentinel([...], ...).master_for(...)`` instead (see
        :ref:`deployment-topologies`).
        """,
    )
    redis_sentinel_master: str = option(
        "mymaster",
        _nonempty,
        """
        The master's name the sentinels monitor (``sentinel monitor <name> ...``).
        """,
    )
    store: Store | type[Store] | str | None = option(  # noqa: RUF009 - option() is a field()
        None,
        _as_is,
        """
        A store to use instead of the built-in ones: an instance, a class or an import string.

        A :class:`~flask_asyncstate.stores.Store` instance, a
        :class:`~flask_asyncstate.stores.Store` subclass, or an import string naming either
        (``"myapp.stores.DynamoStore"``, the way Flask-Caching's ``CACHE_TYPE`` works). A
        class is constructed with ``key_prefix``, ``expires`` and ``max_entry_size`` from
        :data:`ASYNCSTATE_KEY_PREFIX`, :data:`ASYNCSTATE_EXPIRES` and the tuning keyword
        :attr:`~Tuning.max_entry_size`. An instance is used as given, with its own options;
        give each app its own, since it is closed when that app shuts down. Anything else
        raises ``TypeError`` in ``init_app``.

        When set, it wins over :data:`ASYNCSTATE_REDIS_URL` and a client passed to
        ``init_app``, and :data:`ASYNCSTATE_REDIS_TIMEOUT` and the circuit breaker do not
        apply. ``None``, the default, picks Redis or memory as described above. See
        :ref:`writing-a-store`.
        """,
    )
    key_prefix: str = option(
        "asyncstate:",
        _text,
        """
        Prefix of every store key and Redis channel; one per app on a shared Redis.

        The Redis channels are ``<prefix>cancel`` and ``<prefix>changed:<key>`` (one per
        entry, heard where the entry is watched). The instances of one app must share it;
        different apps (or test runs) on one Redis should each have their own. A store class
        named by :data:`ASYNCSTATE_STORE` gets it as ``key_prefix``.
        """,
    )
    redis_timeout: float = option(
        1.0,
        _positive,
        """
        Longest wait, in seconds, of one Redis call made while serving a request.

        That is the blueprint's routes, ``/events`` streams included, and whatever your
        views call: ``start()``, the state API, :meth:`AsyncState.status()
        <flask_asyncstate.AsyncState.status>`...: half of it to connect and half for the
        reply. Such calls use a client derived from the configured one with these timeouts,
        no retry after a timeout and one immediate retry after a dropped connection;
        background work keeps the patient client. After
        :attr:`~Tuning.circuit_failures` such timeouts in a row, a circuit breaker fails
        them at once for :attr:`~Tuning.circuit_reset` seconds. Has no effect with the
        in-memory store or a store from :data:`ASYNCSTATE_STORE`. See
        :ref:`deployment-stalls`.
        """,
    )
    executor: str = option(
        "threads",
        _executor,
        """
        Where jobs run: ``"threads"``, ``"rq"``, ``"celery"``, or ``"inline"`` for tests.

        ``"threads"`` (the default): a pool of :data:`ASYNCSTATE_MAX_WORKERS` threads in
        each web process. ``"rq"``: RQ workers on the store's Redis, started with
        ``flask --app APP asyncstate worker``. ``"celery"``: the Celery app given as
        ``AsyncState(app, celery=celery_app)`` (which makes it the default); workers started
        with ``celery -A MODULE worker``. Tokens, documents, routes, cancel and signals are
        the same whichever runs the job. ``"rq"`` and ``"celery"`` need a shared store
        (:data:`ASYNCSTATE_REDIS_URL`) and the ``rq`` or ``celery`` extra. See
        :ref:`deployment-workers`.

        ``"inline"`` runs each job in the thread that calls ``start()``, which returns once
        the job has finished (like Celery's eager mode). For tests only: see
        :doc:`testing`.
        """,
    )
    rq_queue: str = option(
        "asyncstate",
        _nonempty,
        """
        The RQ queue jobs go to with ``ASYNCSTATE_EXECUTOR = "rq"``; one per app.

        ``flask asyncstate worker`` listens on it unless given ``--queue``. Apps sharing one
        Redis need a queue each.
        """,
    )
    max_workers: int = option(
        4,
        _positive_int,
        """
        Threads that run jobs, per app and per process (``"threads"`` executor).

        The daemon threads of the default executor
        (``flask_asyncstate.executors.ThreadExecutor``). Further jobs wait as ``queued`` (at
        most :data:`ASYNCSTATE_MAX_QUEUED` of them). Raise it for jobs that mostly wait on
        I/O; CPU-bound Python jobs share one GIL, so more threads do not make them faster.
        """,
    )
    max_queued: int = option(
        1000,
        _positive_int,
        """
        Jobs that may wait to run: per process with threads, app-wide with workers.

        With ``"threads"``: jobs one process (per app) holds admitted but not yet taken up
        by a pool thread, the ``queued`` ones waiting for one of the
        :data:`ASYNCSTATE_MAX_WORKERS` threads. Beyond it ``start()`` raises
        :exc:`~flask_asyncstate.QueueFull` before anything is written, in a request or
        outside one, and the app-wide error handler answers a JSON 503 with
        ``Retry-After: 5``. It is what bounds the work a flood of requests without cookies
        can queue on one instance, since every such request is a new session with a quota of
        its own (see :doc:`security`). With :data:`ASYNCSTATE_EXECUTOR` ``"rq"`` or
        ``"celery"`` it bounds instead the jobs waiting for a worker, app-wide (counted
        atomically in the store): beyond it ``start()`` raises
        :exc:`~flask_asyncstate.QueueFull` the same way.
        """,
    )
    max_jobs_per_owner: int = option(
        5,
        _positive_int,
        """
        Unfinished jobs one owner may have; also how many finished ones are listed.

        Counts ``queued`` and ``running`` jobs of one *owner*: a browser session, or with
        Flask-Login the logged-in user across all of their sessions, or whoever
        :meth:`@asyncstate.owner_loader <flask_asyncstate.AsyncState.owner_loader>` names
        (see :ref:`concepts-ownership`). Starting one more in a request raises
        :exc:`~flask_asyncstate.QuotaExceeded` (429, ``Retry-After: 5``) and leaves nothing
        behind. The count is kept atomically in the store, so simultaneous starts of one
        owner, on any number of threads or instances, accept exactly this many. Jobs started
        outside a request have no owner and are not counted.

        It also sets how many finished jobs ``/jobs`` and :meth:`AsyncState.jobs()
        <flask_asyncstate.AsyncState.jobs>` list beside the unfinished ones: the newest this
        many.
        """,
    )
    expires: float = option(
        900,
        _positive,
        """
        Sliding expiry, in seconds, of job documents, state entries and owners' job indexes.

        One that is neither read nor written for this long (15 minutes by default)
        disappears. Running jobs are kept alive by the heartbeat; ``never_expires=True`` opts
        a job or an entry out. Raise it if users come back to finished jobs later than that.
        A store class named by :data:`ASYNCSTATE_STORE` gets it as ``expires``.
        """,
    )
    keep_finished: float | None = option(
        None,
        _optional_positive,
        """
        Seconds a finished job stays, and stays listed, after it was last read.

        The default ``None`` means :data:`ASYNCSTATE_EXPIRES`; a value must be at least
        that. Raise it (say ``86400``) for a "Your exports" list that must remember files
        for a day (it lists the newest :data:`ASYNCSTATE_MAX_JOBS_PER_OWNER` finished jobs
        of an owner); a user dismisses one sooner with ``DELETE <prefix>/jobs/<token>``, and
        code with :meth:`JobHandle.forget() <flask_asyncstate.JobHandle.forget>`.
        """,
    )
    flush_interval: float = option(
        0.25,
        _positive,
        """
        Seconds between two writes of buffered progress to the store.

        Written by the writer thread of each app and process; final statuses that met a
        store outage are retried as often. Readers see progress up to one interval late.
        Lower means fresher progress and more writes; higher, fewer writes.
        """,
    )
    heartbeat_interval: float = option(
        5.0,
        _positive,
        """
        Seconds between two heartbeats of a process that runs jobs.

        Each beat refreshes the process's instance entry, which expires 2.75 intervals after
        the last beat. After three missed beats, about 15 s by default, every reader reports
        that instance's unfinished jobs ``lost``. Lower it to notice a dead instance sooner,
        at the cost of more writes.
        """,
    )
    url_prefix: str = option(
        "/asyncstate",
        _url_prefix,
        """
        Where the blueprint is mounted: an absolute path such as ``"/asyncstate"``.

        Or ``"/api/jobs"``; a trailing slash is ignored. The blueprint answers every unknown
        path under it with a JSON 404, so an empty prefix or ``"/"`` would take over your
        app's 404 pages: ``init_app`` raises ``ValueError`` for those and for a relative
        path (``"asyncstate"``). Change it when ``/asyncstate`` clashes with your routes.
        """,
    )
    token_max_age: float | None = option(
        None,
        _optional_positive,
        """
        Seconds a job token stays valid after it was signed; ``None``: no limit.

        An older token answers 404 and raises :exc:`~flask_asyncstate.InvalidToken`. The
        token from ``start()`` is signed then; the tokens in :meth:`AsyncState.jobs()
        <flask_asyncstate.AsyncState.jobs>` and ``/jobs`` are signed afresh on each call.
        Set it when a token handed out should stop working after a while, even for its own
        session.
        """,
    )
    max_streams: int | None = option(
        None,
        _streams,
        """
        ``/events`` streams one process keeps open; ``0``: off; ``None``: off on threads.

        Counted per process (per app). Each stream holds a server thread (or, with gevent
        workers, a greenlet) for up to :attr:`~Tuning.sse_max_age` seconds, which is why the
        limit is per process: it protects that process's threads. ``None`` (the default)
        decides at the first stream: 1000 where a stream costs no thread (gevent or eventlet
        patched the process), else ``0``: on a threaded server (gunicorn ``gthread`` or
        ``sync``, waitress, the dev server) streams are off and every widget polls, so they
        can never hold the threads the app's other pages need. On a threaded server set it
        only well below your thread count. Beyond it a stream request answers a JSON 429
        with ``Retry-After: 10`` at once, and the widget's ``auto`` mode polls instead (see
        :ref:`frontend-transient` and :doc:`deployment`).
        """,
    )
    #: Not a key: the keywords of ``init_app`` (see :class:`Tuning`).
    tuning: Tuning = field(default_factory=Tuning)

    def __post_init__(self) -> None:
        _check_fields(self, key_name)
        if self.keep_finished is not None and self.keep_finished < self.expires:
            raise ValueError(
                f"ASYNCSTATE_KEEP_FINISHED ({self.keep_finished:g} s) must be at least"
                f" ASYNCSTATE_EXPIRES ({self.expires:g} s): it lengthens how long finished"
                " jobs stay; set it to None to keep them as long as the others"
            )

    @classmethod
    def from_config(cls, config: Any, tuning: Tuning | None = None) -> Settings:
        """Set the defaults in ``config`` (``app.config``), refuse removed keys, check the
        values and return them; ``ValueError`` or ``TypeError`` name the key and the fix."""
        for name, fix in REMOVED.items():
            if name in config:
                raise ValueError(f"{name} was removed in 0.2: {fix}")
        for name, default in DEFAULTS.items():
            config.setdefault(name, default)
        values = {f.name: config[key_name(f.name)] for f in KEYS}
        return cls(**values, tuning=tuning or Tuning())


def key_name(field_name: str) -> str:
    """The ``app.config`` key of a :class:`Settings` field: ``redis_url`` ->
    ``ASYNCSTATE_REDIS_URL``."""
    return PREFIX + field_name.upper()


def _check_fields(obj: Any, label: Callable[[str], str]) -> None:
    """Run each declared field's check on its value, keeping what the check returns."""
    for f in dataclasses.fields(obj):
        if "check" in f.metadata:
            value = f.metadata["check"](label(f.name), getattr(obj, f.name))
            object.__setattr__(obj, f.name, value)


def _unknown_keyword(name: str) -> str:
    hint = ""
    if name in KEY_FIELDS:
        hint = f"; {name} is a configuration key: set app.config[{key_name(name)!r}]"
    elif key_name(name) in REMOVED:
        hint = f"; {REMOVED[key_name(name)]}"
    return (
        f"AsyncState() got an unexpected keyword argument {name!r}{hint}."
        f" Tuning keywords: {', '.join(TUNING_NAMES)}"
    )


#: The fields of :class:`Settings` that are keys, in the order of the docs' table.
KEYS: tuple[dataclasses.Field[Any], ...] = tuple(
    f for f in dataclasses.fields(Settings) if "check" in f.metadata
)
KEY_FIELDS = frozenset(f.name for f in KEYS)

#: Every key with its default; ``init_app`` sets these with ``app.config.setdefault``.
DEFAULTS: dict[str, Any] = {key_name(f.name): f.default for f in KEYS}

#: The fields of :class:`Tuning`: the keywords ``init_app`` takes beside ``redis=`` and
#: ``celery=``.
TUNING: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(Tuning)
TUNING_NAMES = tuple(f.name for f in TUNING)


def _tuning_fix(name: str) -> str:
    return f"pass AsyncState(app, {name}=...) or init_app(app, {name}=...)"


#: Keys removed in 0.2, each with what replaces it. ``init_app`` raises ``ValueError`` for
#: any of them still in ``app.config``, naming the replacement.
REMOVED: Mapping[str, str] = {
    "ASYNCSTATE_EAGER": "set ASYNCSTATE_EXECUTOR = 'inline'",
    "ASYNCSTATE_MAX_JOBS_PER_SESSION": "set ASYNCSTATE_MAX_JOBS_PER_OWNER (same meaning)",
    "ASYNCSTATE_OWNER": "decorate the function with @asyncstate.owner_loader",
    "ASYNCSTATE_BLUEPRINT_GUARD": "call asyncstate.guard(fn) (or use it as a decorator)",
    "ASYNCSTATE_ADMIN_GUARD": "call asyncstate.admin_guard(fn) (or use it as a decorator)",
    **{key_name(f.name): _tuning_fix(f.name) for f in TUNING if f.name != "max_streams_per_owner"},
    "ASYNCSTATE_MAX_STREAMS_PER_SESSION": _tuning_fix("max_streams_per_owner"),
}
