"""Rate, ETA and elapsed time of a running job (docs/jobs.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/eta.py run`` and open
http://127.0.0.1:5000: under the bar the widget shows "0:04 elapsed · about 11 s
left", and the page adds the rate from each progress document.
"""

import time

from flask import Flask, redirect, render_template_string, request, url_for

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens
asyncstate = AsyncState(app)

PAGES = 60  # pages in the report
PAUSE = 0.25  # seconds per page: a 15-second job


def render_page(number):
    time.sleep(PAUSE)  # stands in for the real work


@asyncstate.job
def build_report(job, pages):
    for number in job.iter(range(1, pages + 1), message="page {current} of {total}"):
        render_page(number)
    return {"pages": pages}


PAGE = """<!doctype html>
<title>Report</title>
<form method="post" action="{{ url_for('start_report') }}"><button>Build the report</button></form>
{% if token %}
  {{ asyncstate_widget(token) }}
  <p id="pace"></p>
  <script>
    // Every progress document carries started_at, rate and eta (null while unknown).
    $(document).on("asyncstate:progress", ".asyncstate", function (event, doc) {
      $("#pace").text(doc.rate == null ? "" : doc.rate.toFixed(1) + " pages/s");
    });
  </script>
{% endif %}
"""


@app.get("/")
def index():
    return render_template_string(PAGE, token=request.args.get("token"))


@app.post("/report")
def start_report():
    handle = build_report.start(PAGES)
    return redirect(url_for("index", token=handle.token))
