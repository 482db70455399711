"""An export of many files as child jobs, with stages and a trail (docs/jobs.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/batches.py run`` and open
http://127.0.0.1:5000. On RQ workers, set ``FLASK_ASYNCSTATE_REDIS_URL`` and
``FLASK_ASYNCSTATE_EXECUTOR=rq`` and run ``flask --app docs/examples/batches.py
asyncstate worker`` twice: the children spread over both workers.
"""

import time

from flask import Flask, redirect, render_template_string, request, url_for

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.update(ASYNCSTATE_MAX_WORKERS=8)  # the pool runs the export and its children
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens
asyncstate = AsyncState(app)

FILES = 40  # files in the made-up export
PAUSE = 0.05  # seconds of "work" per step


@asyncstate.job
def convert_file(job, number):
    with job.stage("render"):
        time.sleep(PAUSE)
    with job.stage("compress"):
        time.sleep(PAUSE)
    if number % 13 == 12:
        raise ValueError(f"file {number} has a broken image")
    return {"file": f"report-{number:03d}.pdf"}


@asyncstate.job
def export_reports(job, files):
    with job.stage("plan"):
        numbers = list(range(files))
        job.log(f"{files} files to convert")
    with job.stage("convert"):
        for number in numbers:
            job.spawn(convert_file, number)  # a child: counted in job's "children"
        counts = job.wait_children()  # a cancel of the export ends the wait and the children
        job.log(f"{counts['succeeded']} converted, {counts['failed']} failed")
    with job.stage("archive"):
        time.sleep(PAUSE)
    return {"converted": counts["succeeded"], "failed": counts["failed"]}


PAGE = """<!doctype html>
<title>Export</title>
<form method="post" action="{{ url_for('start_export') }}"><button>Export reports</button></form>
{% if token %}{{ asyncstate_widget(token, steps=["plan", "convert", "archive"],
                                   labels={"children": "{done} of {total} files"}) }}{% endif %}
"""


@app.get("/")
def index():
    return render_template_string(PAGE, token=request.args.get("token"))


@app.post("/export")
def start_export():
    handle = export_reports.start(FILES)
    return redirect(url_for("index", token=handle.token))
