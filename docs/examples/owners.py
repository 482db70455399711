"""Who owns a job: the Flask-Login user, else the browser session (docs/jobs.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/owners.py run`` and open
http://127.0.0.1:5000 in two browsers. Sign in as alice in both: an export started
in one is listed, live, in the other, and either can cancel it. Sign out and in as
bob in the same browser: alice's jobs are gone from it, and back when she signs in.
"""

import time

from flask import Flask, abort, flash, redirect, render_template_string, request, url_for
from flask_login import LoginManager, UserMixin, login_user, logout_user

from flask_asyncstate import AsyncState, QuotaExceeded

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens and the session
login_manager = LoginManager(app)
asyncstate = AsyncState(app)  # no owner_loader: the Flask-Login user owns their jobs

USERS = {"alice", "bob"}
STEPS = 100
PAUSE = 0.1  # seconds per step: a 10-second job


class User(UserMixin):
    def __init__(self, name):
        self.id = name


@login_manager.user_loader
def load_user(user_id):
    return User(user_id) if user_id in USERS else None


@asyncstate.job
def export_orders(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} orders exported"):
        time.sleep(PAUSE)
    return {"file": "orders.csv"}


PAGE = """<!doctype html>
<title>My jobs</title>
{% for message in get_flashed_messages() %}<p class="flash">{{ message }}</p>{% endfor %}
{% if current_user.is_authenticated %}
  <p>Signed in as {{ current_user.id }}.</p>
  <form method="post" action="{{ url_for('logout') }}"><button>Sign out</button></form>
{% else %}
  <form method="post" action="{{ url_for('login') }}">
    <input name="name" placeholder="alice or bob"><button>Sign in</button>
  </form>
{% endif %}
<form method="post" action="{{ url_for('start_export') }}"><button>Export orders</button></form>
<h2>Jobs</h2>
{{ asyncstate_jobs() }}
"""


@app.get("/")
def index():
    return render_template_string(PAGE)


@app.post("/login")
def login():
    name = request.form.get("name", "")
    if name not in USERS:  # a demo: a real app checks a password here
        abort(403)
    login_user(User(name))
    return redirect(url_for("index"))


@app.post("/logout")
def logout():
    logout_user()  # cancels nothing; this browser gets a new anonymous owner
    return redirect(url_for("index"))


@app.post("/export")
def start_export():
    try:
        export_orders.start()
    except QuotaExceeded as exc:  # counted per owner: one quota for all of a user's devices
        flash(exc.user_message)  # "You already have 5 jobs in progress. ..." (translatable)
    return redirect(url_for("index"))  # the page lists the new job with the others
