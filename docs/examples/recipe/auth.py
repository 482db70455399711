"""Signing in and out (by name only: a stand-in for your real authentication)."""

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import UserMixin, login_user, logout_user

from .extensions import login_manager

bp = Blueprint("auth", __name__)
USERS = {"alice", "bob"}  # stands in for your users table


class User(UserMixin):
    def __init__(self, name):
        self.id = name


@login_manager.user_loader
def load_user(user_id):
    return User(user_id) if user_id in USERS else None


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":  # CSRFProtect has checked the form's token already
        name = request.form.get("name", "")
        if name in USERS:  # a real app checks a password here
            current_app.session_interface.regenerate(session)  # a new session id
            login_user(User(name))
            return redirect(url_for("exports.index"))
        flash("Unknown user.")
    return render_template("login.html")


@bp.post("/logout")
def logout():
    logout_user()  # cancels nothing: the user's jobs are theirs at the next sign-in
    return redirect(url_for("auth.login"))
