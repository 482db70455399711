"""One job, one complete page per front end (docs/browser.rst, "jQuery, a plain module, htmx").

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/clients.py run`` and open
http://127.0.0.1:5000/jquery, http://127.0.0.1:5000/module or http://127.0.0.1:5000/htmx:
the same widget, the same behaviour, with jQuery, with no library at all, or with htmx
(``npm ci`` first, at the root of the checkout: the app serves htmx from ``node_modules``).
"""

import time
from pathlib import Path

from flask import Flask, abort, redirect, render_template_string, request, send_file, url_for

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

# -- the htmx page
HTMX_PAGE = """\
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Import</title>
  <script src="{{ url_for('htmx_script') }}"></script>
</head>
<body>
  <form method="post"><button>Import</button></form>
  {% if token %}
    {{ asyncstate_widget(token, client="htmx") }}  {# the stylesheet and the widget #}
    <p id="done" hidden>Imported.</p>
    <script>
      document.body.addEventListener("htmx:afterSettle", () => {  // after each new state
        const state = document.querySelector("[data-asyncstate-fragment]").dataset;
        document.getElementById("done").hidden = state.asyncstateFragment !== "succeeded";
      });
    </script>
  {% endif %}
</body>
</html>
"""
# -- end of the htmx page

#: htmx itself, from npm (``npm ci`` installs the version package-lock.json pins): served by
#: this app, like any script of your own, never from a CDN.
HTMX = Path(__file__).resolve().parents[2] / "node_modules" / "htmx.org" / "dist" / "htmx.min.js"


@app.get("/jquery")
def jquery_page():
    return render_template_string(JQUERY_PAGE, token=request.args.get("token"))


@app.get("/module")
def module_page():
    return render_template_string(MODULE_PAGE, token=request.args.get("token"))


@app.get("/htmx")
def htmx_page():
    return render_template_string(HTMX_PAGE, token=request.args.get("token"))


@app.get("/htmx.min.js")
def htmx_script():
    if not HTMX.is_file():
        abort(404, f"{HTMX} is missing: run npm ci at the root of the checkout")
    return send_file(HTMX, mimetype="text/javascript")


@app.post("/<any(jquery, module, htmx):client>")
def start(client):
    handle = import_products.start()  # then back to the page, which shows the job
    return redirect(url_for(f"{client}_page", token=handle.token))
