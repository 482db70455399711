"""Links built in a job: ``url_for(..., _external=True)`` (docs/jobs.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/links.py run`` and open
http://127.0.0.1:5000/reports/7. The finished job's link points where the page was
served from, here http://127.0.0.1:5000/reports/7.csv. From the command line, with
no request, ``FLASK_SERVER_NAME`` says where the app lives::

    FLASK_SECRET_KEY=dev FLASK_SERVER_NAME=reports.example.com \\
        flask --app docs/examples/links.py build-report 7
"""

import time

import click
from flask import Flask, redirect, render_template_string, request, url_for

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY, FLASK_SERVER_NAME...
asyncstate = AsyncState(app)

PAUSE = 0.5  # seconds of made-up work


@asyncstate.job
def build_report(job, report_id):
    time.sleep(PAUSE)  # builds the report
    # The job runs in a request context at the starting request's URL root (scheme,
    # host, script root): the link is the one the view would have built.
    return {"url": url_for("download", report_id=report_id, _external=True)}


PAGE = """<!doctype html>
<form method="post"><button>Build report {{ report_id }}</button></form>
{% if token %}{{ asyncstate_widget(token) }}{% endif %}
"""


@app.get("/reports/<int:report_id>")
def report(report_id):
    return render_template_string(PAGE, report_id=report_id, token=request.args.get("token"))


@app.post("/reports/<int:report_id>")
def start(report_id):
    handle = build_report.start(report_id)
    return redirect(url_for("report", report_id=report_id, token=handle.token))


@app.get("/reports/<int:report_id>.csv")
def download(report_id):
    return f"report,{report_id}\n", {"Content-Type": "text/csv"}


@app.cli.command("build-report")
@click.argument("report_id", type=int)
def build_report_command(report_id):
    """Build a report without a request: SERVER_NAME and PREFERRED_URL_SCHEME apply."""
    handle = build_report.start(report_id)
    click.echo(handle.wait()["result"]["url"])
