"""A demo sign-in with Flask-Login: a name is all it takes, no password.

It shows what the extension does with users: a signed-in user's jobs belong
to that user, so they are listed and can be cancelled from every browser the
user signs in on, and no one else sees them (their tokens answer 404). An
anonymous visitor's jobs belong to the browser session, as before. Signing
out cancels nothing: the jobs are there again at the next sign-in.

A real app replaces :func:`login` with its own authentication; the rest
(the user loader, ``login_user``/``logout_user`` and the new session id at
each change) stays the same.
"""

from __future__ import annotations

from flask import (
    Flask,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from . import i18n
from .pages import no_store

#: Longest name accepted (after stripping spaces).
MAX_NAME = 40

login_manager = LoginManager()


class User(UserMixin):
    """Whoever signed in under ``name``; kept nowhere but in the session (in memory per request)."""

    def __init__(self, name: str) -> None:
        self.id = name

    @property
    def name(self) -> str:
        return str(self.id)


def clean_name(raw: str | None) -> tuple[str | None, str | None]:
    """``(name, None)`` for an acceptable name, else ``(None, key of the error text)``."""
    name = (raw or "").strip()
    if not name:
        return None, "name_empty"
    if len(name) > MAX_NAME:
        return None, "name_too_long"
    return name, None


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """Any name signs in; a session naming something that is no valid name is anonymous."""
    name, problem = clean_name(user_id)
    return User(name) if name is not None and problem is None and name == user_id else None


def _new_session_id() -> None:
    """Give the session a new id at sign-in and sign-out, keeping its contents.

    Against session fixation: a session id someone planted in this browser
    before the sign-in is worth nothing after it (Flask-Session deletes the old
    entry). Flask's own cookie session has no server-side id to change.
    """
    regenerate = getattr(current_app.session_interface, "regenerate", None)
    if regenerate is not None:
        regenerate(session)


def init_app(app: Flask) -> None:
    """Flask-Login on ``app``, with ``/login`` and ``/logout`` (both forms CSRF-checked)."""
    login_manager.init_app(app)

    @app.get("/login")
    def login_form() -> Response:
        return no_store(
            render_template(
                "login.html",
                max_name=MAX_NAME,
                next=i18n.safe_next(request.args.get("next"), url_for("index")),
            )
        )

    @app.post("/login")
    def login():  # type: ignore[no-untyped-def]
        """Sign in under the name typed in (CSRFProtect has checked the form's token)."""
        target = i18n.safe_next(request.form.get("next"), url_for("index"))
        name, problem = clean_name(request.form.get("name"))
        if name is None:
            flash(i18n.text(problem or "name_empty", max=MAX_NAME), "error")
            return redirect(url_for("login_form", next=target))
        _new_session_id()
        login_user(User(name))
        flash(i18n.text("signed_in_flash", name=name))
        return redirect(target)

    @app.post("/logout")
    def logout():  # type: ignore[no-untyped-def]
        """Sign out; the user's jobs keep running (the extension cancels nothing here)."""
        if current_user.is_authenticated:
            logout_user()  # the extension gives this session a new anonymous owner
            _new_session_id()
            flash(i18n.text("signed_out_flash"))
        return redirect(url_for("index"))
