"""What a finished job shows under its bar: ``render_result`` (docs/browser.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/results.py run`` and open
http://127.0.0.1:5000. When the export is done its widget shows a download link, and
so does the page when it is loaded again; the import shows a line of text.
"""

import time

from flask import Flask, redirect, render_template_string, request, url_for
from jinja2 import ChoiceLoader, DictLoader

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens and the session
# The app's templates/ folder would hold this file; here it is inline.
TEMPLATES = {
    "exports/_download.html": (
        '<a class="download" href="{{ url_for("download", name=result.file) }}" download>'
        "Download {{ result.file }}</a> ({{ result.rows }} orders)"
    ),
}
app.jinja_loader = ChoiceLoader([DictLoader(TEMPLATES), app.jinja_loader])
asyncstate = AsyncState(app)

STEPS = 100
PAUSE = 0.05  # seconds per step: a 5-second job


@asyncstate.job(render_result="exports/_download.html")  # rendered with result and job
def export_orders(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} orders"):
        time.sleep(PAUSE)
    return {"file": f"orders-{job.id[:8]}.csv", "rows": STEPS}


@asyncstate.job(render_result=lambda result: f"{result['imported']} products imported.")
def import_products(job):  # a callable: its plain str is escaped, a Markup kept as is
    for _ in job.iter(range(STEPS), message="{current} of {total} products"):
        time.sleep(PAUSE)
    return {"imported": STEPS}


JOBS = {"export": export_orders, "import": import_products}
PAGE = """<!doctype html>
<title>Results</title>
<form method="post" action="{{ url_for('start', kind='export') }}"><button>Export</button></form>
<form method="post" action="{{ url_for('start', kind='import') }}"><button>Import</button></form>
{% if token %}{{ asyncstate_widget(token) }}{% endif %}
<h2>All my jobs</h2>
{{ asyncstate_jobs() }}
"""


@app.get("/")
def index():
    return render_template_string(PAGE, token=request.args.get("token"))


@app.post("/<any(export, import):kind>")
def start(kind):
    handle = JOBS[kind].start()
    return redirect(url_for("index", token=handle.token))


@app.get("/files/<name>")
def download(name):
    return "order,total\n1,9.90\n", {"Content-Type": "text/csv"}
