"""The widget's assets in the layout's ``<head>``, with the site's own jQuery (docs/frontend.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/assets.py run`` and open
http://127.0.0.1:5000. The page loads one jQuery, the site's, in ``<head>`` before the
widget's assets (the plugin needs jQuery loaded before it).
"""

import time

import xstatic.pkg.jquery
from flask import Flask, redirect, render_template, send_from_directory, url_for
from jinja2 import ChoiceLoader, DictLoader

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens and the session
TEMPLATES = {  # the app's templates/ folder, inline
    "layout.html": """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{% block title %}Shop{% endblock %}</title>
  <script src="{{ url_for('vendor_jquery') }}"></script>
  {{ asyncstate_assets(jquery=False) }}
  {# ...and the site's scripts that use jQuery #}
</head>
<body>
  {% block content %}{% endblock %}
</body>
</html>
""",
    "jobs.html": """{% extends "layout.html" %}
{% block content %}
<form method="post"><button>Import</button></form>
{{ asyncstate_jobs() }}
{% endblock %}
""",
}
app.jinja_loader = ChoiceLoader([DictLoader(TEMPLATES), app.jinja_loader])
asyncstate = AsyncState(app)

STEPS = 100
PAUSE = 0.05  # seconds per step: a 5-second job


@asyncstate.job
def import_products(job):
    for _ in job.iter(range(STEPS), message="{current} of {total} products"):
        time.sleep(PAUSE)
    return {"imported": STEPS}


@app.get("/")
def jobs_page():
    return render_template("jobs.html")


@app.post("/")
def start():
    import_products.start()
    return redirect(url_for("jobs_page"))


@app.get("/vendor/jquery.js")
def vendor_jquery():
    """The site's own copy of jQuery, which its other scripts use too."""
    return send_from_directory(xstatic.pkg.jquery.BASE_DIR, "jquery.min.js", max_age=3600)
