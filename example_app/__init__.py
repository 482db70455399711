"""Example: a product import like the one in Smartstore's docs, with a progress bar and cancel.

Run it with ``flask --app example_app run``. With no configuration it uses the
in-memory job store, a file-system session (Flask-Session + cachelib) in
``instance/sessions`` (mode 0700), and a secret key created once in
``instance/secret_key`` (mode 0600) that every worker on this machine shares.
Set ``REDIS_URL`` to put both jobs and sessions in Redis, and ``SECRET_KEY``
(the same value everywhere) to run instances on several machines that share jobs.
With Redis, ``ASYNCSTATE_EXECUTOR=rq`` or ``=celery`` runs the imports on workers
instead of the web processes: ``flask --app example_app asyncstate worker`` (RQ),
``celery -A example_app.celery_worker worker`` (Celery, broker ``REDIS_URL``).

The import's page comes three ways, linked from each other: ``/`` with jQuery (what
``asyncstate_widget`` brings), ``/htmx`` rendered on the server and kept current by htmx,
``/module`` as ``<asyncstate-progress>`` with no library. htmx is served from
``node_modules`` (``npm ci`` at the root of the checkout; without it the htmx page says so).

The import runs through ``job.iter`` (a cancel stops it within one product) and
is ``unique=True``: a second start while one is unfinished shows the running
one. Visitors may sign in under any name (``users.py``, Flask-Login, no
password: a demo): a signed-in user's jobs are the user's, listed and
cancellable from every browser they sign in on; an anonymous visitor's are the
browser session's. ``i18n.py`` has the page, the widget, the job's label and its
progress messages in English and French (the label and the messages in the language
of whoever started the import).

People copy this file, so it is hardened: CSRF protection on every form
(Flask-WTF: the import, sign-in, sign-out and language forms), a
``SameSite=Lax`` HttpOnly session cookie, a new session id at sign-in and
sign-out, a private session directory (Flask-Session data is unpickled:
whoever can write the session store can run code as the app), and
``Cache-Control: no-store`` on pages that carry job or CSRF tokens.
``docs/security.rst`` ("The example app") explains each.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from flask import (
    Flask,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user
from flask_session import Session
from flask_wtf.csrf import CSRFError, CSRFProtect

from flask_asyncstate import AsyncState, JobContext, QuotaExceeded

from . import i18n, users
from .pages import no_store, wants_json

asyncstate = AsyncState()
csrf = CSRFProtect()

#: The pages of the import, one per way to put the widget on a page: client -> endpoint.
CLIENTS = {"jquery": "index", "htmx": "htmx_page", "module": "module_page"}
#: htmx and its SSE extension, as ``npm ci`` installs them at the root of the checkout
#: (served by the app itself, never from a CDN).
NODE_MODULES = Path(__file__).resolve().parent.parent / "node_modules"
VENDOR = {
    "htmx.min.js": NODE_MODULES / "htmx.org" / "dist" / "htmx.min.js",
    "sse.js": NODE_MODULES / "htmx-ext-sse" / "dist" / "sse.js",
}

#: File in ``app.instance_path`` holding the secret key when ``SECRET_KEY`` is not set.
SECRET_KEY_FILE = "secret_key"
#: Shortest secret accepted from that file (``secrets.token_hex(32)`` writes 64 characters).
MIN_SECRET_LENGTH = 32
#: How long a worker that lost the race to create the secret waits for the winner's write.
SECRET_WAIT = 5.0


class InsecureStorage(RuntimeError):
    """A directory or file that holds secrets or sessions is open to other users."""


def _check_private(path: str, st: os.stat_result, refuse: int) -> None:
    """Refuse ``path`` unless this user owns it and none of the ``refuse`` mode bits are set."""
    if os.name != "posix":  # no uid or Unix mode bits to check (Windows uses ACLs)
        return
    if st.st_uid != os.geteuid():
        raise InsecureStorage(
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}):"
            " another user could plant session files or read the secret. Remove it, or set"
            " SESSION_DIR / SECRET_KEY to storage of your own."
        )
    if st.st_mode & refuse:
        wanted = "700" if stat.S_ISDIR(st.st_mode) else "600"
        raise InsecureStorage(
            f"{path} has mode {stat.S_IMODE(st.st_mode):o}: other users can get at it."
            f" chmod {wanted} {path}, or remove it and let the app create it."
        )


def private_dir(path: str, refuse: int = 0o077) -> str:
    """Create ``path`` with mode 0700, or check that an existing one is ours and closed to others.

    ``refuse`` are the mode bits that make it unsafe: 0o077 for a directory of
    session files (readable leaks their job ids and CSRF secrets, writable lets
    others plant pickles), 0o022 for the instance directory (others may list it,
    not swap what is in it).
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)  # follows a symlink: what matters is who owns the directory it points to
    if not stat.S_ISDIR(st.st_mode):
        raise InsecureStorage(f"{path} is not a directory")
    _check_private(path, st, refuse)
    return path


