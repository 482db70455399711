"""One job, one complete page per front end (docs/browser.rst, "jQuery, a plain module, htmx").

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/clients.py run`` and open
http://127.0.0.1:5000/jquery or http://127.0.0.1:5000/module: the same widget, the same
behaviour, with jQuery or with no library at all.
"""

import time

from flask import Flask, redirect, render_template_string, request, url_for

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens and the session
asyncstate = AsyncState(app)

STEPS = 100
PAUSE = 0.05  # seconds per step: a 5-second job


@asyncstate.job
def import_products(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} products"):
        time.sleep(PAUSE)
    return {"imported": STEPS}


# -- the jQuery page
JQUERY_PAGE = """\
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Import</title>
</head>
<body>
  <form method="post"><button>Import</button></form>
  {% if token %}
    {{ asyncstate_widget(token) }}  {# the markup, the stylesheet, jQuery, the plugin #}
    <p id="done" hidden>Imported.</p>
    <script>
      $(document).on("asyncstate:done", ".asyncstate", function (event, doc) {
        $("#done").prop("hidden", doc.status !== "succeeded");
      });
    </script>
  {% endif %}
</body>
</html>
"""
# -- end of the jQuery page

# -- the module page
MODULE_PAGE = """\
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Import</title>
  <link rel="stylesheet" href="{{ url_for('asyncstate.stylesheet') }}">
  <script type="module">
    import { defaults } from "{{ url_for('asyncstate.module') }}";
    defaults.labels = { succeeded: "Imported" };  // for every widget of the page
  </script>
</head>
<body>
  <form method="post"><button>Import</button></form>
  {% if token %}
    <asyncstate-progress token="{{ token }}"
        prefix="{{ request.script_root }}{{ config.ASYNCSTATE_URL_PREFIX }}">
    </asyncstate-progress>
    <p id="done" hidden>Imported.</p>
    <script>
      document.addEventListener("asyncstate:done", (event) => {
        document.getElementById("done").hidden = event.detail.status !== "succeeded";
      });
    </script>
  {% endif %}
</body>
</html>
"""
# -- end of the module page


@app.get("/jquery")
def jquery_page():
    return render_template_string(JQUERY_PAGE, token=request.args.get("token"))


@app.get("/module")
def module_page():
    return render_template_string(MODULE_PAGE, token=request.args.get("token"))


@app.post("/<any(jquery, module):client>")
def start(client):
    handle = import_products.start()  # then back to the page, which shows the job
    return redirect(url_for(f"{client}_page", token=handle.token))
