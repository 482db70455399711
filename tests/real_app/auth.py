"""Sign-in by name only (a stand-in for the app's real authentication), CSRF-checked."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length

from .extensions import asyncstate, login_manager

bp = Blueprint("auth", __name__)


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name

    @property
    def name(self) -> str:
        return str(self.id)


class LoginForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=40)])
    next = HiddenField()


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return User(user_id) if user_id and len(user_id) <= 40 else None


@asyncstate.admin_guard
def admin_only() -> object:
    """The operator's page is for the user named "admin" only."""
    if not current_user.is_authenticated:
        return login_manager.unauthorized()  # a redirect to the sign-in page
    if current_user.get_id() != "admin":
        return "forbidden", 403
    return None


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host) is followed after signing in."""
    parts = urlsplit(target or "")
    if target and target.startswith("/") and not parts.scheme and not parts.netloc:
        return target
    return url_for("reports.index")


def _new_session_id() -> None:
    """Against session fixation: Flask-Session gives the session a new id."""
    regenerate = getattr(current_app.session_interface, "regenerate", None)
    if regenerate is not None:
        regenerate(session)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        _new_session_id()
        login_user(User(form.name.data.strip()))
        return redirect(_safe_next(form.next.data))
    return render_template("login.html", form=form)


@bp.post("/logout")
def logout() -> Response:
    logout_user()
    _new_session_id()
    return redirect(url_for("auth.login"))
