"""One unfinished job at a time: ``@asyncstate.job(unique=...)`` (docs/jobs.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/unique.py run`` and open
http://127.0.0.1:5000. Press "Export my orders" twice: the second press shows the
export already running instead of starting another.
"""

import time

from flask import Flask, flash, redirect, render_template_string, request, url_for

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens and the session
asyncstate = AsyncState(app)

STEPS = 100
PAUSE = 0.1  # seconds per step: a 10-second job


@asyncstate.job(unique=True)  # one unfinished export per owner (user or browser session)
def export_orders(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} orders exported"):
        time.sleep(PAUSE)
    return {"file": "orders.csv"}


@asyncstate.job(unique="app")  # one unfinished rebuild in the whole app, for everyone
def rebuild_search_index(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} documents indexed"):
        time.sleep(PAUSE)
    return {"indexed": STEPS}


PAGE = """<!doctype html>
<title>Exports</title>
{% for message in get_flashed_messages() %}<p class="flash">{{ message }}</p>{% endfor %}
<form method="post" action="{{ url_for('start_export') }}"><button>Export my orders</button></form>
<form method="post" action="{{ url_for('start_rebuild') }}"><button>Rebuild the index</button></form>
{% if token %}{{ asyncstate_widget(token) }}{% endif %}
"""


@app.get("/")
def index():
    return render_template_string(PAGE, token=request.args.get("token"))


@app.post("/export")
def start_export():
    handle = export_orders.start()
    if not handle.is_new:
        flash("An export is already running: here it is.")
    return redirect(url_for("index", token=handle.token))


@app.post("/rebuild")
def start_rebuild():
    handle = rebuild_search_index.start()
    if handle.is_new:
        return redirect(url_for("index", token=handle.token))
    if any(job["id"] == handle.id for job in asyncstate.jobs()):  # started by this owner
        flash("You are already rebuilding the index: here it is.")
        return redirect(url_for("index", token=handle.token))
    # Someone else's job: its token would answer 404 here, so no widget, just the news.
    doc = handle.status() or {}
    flash(f"Someone is rebuilding the index ({doc.get('percent') or 0:.0f} % done).")
    return redirect(url_for("index"))
