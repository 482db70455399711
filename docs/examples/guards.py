"""A guard in front of the extension's routes: ``asyncstate.guard`` (docs/operating.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/guards.py run`` and open
http://127.0.0.1:5000. Signed out, ``/asyncstate/jobs`` answers 401 with the sign-in
page's address; signed in as alice it lists her jobs; bob's account is suspended.
"""

import time

from flask import Flask, redirect, render_template_string, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens and the session
login_manager = LoginManager(app)
login_manager.login_view = "login"
asyncstate = AsyncState(app)

USERS = {"alice", "bob"}
SUSPENDED = {"bob"}  # stands in for a flag on your user model
STEPS = 100
PAUSE = 0.1  # seconds per step: a 10-second job


class User(UserMixin):
    def __init__(self, name):
        self.id = name


@login_manager.user_loader
def load_user(user_id):
    return User(user_id) if user_id in USERS else None


@asyncstate.guard  # before every route under /asyncstate except its scripts and stylesheet
def members_only():
    if not current_user.is_authenticated:
        return login_manager.unauthorized()  # a redirect to /login: answered 401, login_url
    if current_user.id in SUSPENDED:
        return {"error": "your account is suspended"}, 403  # answered as is, in JSON
    return None  # allowed


@asyncstate.job
def export_orders(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} orders exported"):
        time.sleep(PAUSE)
    return {"file": "orders.csv"}


PAGE = """<!doctype html>
<title>Exports</title>
<form method="post" action="{{ url_for('start_export') }}"><button>Export orders</button></form>
{% if token %}{{ asyncstate_widget(token) }}{% endif %}
"""


@app.get("/")
@login_required
def index():
    return render_template_string(PAGE, token=request.args.get("token"))


@app.route("/login", methods=["GET", "POST"])
def login():
    name = request.form.get("name", "")
    if request.method == "POST" and name in USERS:  # a demo: a real app checks a password
        login_user(User(name))
        return redirect(url_for("index"))
    return '<form method="post"><input name="name"><button>Sign in</button></form>'


@app.post("/export")
@login_required
def start_export():
    handle = export_orders.start()
    return redirect(url_for("index", token=handle.token))