def _read_secret(path: str) -> str:
    """The secret in ``path``, waiting a moment if a racing worker created it but has not written it."""
    deadline = time.monotonic() + SECRET_WAIT
    while True:
        with open(path, encoding="ascii") as f:
            _check_private(path, os.fstat(f.fileno()), 0o077)
            value = f.read().strip()
        if len(value) >= MIN_SECRET_LENGTH:
            return value
        if time.monotonic() > deadline:
            raise InsecureStorage(
                f"{path} holds no secret of at least {MIN_SECRET_LENGTH} characters:"
                " delete it and start again (a new one is created), or set SECRET_KEY"
            )
        time.sleep(0.05)


def shared_secret_key(instance_path: str) -> str:
    """The secret key in ``instance_path/secret_key``, created once for every worker on this machine.

    O_CREAT|O_EXCL makes the creation atomic: of several workers starting at
    once exactly one creates the file (mode 0600) and writes the key; the
    others get ``FileExistsError`` and read the winner's key.
    """
    path = os.path.join(private_dir(instance_path, refuse=0o022), SECRET_KEY_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    value = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value)  # one small write: a reader sees all of it or nothing
        f.flush()
        os.fsync(f.fileno())
    return value


@dataclass
class ImportState:
    """Typed state the import keeps beside its progress (see the state API)."""

    imported: int = 0
    skipped: int = 0


def generate_catalogue(count: int) -> list[dict[str, object]]:
    """A made-up product catalogue, so the example needs no files."""
    return [
        {
            "sku": f"SKU-{i:05d}",
            "name": f"Product {i}",
            "price": round(1 + (i * 37 % 9900) / 100, 2),
        }
        for i in range(1, count + 1)
    ]


def import_catalogue(
    job: JobContext, count: int, batch: int, pause: float, lang: str = i18n.DEFAULT_LANGUAGE
) -> dict[str, int]:
    """Import ``count`` products, ``pause`` seconds per ``batch`` of them, reporting progress and
    honouring cancel.

    ``job.iter`` checks for a cancel before each product (raising ``JobCancelled``)
    and records the progress after each, with the message in the language of
    whoever started the import: a cancel stops the import within one product.
    The tally in the job's typed state is written once a batch.
    """
    rows = generate_catalogue(count)
    # in the starter's language: a worker running the job has no request to ask
    message = i18n.text("progress_message", lang if lang in i18n.LANGUAGES else "en")
    job.progress(0, total=count, message=message.format(current=0, total=count))
    per_row = pause / max(batch, 1)
    chunk: list[dict[str, object]] = []
    for row in job.iter(rows, message=message):
        time.sleep(per_row)  # stands in for the database write of one product
        chunk.append(row)
        if len(chunk) == batch or row is rows[-1]:
            tally(job, chunk)
            chunk = []
    return {"imported": count}


def tally(job: JobContext, chunk: list[dict[str, object]]) -> None:
    """Count a written batch in the job's typed state (one atomic update a batch)."""
    skipped = sum(1 for row in chunk if float(row["price"]) <= 1.0)  # type: ignore[arg-type]

    def add(state: ImportState) -> None:
        state.imported += len(chunk) - skipped
        state.skipped += skipped

    if job.state is not None:
        job.state.update(add)


