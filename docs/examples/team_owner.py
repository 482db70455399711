"""Jobs owned by a team: ``@asyncstate.owner_loader`` (docs/jobs.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/team_owner.py run``.
Everyone signed in to one team sees, and may cancel, the team's jobs; a visitor who
is not signed in owns the jobs of their browser session.
"""

import time

from flask import Flask, abort, redirect, render_template_string, request, session, url_for

from flask_asyncstate import AsyncState

#: Who is in which team (a real app reads this from its database).
TEAMS = {"alice": "red", "bob": "red", "carol": "blue"}


app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens and the session
asyncstate = AsyncState(app)


@asyncstate.owner_loader
def team_owner():
    """The owner of jobs started in this request: the signed-in user's team, or None
    (then the browser session owns them)."""
    return TEAMS.get(session.get("user"))


STEPS = 100
PAUSE = 0.1  # seconds per step: a 10-second job


@asyncstate.job
def build_invoices(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} invoices"):
        time.sleep(PAUSE)
    return {"invoices": STEPS}


PAGE = """<!doctype html>
<title>Team jobs</title>
<form method="post" action="{{ url_for('login') }}">
  <input name="name" placeholder="alice, bob or carol"><button>Sign in</button>
</form>
<form method="post" action="{{ url_for('start_invoices') }}"><button>Build invoices</button></form>
<h2>{{ "Jobs of team " ~ team if team else "Jobs of this browser" }}</h2>
{{ asyncstate_jobs() }}
"""


@app.get("/")
def index():
    return render_template_string(PAGE, team=team_owner())


@app.post("/login")
def login():
    name = request.form.get("name", "")
    if name not in TEAMS:  # a demo: a real app checks a password here
        abort(403)
    session["user"] = name
    return redirect(url_for("index"))


@app.post("/invoices")
def start_invoices():
    build_invoices.start()
    return redirect(url_for("index"))
