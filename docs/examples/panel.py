"""A "my jobs" page: the ``asyncstate_jobs()`` Jinja global (docs/browser.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/panel.py run`` and open
http://127.0.0.1:5000. Start a few jobs: the page lists them, newest first, each
with a live progress bar and a cancel button, and keeps the finished ones.
"""

import time

from flask import Flask, redirect, render_template_string, url_for

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens
asyncstate = AsyncState(app)

STEPS = 100
PAUSE = 0.1  # seconds per step: a 10-second job


@asyncstate.job
def import_products(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} products"):
        time.sleep(PAUSE)
    return {"imported": STEPS}


@asyncstate.job
def export_orders(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} orders"):
        time.sleep(PAUSE)
    return {"file": "orders.csv"}


JOBS = {"import": import_products, "export": export_orders}

PAGE = """<!doctype html>
<title>My jobs</title>
<form method="post" action="{{ url_for('start', kind='import') }}"><button>Import</button></form>
<form method="post" action="{{ url_for('start', kind='export') }}"><button>Export</button></form>
<h1>My jobs</h1>
{{ asyncstate_jobs(mode="auto") }}
"""


@app.get("/")
def jobs_page():
    return render_template_string(PAGE)


@app.post("/start/<any(import, export):kind>")
def start(kind):
    JOBS[kind].start()
    return redirect(url_for("jobs_page"))  # post/redirect/get: the panel shows the new job