#: What the jobs panel calls the import, in the language of whoever starts it ("Product
#: import", "Importation de produits"): looked up at each start(), not at import time.
IMPORT_LABEL = i18n.lazy_text("job_label")
#: The import: at most one unfinished per owner (a second start hands back the running one).
import_products = asyncstate.job(
    name="import_products", label=IMPORT_LABEL, state=ImportState, unique=True
)(import_catalogue)
#: The same import without that rule, for load tests that start many in one session
#: (``EXAMPLE_UNIQUE=0``): the session quota, not uniqueness, is what they exercise.
import_products_repeatable = asyncstate.job(
    name="import_products_repeatable", label=IMPORT_LABEL, state=ImportState
)(import_catalogue)


def _celery(app: Flask) -> object:
    """A Celery app on the jobs' Redis, JSON only (the Flask docs' pattern, one per Flask app)."""
    from celery import Celery

    broker = app.config.get("ASYNCSTATE_REDIS_URL")
    if not broker:
        raise RuntimeError("ASYNCSTATE_EXECUTOR=celery needs REDIS_URL (the broker and the store)")
    celery = Celery(app.import_name, broker=broker, set_as_current=False)
    celery.conf.update(task_serializer="json", accept_content=["json"])
    return celery


def tuning_from_env(prefix: str = "EXAMPLE_TUNING_") -> dict[str, object]:
    """flask-asyncstate's tuning keywords from ``EXAMPLE_TUNING_<KEYWORD>`` variables, such as
    ``EXAMPLE_TUNING_SSE_MAX_AGE=1.0`` for ``sse_max_age=1.0`` (values parsed as JSON, the way
    ``from_prefixed_env`` does; an unknown keyword fails in ``init_app``)."""
    tuning: dict[str, object] = {}
    for name, value in os.environ.items():
        if name.startswith(prefix):
            try:
                tuning[name[len(prefix) :].lower()] = json.loads(value)
            except ValueError:
                tuning[name[len(prefix) :].lower()] = value
    return tuning


