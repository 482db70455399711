"""The widget's own words, and a notification when the job ends (docs/browser.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/labels.py run`` and open
http://127.0.0.1:5000. The start button asks for permission to show notifications
(browsers only let a page ask on a click); switch to another tab while the import
runs: the tab's title shows the percentage, and a notification says when it is done.
"""

import time

from flask import Flask, redirect, render_template_string, request, url_for

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens
asyncstate = AsyncState(app)

STEPS = 100
PAUSE = 0.1  # seconds per step: a 10-second job

#: Only the labels this page words differently; the others keep their defaults.
LABELS = {
    "progress": "Import progress",
    "cancel": "Stop the import",
    "succeeded": "Imported",
    "cancelled": "Import stopped",
    "etaMinutes": "roughly {minutes} min to go",
}


@asyncstate.job
def import_products(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} products"):
        time.sleep(PAUSE)
    return {"imported": STEPS}


PAGE = """<!doctype html>
<title>Import</title>
<form method="post" action="{{ url_for('start_import') }}" id="start">
  <button>Import products</button>
</form>
<script>
  // Ask for permission on the click, then send the form once the user has answered
  // (leaving the page at once would dismiss the browser's question).
  document.getElementById("start").addEventListener("submit", function (event) {
    if (!window.Notification || Notification.permission !== "default") { return; }
    event.preventDefault();
    var form = this, sent = false;
    function send() { if (!sent) { sent = true; form.submit(); } }
    var asked = Notification.requestPermission(send);   // older Safari: a callback
    if (asked && asked.then) { asked.then(send, send); }
  });
</script>
{% if token %}{{ asyncstate_widget(token, labels=labels, notify=True) }}{% endif %}
"""


@app.get("/")
def index():
    return render_template_string(PAGE, token=request.args.get("token"), labels=LABELS)


@app.post("/import")
def start_import():
    handle = import_products.start()
    return redirect(url_for("index", token=handle.token))
