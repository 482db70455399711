"""The ``ASYNCSTATE_*`` configuration keys, their defaults, and their validation (read once per app).

Each key is a module constant named like the key, holding its default and
documented by the ``#:`` comment above it: the configuration page of the docs
is built from these comments. :data:`DEFAULTS` collects the constants, and
:meth:`Settings.from_config` reads and checks an app's values once, in
``init_app``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config_checks import (
    _executor,
    _guard,
    _keep_finished,
    _nonempty,
    _owner,
    _positive,
    _sentinels,
    _streams,
    _url_prefix,
)

if TYPE_CHECKING:
    from .stores.base import Store

#: The Redis that keeps jobs and state, as a redis-py URL such as
#: ``"redis://redis:6379/0"`` (``rediss://`` and the other redis-py forms work); needs the
#: ``redis`` extra. ``None`` keeps them in process memory, seen by the threads of one
#: process only: set it as soon as more than one process serves the app. A client passed
#: as ``init_app(app, redis=client)`` wins over this key, and :data:`ASYNCSTATE_STORE` over
#: both (see :doc:`deployment`).
#:
#: The client built from the URL is the patient one, for background work (the writer
#: thread, the cancel listener, job code in pool threads): 2 s to connect, 5 s per command,
#: and two quick retries, so nothing is lost to a short hiccup. Calls made while serving a
#: request use a second client derived from it, with the waits of
#: :data:`ASYNCSTATE_REDIS_TIMEOUT`, behind a circuit breaker (see :ref:`deployment-stalls`).
ASYNCSTATE_REDIS_URL: str | None = None

#: Prefix of every store key, and of the Redis channels ``<prefix>cancel`` and
#: ``<prefix>changed:<key>`` (one per entry, heard where the entry is watched). The instances of one app must share it; different apps (or test
#: runs) on one Redis should each have their own. A store class named by
#: :data:`ASYNCSTATE_STORE` gets it as ``key_prefix``.
ASYNCSTATE_KEY_PREFIX: str = "asyncstate:"

#: Threads that run jobs, per app and per process: the daemon threads of the default
#: executor (``flask_asyncstate.executors.ThreadExecutor``). Further jobs wait as ``queued``
#: (at most :data:`ASYNCSTATE_MAX_QUEUED` of them). Raise it for jobs that mostly wait on
#: I/O; CPU-bound Python jobs share one GIL, so more threads do not make them faster.
ASYNCSTATE_MAX_WORKERS: int = 4

#: Sliding expiry, in seconds, of job documents, state entries and owners' job indexes:
#: one that is neither read nor written for this long (15 minutes by default) disappears.
#: Running jobs are kept alive by the heartbeat; ``never_expires=True`` opts a job or an
#: entry out. Raise it if users come back to finished jobs later than that. A store class
#: named by :data:`ASYNCSTATE_STORE` gets it as ``expires``.
ASYNCSTATE_EXPIRES: float = 900

#: Seconds between two writes of buffered progress to the store (by the writer thread of
#: each app and process); final statuses that met a store outage are retried as often.
#: Readers see progress up to one interval late. Lower means fresher progress and more
#: writes; higher, fewer writes.
ASYNCSTATE_FLUSH_INTERVAL: float = 0.25

#: Seconds between two heartbeats of a process that runs jobs (it refreshes its instance
#: entry, which expires 2.75 intervals after the last beat). After three missed beats, about
#: 15 s by default, every reader reports that instance's unfinished jobs ``lost``. Lower it
#: to notice a dead instance sooner, at the cost of more writes.
ASYNCSTATE_HEARTBEAT_INTERVAL: float = 5.0

#: Unfinished (``queued`` or ``running``) jobs one *owner* may have: a browser session, or
#: with Flask-Login the logged-in user across all of their sessions, or whoever
#: :data:`ASYNCSTATE_OWNER` names (see :ref:`concepts-ownership`). Starting
#: one more in a request raises :exc:`~flask_asyncstate.QuotaExceeded` (429,
#: ``Retry-After: 5``) and leaves nothing behind. The count is kept atomically in the
#: store, so simultaneous starts of one owner, on any number of threads or instances,
#: accept exactly this many. Jobs started outside a request have no owner and are not
#: counted.
#:
#: It also sets how many finished jobs ``/jobs`` and :meth:`AsyncState.jobs()
#: <flask_asyncstate.AsyncState.jobs>` list beside the unfinished ones: the newest this many.
ASYNCSTATE_MAX_JOBS_PER_SESSION: int = 5

#: Where the blueprint is mounted: an absolute path such as ``"/asyncstate"`` or
#: ``"/api/jobs"``; a trailing slash is ignored. The blueprint answers every unknown path
#: under it with a JSON 404, so an empty prefix or ``"/"`` would take over your app's 404
#: pages: ``init_app`` raises ``ValueError`` for those and for a relative path
#: (``"asyncstate"``). Change it when ``/asyncstate`` clashes with your routes.
ASYNCSTATE_URL_PREFIX: str = "/asyncstate"

#: Seconds a job token stays valid after it was signed; ``None``, the default, sets no
#: limit. An older token answers 404 and raises :exc:`~flask_asyncstate.InvalidToken`. The
#: token from ``start()`` is signed then; the tokens in :meth:`AsyncState.jobs()
#: <flask_asyncstate.AsyncState.jobs>` and ``/jobs`` are signed afresh on each call. Set it
#: when a token handed out should stop working after a while, even for its own session.
ASYNCSTATE_TOKEN_MAX_AGE: float | None = None

#: Run each job inline, in the thread that calls ``start()``, which returns once the job
#: has finished (``flask_asyncstate.executors.InlineExecutor`` instead of the thread
#: pool). For tests only: see :doc:`testing`.
ASYNCSTATE_EAGER: bool = False

#: Largest encoded (UTF-8 JSON) state entry or job document, in bytes (64 KiB). A bigger
#: state raises :exc:`~flask_asyncstate.StateTooLarge`; a job whose result makes its
#: document bigger ends ``failed``. Keep big data in your database and store its id rather
#: than raising it. A store class named by :data:`ASYNCSTATE_STORE` gets it as
#: ``max_entry_size``.
ASYNCSTATE_MAX_ENTRY_SIZE: int = 64 * 1024

#: Seconds shutdown waits for running jobs, after setting their cancel Events, before it
#: records them as ``lost``. Keep it below the time your process manager allows for a
#: graceful stop (see :doc:`deployment`).
ASYNCSTATE_SHUTDOWN_TIMEOUT: float = 10.0

#: Longest life, in seconds, of one ``/events/<token>`` stream. After that, even if the
#: job is still running, the server sends an ``event: reconnect`` frame and closes the
#: stream, and the widget opens a new one. The default stays below gunicorn's default
#: graceful timeout (30 s), so a stream never holds a stopping worker past it by itself;
#: keep it below yours.
ASYNCSTATE_SSE_MAX_AGE: float = 25.0

#: Seconds between two ``: ping`` comments of an ``/events/<token>`` stream. Keep it below
#: your proxies' idle timeouts; it is also how the server notices a closed page and frees
#: the thread.
ASYNCSTATE_SSE_PING_INTERVAL: float = 15.0

#: Jobs one process (per app) holds admitted but not yet taken up by a pool thread: the
#: ``queued`` ones waiting for one of the :data:`ASYNCSTATE_MAX_WORKERS` threads. Beyond it
#: ``start()`` raises :exc:`~flask_asyncstate.QueueFull` before anything is written, in a
#: request or outside one, and the app-wide error handler answers a JSON 503 with
#: ``Retry-After: 5``. It is what bounds the work a flood of requests without cookies can
#: queue on one instance, since every such request is a new session with a quota of its
#: own (see :doc:`security`). With :data:`ASYNCSTATE_EXECUTOR` ``"rq"`` or ``"celery"`` it
#: bounds instead the jobs waiting for a worker, app-wide (counted atomically in the store):
#: beyond it ``start()`` raises :exc:`~flask_asyncstate.QueueFull` the same way.
ASYNCSTATE_MAX_QUEUED: int = 1000

#: ``/events/<token>`` streams one process (per app) keeps open at once; ``0`` turns
#: streams off. Each holds a server thread (or, with gevent workers, a greenlet) for up to
#: :data:`ASYNCSTATE_SSE_MAX_AGE`, which is why the limit is per process: it protects that
#: process's threads. ``None`` (the default) decides at the first stream: 1000 where a
#: stream costs no thread (gevent or eventlet patched the process), else ``0``: on a
#: threaded server (gunicorn ``gthread`` or ``sync``, waitress, the dev server) streams
#: are off and every widget polls, so they can never hold the threads the app's other
#: pages need. On a threaded server set it only well below your thread count. Beyond it a
#: stream request answers a JSON 429 with ``Retry-After: 10`` at once, and the widget's
#: ``auto`` mode polls instead (see :ref:`frontend-transient` and :doc:`deployment`).
ASYNCSTATE_MAX_STREAMS: int | None = None

#: Streams one owner (a session, or a logged-in user) may keep open in one process
#: at once, so that one browser with many tabs cannot take all of
#: :data:`ASYNCSTATE_MAX_STREAMS`. Beyond it: the same JSON 429 with ``Retry-After: 10``.
#: The count is per process, not across instances.
ASYNCSTATE_MAX_STREAMS_PER_SESSION: int = 4

#: Longest wait, in seconds, of one Redis call made while serving a request (the
#: blueprint's routes, ``/events`` streams included, and whatever your views call:
#: ``start()``, the state API, :meth:`AsyncState.status()
#: <flask_asyncstate.AsyncState.status>`...): half of it to connect and half for the reply.
#: Such calls use a client derived from the configured one with these timeouts, no retry
#: after a timeout and one immediate retry after a dropped connection; background work
#: keeps the patient client. Has no effect with the in-memory store or a store from
#: :data:`ASYNCSTATE_STORE`. See :ref:`deployment-stalls`.
ASYNCSTATE_REDIS_TIMEOUT: float = 1.0

#: Consecutive timeouts or connection errors of request-path Redis calls after which the
#: circuit breaker opens: further request-path calls fail at once with
#: :exc:`~flask_asyncstate.StoreUnavailable` (a JSON 503) instead of each waiting out
#: :data:`ASYNCSTATE_REDIS_TIMEOUT`. Other Redis errors do not count. The breaker is per
#: process (per app), and only for Redis.
ASYNCSTATE_CIRCUIT_FAILURES: int = 3

#: Seconds an open circuit fails calls at once before it lets one probe call through (one
#: at a time; the others keep failing at once). A probe that succeeds closes the circuit;
#: one that fails opens it again for this long. ``Retry-After`` on every 503 for an
#: unavailable store (the job store, or the session store under the prefix) is this value
#: rounded up, at least 1.
ASYNCSTATE_CIRCUIT_RESET: float = 2.0

#: The store to use instead of the built-in ones: a :class:`~flask_asyncstate.stores.Store`
#: instance, a :class:`~flask_asyncstate.stores.Store` subclass, or an import string naming
#: either (``"myapp.stores.DynamoStore"``, the way Flask-Caching's ``CACHE_TYPE`` works). A
#: class is constructed with ``key_prefix``, ``expires`` and ``max_entry_size`` from
#: :data:`ASYNCSTATE_KEY_PREFIX`, :data:`ASYNCSTATE_EXPIRES` and
#: :data:`ASYNCSTATE_MAX_ENTRY_SIZE`. An instance is used as given, with its own options;
#: give each app its own, since it is closed when that app shuts down. Anything else
#: raises ``TypeError`` in ``init_app``.
#:
#: When set, it wins over :data:`ASYNCSTATE_REDIS_URL` and a client passed to
#: ``init_app``, and the Redis keys :data:`ASYNCSTATE_REDIS_TIMEOUT`,
#: :data:`ASYNCSTATE_CIRCUIT_FAILURES` and :data:`ASYNCSTATE_CIRCUIT_RESET` do not apply.
#: ``None``, the default, picks Redis or memory as described above. See
#: :ref:`writing-a-store`.
ASYNCSTATE_STORE: Store | type[Store] | str | None = None

#: Sentinels to ask for the Redis master, as ``["host:port", ...]``, instead of
#: :data:`ASYNCSTATE_REDIS_URL`; with :data:`ASYNCSTATE_REDIS_SENTINEL_MASTER`. After a
#: failover every client (the writer, the listener, request-path calls) follows the new
#: master. For passwords or TLS, pass ``redis=Sentinel([...], ...).master_for(...)``
#: instead (see :ref:`deployment-topologies`).
ASYNCSTATE_REDIS_SENTINELS: list[str] | None = None

#: The master's name the sentinels monitor (``sentinel monitor <name> ...``).
ASYNCSTATE_REDIS_SENTINEL_MASTER: str = "mymaster"

#: Where jobs run: ``"threads"`` (the default: a pool of :data:`ASYNCSTATE_MAX_WORKERS`
#: threads in each web process), ``"rq"`` (RQ workers on the store's Redis, started with
#: ``flask --app APP asyncstate worker``) or ``"celery"`` (the Celery app given as
#: ``AsyncState(app, celery=celery_app)``; workers started with ``celery -A MODULE
#: worker``). Tokens, documents, routes, cancel and signals are the same whichever runs
#: the job. ``"rq"`` and ``"celery"`` need a shared store (:data:`ASYNCSTATE_REDIS_URL`)
#: and the ``rq`` or ``celery`` extra. :data:`ASYNCSTATE_EAGER` wins over it. See
#: :ref:`deployment-workers`.
ASYNCSTATE_EXECUTOR: str = "threads"

#: The RQ queue jobs go to with ``ASYNCSTATE_EXECUTOR = "rq"``; ``flask asyncstate worker``
#: listens on it unless given ``--queue``. Apps sharing one Redis need a queue each.
ASYNCSTATE_RQ_QUEUE: str = "asyncstate"

#: Seconds a job declared with ``@asyncstate.job(timeout=...)`` is given, after its cancel
#: Event was set at the deadline, to stop by itself before it is recorded ``failed`` with
#: a ``JobTimeout`` error anyway. RQ and Celery also enforce the deadline plus twice this:
#: RQ raises ``JobTimeoutException`` in the job then (and kills the work horse a minute
#: later), Celery's soft limit (deadline plus this) raises in the job and its hard limit
#: kills the pool process.
ASYNCSTATE_TIMEOUT_GRACE: float = 5.0

#: Who owns a job started in a request: a callable (or an import string naming one) that
#: returns an owner id (a ``str`` or ``int``) or ``None``, called in that request. Jobs of
#: one owner id are visible, cancellable and listed (``/jobs``, :meth:`AsyncState.jobs()
#: <flask_asyncstate.AsyncState.jobs>`) from every session that gets the same id, and
#: count against one quota (:data:`ASYNCSTATE_MAX_JOBS_PER_SESSION`); ``None`` means the
#: browser session owns it. ``None`` for the key itself (the default) means: the
#: Flask-Login user when Flask-Login is set up and a user is logged in, else the session
#: (see :ref:`concepts-ownership`). ``lambda: current_user.get_id() if
#: current_user.is_authenticated else None`` is that default spelled out.
ASYNCSTATE_OWNER: Any = None

#: Seconds a finished job stays (and stays listed by ``/jobs``) after it was last read; the
#: default ``None`` means :data:`ASYNCSTATE_EXPIRES`. Raise it (say ``86400``) for a
#: "Your exports" list that must remember files for a day (it lists the newest
#: :data:`ASYNCSTATE_MAX_JOBS_PER_SESSION` finished jobs of an owner); a user dismisses
#: one sooner with ``DELETE <prefix>/jobs/<token>``, and code with
#: :meth:`JobHandle.forget() <flask_asyncstate.JobHandle.forget>`.
ASYNCSTATE_KEEP_FINISHED: float | None = None

#: A guard run before every route of the blueprint except its static files, such as
#: Flask-Login's ``login_required`` (a view decorator) or a function of no arguments
#: that returns ``None`` to allow, or a response to refuse. A refusal is answered as JSON:
#: a redirect (a login page) becomes ``401`` with ``login_url``, anything else keeps its
#: status. :meth:`AsyncState.guard() <flask_asyncstate.AsyncState.guard>` sets it in code.
ASYNCSTATE_BLUEPRINT_GUARD: Any = None

#: Turns on the operator's page, ``<prefix>/admin`` (every job of every instance, the
#: instances' heartbeats, cancel), guarded by this callable: a view decorator or a check,
#: as for :data:`ASYNCSTATE_BLUEPRINT_GUARD` (a refusal of the page itself is passed on
#: as is, so a redirect to a login page works). ``None`` (the default): no such page.
ASYNCSTATE_ADMIN_GUARD: Any = None

#: Every key with its default, in the order above; ``init_app`` sets these with
#: ``app.config.setdefault``.
DEFAULTS: dict[str, Any] = {
    name: value for name, value in globals().items() if name.startswith("ASYNCSTATE_")
}


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one app."""

    redis_url: str | None
    key_prefix: str
    max_workers: int
    expires: float
    flush_interval: float
    heartbeat_interval: float
    max_jobs_per_session: int
    url_prefix: str
    token_max_age: float | None
    eager: bool
    max_entry_size: int
    shutdown_timeout: float
    sse_max_age: float
    sse_ping_interval: float
    max_queued: int
    max_streams: int | None
    max_streams_per_session: int
    redis_timeout: float
    circuit_failures: int
    circuit_reset: float
    store: Any
    redis_sentinels: tuple[tuple[str, int], ...] | None
    redis_sentinel_master: str
    executor: str
    rq_queue: str
    timeout_grace: float
    owner: Any
    keep_finished: float | None
    blueprint_guard: Any
    admin_guard: Any

    @classmethod
    def from_config(cls, config: Any) -> Settings:
        for key, value in DEFAULTS.items():
            config.setdefault(key, value)
        max_age = config["ASYNCSTATE_TOKEN_MAX_AGE"]
        return cls(
            redis_url=config["ASYNCSTATE_REDIS_URL"] or None,
            key_prefix=str(config["ASYNCSTATE_KEY_PREFIX"]),
            max_workers=_positive(config, "ASYNCSTATE_MAX_WORKERS", int),
            expires=_positive(config, "ASYNCSTATE_EXPIRES"),
            flush_interval=_positive(config, "ASYNCSTATE_FLUSH_INTERVAL"),
            heartbeat_interval=_positive(config, "ASYNCSTATE_HEARTBEAT_INTERVAL"),
            max_jobs_per_session=_positive(config, "ASYNCSTATE_MAX_JOBS_PER_SESSION", int),
            url_prefix=_url_prefix(config),
            token_max_age=None
            if max_age is None
            else _positive(config, "ASYNCSTATE_TOKEN_MAX_AGE"),
            eager=bool(config["ASYNCSTATE_EAGER"]),
            max_entry_size=_positive(config, "ASYNCSTATE_MAX_ENTRY_SIZE", int),
            shutdown_timeout=_positive(config, "ASYNCSTATE_SHUTDOWN_TIMEOUT"),
            sse_max_age=_positive(config, "ASYNCSTATE_SSE_MAX_AGE"),
            sse_ping_interval=_positive(config, "ASYNCSTATE_SSE_PING_INTERVAL"),
            max_queued=_positive(config, "ASYNCSTATE_MAX_QUEUED", int),
            max_streams=_streams(config),
            max_streams_per_session=_positive(config, "ASYNCSTATE_MAX_STREAMS_PER_SESSION", int),
            redis_timeout=_positive(config, "ASYNCSTATE_REDIS_TIMEOUT"),
            circuit_failures=_positive(config, "ASYNCSTATE_CIRCUIT_FAILURES", int),
            circuit_reset=_positive(config, "ASYNCSTATE_CIRCUIT_RESET"),
            store=config["ASYNCSTATE_STORE"],
            redis_sentinels=_sentinels(config),
            redis_sentinel_master=_nonempty(config, "ASYNCSTATE_REDIS_SENTINEL_MASTER"),
            executor=_executor(config),
            rq_queue=_nonempty(config, "ASYNCSTATE_RQ_QUEUE"),
            timeout_grace=_positive(config, "ASYNCSTATE_TIMEOUT_GRACE"),
            owner=_owner(config),
            keep_finished=_keep_finished(config),
            blueprint_guard=_guard(config, "ASYNCSTATE_BLUEPRINT_GUARD"),
            admin_guard=_guard(config, "ASYNCSTATE_ADMIN_GUARD"),
        )