def create_app(config: dict[str, object] | None = None, instance_path: str | None = None) -> Flask:
    """The example app; ``config`` overrides everything, ``instance_path`` moves the instance folder.

    ``ASYNCSTATE_*`` keys come from the environment as ``FLASK_ASYNCSTATE_*`` (say
    ``FLASK_ASYNCSTATE_MAX_WORKERS=8``), the extension's tuning keywords as
    ``EXAMPLE_TUNING_*`` (see :func:`tuning_from_env`).
    """
    app = Flask(__name__, instance_path=instance_path)
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY"),
        EXAMPLE_PRODUCTS=int(os.environ.get("EXAMPLE_PRODUCTS", "5000")),
        EXAMPLE_BATCH=int(os.environ.get("EXAMPLE_BATCH", "100")),
        EXAMPLE_PAUSE=float(os.environ.get("EXAMPLE_PAUSE", "0.1")),  # seconds per batch
        EXAMPLE_UNIQUE=os.environ.get("EXAMPLE_UNIQUE", "1") != "0",  # one import at a time
        SESSION_PERMANENT=False,
        # Lax: a cross-site POST (a form on another site) arrives without the session cookie
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,  # scripts on the page never see the session id
        # behind HTTPS also set FLASK_SESSION_COOKIE_SECURE=true (the dev server is plain HTTP)
    )
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        import redis

        # A blocking pool: under gevent hundreds of requests may want a session connection at
        # once; they wait for one (up to 5 s) instead of failing with MaxConnectionsError.
        sessions = redis.BlockingConnectionPool.from_url(redis_url, max_connections=100, timeout=5)
        app.config.update(
            ASYNCSTATE_REDIS_URL=redis_url,
            SESSION_TYPE="redis",
            SESSION_REDIS=redis.Redis(connection_pool=sessions),
        )
    # Where the imports run: "threads" (this process), "rq" or "celery" workers (need REDIS_URL).
    app.config["ASYNCSTATE_EXECUTOR"] = os.environ.get("ASYNCSTATE_EXECUTOR", "threads")
    app.config.from_prefixed_env()  # e.g. FLASK_ASYNCSTATE_MAX_WORKERS=8
    app.config.update(config or {})

    if not app.config.get("SECRET_KEY"):
        # Not a random key per process: gunicorn workers would not accept each other's tokens.
        app.config["SECRET_KEY"] = shared_secret_key(app.instance_path)
        app.logger.warning(
            "SECRET_KEY is not set: using the key in %s, shared by the processes of this"
            " machine only. Instances on several machines need the same SECRET_KEY.",
            os.path.join(app.instance_path, SECRET_KEY_FILE),
        )
    if not app.config.get("SESSION_TYPE"):
        from cachelib import FileSystemCache

        # Never a shared $TMPDIR path: these files are unpickled, so a planted one runs code.
        session_dir = os.environ.get("SESSION_DIR") or os.path.join(
            private_dir(app.instance_path, refuse=0o022), "sessions"
        )
        app.config.update(
            SESSION_TYPE="cachelib",
            SESSION_CACHELIB=FileSystemCache(private_dir(session_dir), mode=0o600),
        )

    Session(app)
    csrf.init_app(app)  # it checks asyncstate's cancel too (refused there with a JSON 403)
    asyncstate.init_app(
        app,
        celery=_celery(app) if app.config["ASYNCSTATE_EXECUTOR"] == "celery" else None,
        **tuning_from_env(),
    )
    users.init_app(app)  # Flask-Login: a signed-in user's jobs are the user's, in any browser
    i18n.init_app(app)  # English and French, switched with POST /language

    @app.errorhandler(CSRFError)
    def csrf_failed(exc: CSRFError) -> Response | tuple[dict[str, str], int]:
        """A JSON client gets a JSON 400; a browser gets Flask-WTF's page."""
        if wants_json():
            return {"error": str(exc.description)}, 400
        return exc.get_response()

    def import_page(client: str) -> Response:
        """The import, its widget put on the page the ``client`` way."""
        # mode "auto": push updates over Server-Sent Events, falling back to polling
        mode = "poll" if request.args.get("mode") == "poll" else "auto"
        if client == "module" and not asyncstate.app_state().streams.on():
            mode = "poll"  # no stream to ask for here (the Jinja global does the same)
        page = render_template(
            "index.html",
            token=request.args.get("token"),
            mode=mode,
            client=client,
            clients=CLIENTS,
            htmx_ready=all(path.is_file() for path in VENDOR.values()),
        )
        return no_store(page)

    @app.get("/")
    def index() -> Response:
        """The widget with jQuery (``asyncstate_widget`` brings it and the plugin)."""
        return import_page("jquery")

    @app.get("/htmx")
    def htmx_page() -> Response:
        """The widget rendered on the server and kept current by htmx (no script of ours)."""
        return import_page("htmx")

    @app.get("/module")
    def module_page() -> Response:
        """The widget as ``<asyncstate-progress>``, the plain module: no library at all."""
        return import_page("module")

    @app.get("/vendor/<any('htmx.min.js', 'sse.js'):name>")
    def vendor_script(name: str) -> Response:
        if not VENDOR[name].is_file():
            abort(404, f"{VENDOR[name]} is missing: run npm ci at the root of the checkout")
        return send_file(VENDOR[name], mimetype="text/javascript", max_age=3600)

    @app.post("/import")
    def start_import():  # type: ignore[no-untyped-def]
        """Start an import (CSRFProtect has checked the form field or X-CSRFToken header).

        A form is redirected to the page showing the import (post/redirect/get). A
        JSON client gets ``{"token": ...}``: 202 for a new import, 200 for the one
        already running, which a second start hands back instead of starting another.
        """
        page = CLIENTS.get(request.form.get("client", ""), "index")  # back to its own page
        job = import_products if app.config["EXAMPLE_UNIQUE"] else import_products_repeatable
        try:
            handle = job.start(
                app.config["EXAMPLE_PRODUCTS"],
                app.config["EXAMPLE_BATCH"],
                app.config["EXAMPLE_PAUSE"],
                i18n.current_language(),
            )
        except QuotaExceeded:
            if wants_json():
                raise  # the app-wide handler: 429 JSON with Retry-After
            flash(i18n.text("quota"), "error")  # a person at a form gets the message on the page
            return redirect(url_for(page))
        if wants_json():
            return {"token": handle.token}, 202 if handle.is_new else 200
        if not handle.is_new:
            flash(i18n.text("already_running"))
        return redirect(url_for(page, token=handle.token))

    @app.get("/my-jobs")
    def my_jobs() -> Response:
        """The owner's jobs (the signed-in user's, else this session's), each a live widget."""
        name = current_user.name if current_user.is_authenticated else None
        return no_store(render_template("jobs.html", user_name=name))

    return app
