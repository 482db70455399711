"""Finished jobs kept for a day, and dismissed by their owner (docs/jobs.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/retention.py run`` and
open http://127.0.0.1:5000. Finished exports stay on the page for a day, even when
nobody looks at them, until "Dismiss" takes one away.
"""

import time

from flask import Flask, abort, flash, redirect, render_template_string, url_for

from flask_asyncstate import AsyncState, JobStatus

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens and the session
app.config.setdefault("ASYNCSTATE_KEEP_FINISHED", 24 * 3600)  # a day after the last read
asyncstate = AsyncState(app)

STEPS = 100
PAUSE = 0.1  # seconds per step: a 10-second job
FINAL = [status.value for status in JobStatus if status.is_final]


@asyncstate.job
def export_orders(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} orders exported"):
        time.sleep(PAUSE)
    return {"file": "orders.csv"}


PAGE = """<!doctype html>
<title>Your exports</title>
{% for message in get_flashed_messages() %}<p class="flash">{{ message }}</p>{% endfor %}
<form method="post" action="{{ url_for('start_export') }}"><button>Export orders</button></form>
<h1>Your exports</h1>
{% for job in jobs %}
  <div class="export" data-job-id="{{ job.id }}">
    {{ asyncstate_widget(job.token) }}
    {% if job.status in final %}
      <form method="post" action="{{ url_for('dismiss', token=job.token) }}">
        <button>Dismiss</button>
      </form>
    {% endif %}
  </div>
{% else %}
  <p class="empty">No exports yet.</p>
{% endfor %}
"""


@app.get("/")
def index():
    return render_template_string(PAGE, jobs=asyncstate.jobs(), final=FINAL)


@app.post("/export")
def start_export():
    export_orders.start()
    return redirect(url_for("index"))


@app.post("/exports/<token>/dismiss")
def dismiss(token):
    handle = asyncstate.handle(token)  # a bad token: the extension's JSON 404
    if handle.id not in {job["id"] for job in asyncstate.jobs()}:
        abort(404)  # handle() checks the signature only: this is not the visitor's job
    try:
        handle.forget()  # the document goes, and no list names the job any more
    except RuntimeError:  # it has not ended
        flash("This export is still running: cancel it first.")
    return redirect(url_for("index"))
