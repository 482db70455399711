"""The operator's page, ``/asyncstate/admin``, for operators only (docs/operating.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/admin.py run``, sign in
as alice at http://127.0.0.1:5000/login and start an export, then sign in as olga
(an operator) and open http://127.0.0.1:5000/asyncstate/admin: every job of every
user and instance, with a cancel button.
"""

import time

from flask import Flask, abort, redirect, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens and the session
login_manager = LoginManager(app)
login_manager.login_view = "login"

USERS = {"alice", "bob", "olga"}
OPERATORS = {"olga"}  # stands in for a role on your user model
STEPS = 100
PAUSE = 0.1  # seconds per step: a 10-second job


class User(UserMixin):
    def __init__(self, name):
        self.id = name


@login_manager.user_loader
def load_user(user_id):
    return User(user_id) if user_id in USERS else None


def operators_only():
    """The only protection of the operator's page: it sees and cancels everybody's jobs."""
    if not current_user.is_authenticated:
        return login_manager.unauthorized()  # the page: to /login; its JSON routes: 401
    if current_user.id not in OPERATORS:
        abort(403)
    return None


asyncstate = AsyncState(app)
asyncstate.admin_guard(operators_only)  # the page is on, for operators only


@asyncstate.job
def export_orders(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} orders exported"):
        time.sleep(PAUSE)
    return {"file": "orders.csv"}


@app.route("/login", methods=["GET", "POST"])
def login():
    name = request.form.get("name", "")
    if request.method == "POST" and name in USERS:  # a demo: a real app checks a password
        login_user(User(name))
        return redirect(url_for("start_export"))
    return '<form method="post"><input name="name"><button>Sign in</button></form>'


@app.route("/export", methods=["GET", "POST"])
@login_required
def start_export():
    if request.method == "POST":
        export_orders.start()
    return '<form method="post"><button>Export orders</button></form>'
