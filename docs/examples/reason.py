"""Why a job ended: the document's ``reason`` (docs/jobs.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/reason.py run`` and open
http://127.0.0.1:5000. Start a sync and cancel it, start the broken one, or stop the
server while a sync runs: each ends with its own ``reason``, and only the broken one
is reported as a problem.
"""

import time

from flask import Flask, redirect, render_template_string, request, url_for

from flask_asyncstate import AsyncState, job_finished

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY, FLASK_SYNC_TIMEOUT...
app.config.setdefault("SYNC_TIMEOUT", 60)
asyncstate = AsyncState(app)

STEPS = 100
PAUSE = 0.1  # seconds per product: a 10-second sync


@asyncstate.job(timeout=app.config["SYNC_TIMEOUT"])
def sync_catalogue(job, broken_at=None):
    for step in job.iter(range(STEPS), message="{current} of {total} products"):
        if step == broken_at:
            raise ValueError(f"product {step} has no price")
        time.sleep(PAUSE)
    return {"synced": STEPS}


PROBLEMS = []  # stands in for your alerting: a pager, an e-mail, an error tracker


@job_finished.connect_via(app)
def report_problems(sender, job_id, document):
    # A user's cancel and a server restart are nobody's problem; the rest is someone's.
    if document["reason"] in ("error", "timeout"):
        PROBLEMS.append({"job": job_id, "reason": document["reason"], "error": document["error"]})


PAGE = """<!doctype html>
<title>Catalogue</title>
<form method="post"><button>Sync the catalogue</button></form>
<form method="post"><input type="hidden" name="broken_at" value="3"><button>Sync a broken one</button></form>
{% if token %}{{ asyncstate_widget(token) }}{% endif %}
"""


@app.get("/")
def index():
    return render_template_string(PAGE, token=request.args.get("token"))


@app.post("/")
def start():
    handle = sync_catalogue.start(request.form.get("broken_at", type=int))
    return redirect(url_for("index", token=handle.token))
