"""The Flask extension object: registers the per-app state, blueprint, error answers and CLI."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, overload

from flask import Flask, has_app_context, request_started, session

from . import appstate, logs, metrics, owners, security, sessions, signals, templating, views
from .appstate import AppState
from .cli import asyncstate_cli
from .config import Settings, Tuning
from .errors import InvalidToken
from .jobs import JobHandle, TrackedJob
from .signals import send
from .state import StateAPI
from .stores import make_store
from .stores.base import Store


class AsyncState:
    """Tracked, cancellable jobs and shared typed state for Flask apps.

    The object is app-agnostic (like Flask-Login's ``LoginManager``): one can
    serve several apps (app factories). Everything per app lives in an
    :class:`~flask_asyncstate.appstate.AppState` in ``app.extensions["asyncstate"]``.

    ``redis`` and ``celery`` are passed to :meth:`init_app`; other keywords are
    tuning (:class:`~flask_asyncstate.config.Tuning`), for every app it is
    registered on: ``AsyncState(app, sse_max_age=1.0)``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        redis: Any = None,
        celery: Any = None,
        **tuning: Any,
    ) -> None:
        # Only to pick the app outside an app context when there is exactly one.
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        # Jobs by name: what a worker process runs when a queue entry names one.
        self._registered: dict[str, TrackedJob] = {}
        #: A "Try again" is due that its instance had no room for (see :meth:`runs_again`).
        self.waiting_again = False
        # The tuning keywords given here: every app's, unless its init_app says otherwise.
        self._tuning = Tuning().replace(**tuning)
        #: Set by :meth:`guard`: run before every route of the blueprint.
        self.blueprint_guard: Callable[..., Any] | None = None
        #: Set by :meth:`admin_guard`: turns the operator's page on, and guards it.
        self.admin_page_guard: Callable[..., Any] | None = None
        #: Set by :meth:`owner_loader`: names the owner of a job started in a request.
        self.owner_callback: Callable[[], Any] | None = None
        if app is not None:
            self.init_app(app, redis=redis, celery=celery)

    def init_app(self, app: Flask, *, redis: Any = None, celery: Any = None, **tuning: Any) -> None:
        """Register the extension on ``app``; reads the ``ASYNCSTATE_*`` keys once
        (see :doc:`config`).

        :param redis: a client to use instead of ``ASYNCSTATE_REDIS_URL``: a ``redis.Redis``,
            a ``redis.cluster.RedisCluster``, or a Sentinel ``master_for(...)`` client.
        :param celery: a Celery app whose workers run the jobs: registers the task that
            runs them, and makes ``"celery"`` the default of ``ASYNCSTATE_EXECUTOR``.
        :param tuning: internal tuning for this app, over the keywords given to
            :class:`AsyncState` (see :class:`~flask_asyncstate.config.Tuning`), such as
            ``sse_max_age=1.0``. An unknown keyword raises ``TypeError``.
        :raises ValueError: for a bad value, or a key removed in 0.2 (naming what
            replaces it); ``TypeError`` for a value of the wrong kind.
        """
        if appstate.EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'AsyncState' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        if celery is not None:
            app.config.setdefault("ASYNCSTATE_EXECUTOR", "celery")
        settings = Settings.from_config(app.config, self._tuning.replace(**tuning))
        store = make_store(settings, redis)
        try:
            found = AppState(app, self, settings, store, celery=celery)
        except BaseException:
            store.close()
            raise
        app.extensions[appstate.EXTENSION_KEY] = found
        self._apps.add(app)
        logs.install()  # job ids on log records, once per process
        metrics.install(found)  # with prometheus_client: in its default registry, once per process
        self._register_web(app, settings)
        app_ref = weakref.ref(app)
        if hasattr(store, "on_circuit_change"):
            store.on_circuit_change = lambda old, new: send(
                signals.store_circuit_changed, app_ref(), old=old, new=new
            )
        try:
            from flask_login import user_logged_out
        except ImportError:
            pass
        else:
            user_logged_out.connect(_forget_owner_on_logout, sender=app)

    def _register_web(self, app: Flask, settings: Settings) -> None:
        """The blueprint (its error answers are app-wide), the Jinja globals, the CLI, and
        the session interface's wrapper."""
        app.register_blueprint(views.bp, url_prefix=settings.url_prefix)
        found = appstate.get(app)
        app.jinja_env.globals.update(
            asyncstate_widget=functools.partial(templating.widget, found),
            asyncstate_jobs=functools.partial(templating.jobs_panel, found),
            asyncstate_assets=templating.assets,
        )
        app.cli.add_command(asyncstate_cli)
        sessions.guard(app, settings.url_prefix)
        request_started.connect(_look_again, app)

    # -- the per-app state ------------------------------------------------------

    def app_state(self, app: Flask | None = None) -> AppState:
        """The per-app state: the current app's, or the only app's outside an app context."""
        if app is None and not has_app_context():
            apps = list(self._apps)
            if len(apps) != 1:
                raise RuntimeError(
                    "No Flask app context: push one (with app.app_context():) to pick the app."
                )
            app = apps[0]
        found = appstate.get(app)
        if found.extension is not self:
            raise RuntimeError(
                "The current Flask app is not registered with this 'AsyncState' instance."
                " Did you forget to call 'init_app', or did you create multiple"
                " 'AsyncState' instances?"
            )
        return found

    @property
    def state(self) -> StateAPI:
        """The typed state API (create / update / get / contains / get_all / cancel / remove)."""
        return self.app_state().state

    @property
    def store(self) -> Store:
        """The current app's raw store (what the state API and the job records sit on)."""
        return self.app_state().store

    # -- jobs ----------------------------------------------------------------

    @overload
    def job(self, fn: Callable[..., Any]) -> TrackedJob: ...

    @overload
    def job(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        never_expires: bool = False,
        state: type | None = None,
        timeout: float | None = None,
        unique: bool | str = False,
        render_result: Any = None,
        label: Any = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        backoff: float = 1.0,
        resumable: bool | int = False,
        queue: str | None = None,
        cancel_grace: float | None = None,
        try_again: bool = True,
    ) -> Callable[[Callable[..., Any]], TrackedJob]: ...

    def job(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        never_expires: bool = False,
        state: type | None = None,
        timeout: float | None = None,
        unique: bool | str = False,
        render_result: Any = None,
        label: Any = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        backoff: float = 1.0,
        resumable: bool | int = False,
        queue: str | None = None,
        cancel_grace: float | None = None,
        try_again: bool = True,
    ) -> TrackedJob | Callable[[Callable[..., Any]], TrackedJob]:
        """Decorate a function ``fn(job, *args)`` as a tracked job.

        :param name: the job's identifier (default: the function name): what a worker
            looks the job up by, so unique among one extension's jobs, and kept when the
            job is renamed for users (give it a ``label``). Documents carry it as ``name``.
        :param label: what users see (the jobs panel, the admin page): a string, or a lazy
            one (Flask-Babel's ``lazy_gettext``) turned into text at each ``start()``, in
            the starting request's locale. Documents carry it as ``label`` (default: the
            name).
        :param never_expires: keep the job's document until it is removed.
        :param state: a state type; the job gets ``job.state`` bound to an entry of it.
        :param timeout: seconds the job may run: then its cancel Event is set, and it ends
            ``failed`` with a ``JobTimeout`` error (see :mod:`flask_asyncstate.timeouts`).
        :param unique: ``True``: at most one unfinished job of this name per owner (user or
            session); ``"app"``: at most one in the whole app, across instances. ``start()``
            then returns the unfinished job's handle, with ``handle.is_new`` False.
        :param render_result: what the widget shows under the bar once the job succeeded
            (and on a reload): a template name, rendered with ``result`` and ``job``, or a
            callable taking the result (see :mod:`flask_asyncstate.templating`).
        :param retries: run again up to this many times after a run raised one of
            ``retry_on`` (default: any exception; never a cancel), with the same id and
            token, after ``backoff * 2**(k-1)`` seconds (jittered, capped at an hour).
            Meanwhile ``status`` is ``queued`` and ``retry_at`` says when.
        :param resumable: when the process running the job dies or shuts down (a deploy),
            the job goes back to the queue and the first instance or worker that sees it
            runs it again; ``job.iter()`` goes on after the items done (``job.cursor``).
            ``True``: at most 3 resumes; a number: that many.
        :param queue: on RQ or Celery, the queue its runs go to (workers:
            ``flask asyncstate worker --queue NAME``).
        :param cancel_grace: on RQ's forking worker or Celery's prefork pool, seconds a job
            may run on after a cancel before its process is ended (``reason: "forced"``).
            See :doc:`failures`.
        :param try_again: ``False``: no "Try again" of this job once it ended (work that
            must never run twice); retries and resumes are not affected.
        """

        def decorate(f: Callable[..., Any]) -> TrackedJob:
            tracked = TrackedJob(
                self,
                f,
                name=name,
                never_expires=never_expires,
                state=state,
                timeout=timeout,
                unique=unique,
                render_result=render_result,
                label=label,
                retries=retries,
                retry_on=retry_on,
                backoff=backoff,
                resumable=resumable,
                queue=queue,
                cancel_grace=cancel_grace,
                try_again=try_again,
            )
            known = self._registered.get(tracked.name)
            if known is not None and _origin(known.fn) != _origin(f):
                raise ValueError(
                    f"a job named {tracked.name!r} is already defined ({_origin(known.fn)}):"
                    " workers look jobs up by name, so give this one another name="
                )
            self._registered[tracked.name] = tracked  # a module imported again replaces it
            return tracked

        return decorate(fn) if fn is not None else decorate

    def runs_again(self) -> bool:
        """Whether any job may run again by itself (``retries=``, ``resumable=``), or by a
        "Try again" that found no room where it was asked: the writer then looks for due
        jobs (a round trip a second); other apps pay nothing for the feature."""
        return self.waiting_again or any(j.retries or j.resumes for j in self._registered.values())

    def has_results(self) -> bool:
        """Whether any job declared ``render_result`` (else widgets need not read the job)."""
        return any(job.render_result is not None for job in self._registered.values())

    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Run ``fn`` before every route of the blueprint (its static files aside); usable
        as a decorator. ``asyncstate.guard(login_required)``.

        ``fn`` is a view decorator such as Flask-Login's ``login_required``, or a check of
        no arguments: ``True`` or ``None`` allow, ``False`` refuses with a JSON 403, a
        response refuses with that (a redirect to a login page becomes ``401`` with
        ``login_url``). See :ref:`operating-guards`.
        """
        self.blueprint_guard = _callable("guard", fn)
        return fn

    def admin_guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Turn on the operator's page, ``<prefix>/admin``, guarded by ``fn``; usable as a
        decorator. Until it is called the page answers 404.

        ``fn`` is a view decorator or a check, as for :meth:`guard`; a refusal of the page
        itself is passed on as is, so a redirect to a login page works. See :ref:`operating-admin`.
        """
        self.admin_page_guard = _callable("admin_guard", fn)
        return fn

    def owner_loader(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Decorate the function that names the owner of a job started in a request, as
        Flask-Login's ``user_loader``.

        It is called in that request and returns an owner id (a ``str`` or ``int``), or
        ``None`` for the browser session. Jobs of one owner id are visible, cancellable and
        listed from every session that gets the same id, and count against one quota
        (``ASYNCSTATE_MAX_JOBS_PER_OWNER``). Without one, the Flask-Login user owns the
        jobs when Flask-Login is set up and a user is logged in, else the session (see
        :ref:`jobs-owners`)::

            @asyncstate.owner_loader
            def team_owner():
                return current_user.team_id if current_user.is_authenticated else None
        """
        self.owner_callback = _callable("owner_loader", fn)
        return fn

    def registered_job(self, name: str) -> TrackedJob | None:
        """The job decorated under ``name``, for a worker running a queue entry."""
        return self._registered.get(name)

    def handle(self, token: str) -> JobHandle:
        """A handle on the job a token names; raises :class:`InvalidToken` if it is bad."""
        found = self.app_state()
        return found.job_handle(found.signer.unsign(token))

    def owned(self, token: Any) -> JobHandle | None:
        """The job of ``token`` if it belongs to the current owner (the request's user, or its
        session), else None: forged, expired, unknown, or another owner's.

        The check an app's own routes use before acting on a token from the browser (a
        download link, say); :meth:`handle` checks the signature only, for code outside
        a request. Needs a request context.
        """
        if not isinstance(token, str):
            return None
        try:
            job_id, _doc = security.visible_job(self.app_state(), token)
        except InvalidToken:
            return None
        return self.app_state().job_handle(job_id)

    def status(self, token: str) -> dict[str, Any] | None:
        """The progress document of a token's job (None if unknown or expired)."""
        return self.handle(token).status()

    def cancel(self, token: str) -> bool:
        """Request cancellation of a token's job from any instance; False if unknown."""
        return self.handle(token).cancel()

    def jobs(self) -> list[dict[str, Any]]:
        """The current owner's jobs (the user's, or the session's), newest first, each with
        its ``token``.

        Unfinished ones and the ``ASYNCSTATE_MAX_JOBS_PER_OWNER`` newest finished ones.
        """
        found = self.app_state()
        owner = found.request_owner(create=False)
        if owner is None:
            return []
        out = []
        finished = found.settings.max_jobs_per_owner
        for job_id, doc in found.records.owner_documents(owner, finished):
            for internal in ("owner", "instance", "unique"):
                doc.pop(internal)
            out.append(dict(doc, token=found.signer.sign(job_id)))
        return out

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop every app's jobs: cancel running jobs, wait, write ``lost`` for the rest."""
        for app in list(self._apps):
            appstate.get(app).shutdown(timeout)


def _callable(method: str, fn: Any) -> Any:
    if not callable(fn):
        raise TypeError(
            f"asyncstate.{method}() takes a callable (use it as a decorator), got {fn!r}"
        )
    return fn


def _origin(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def _look_again(sender: Flask, **extra: Any) -> None:
    """A request: an instance that serves the app looks for its jobs due to run again and
    for resumable jobs of dead instances (its writer), even before it starts a job itself:
    after a deploy, the new instances are the ones that must find them."""
    found = appstate.get(sender)
    if found.writer.alive or found.closed or not found.extension.runs_again():
        return
    try:
        found.ensure_running()
    except RuntimeError:  # shut down meanwhile
        pass


def _forget_owner_on_logout(sender: Flask, **extra: Any) -> None:
    """Flask-Login's ``user_logged_out``: this session's next jobs belong to someone new."""
    owners.forget_owner(session)
