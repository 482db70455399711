"""The widget in the visitor's language through Flask-Babel (docs/browser.rst).

With Flask-Babel set up on the app, ``asyncstate_widget`` and ``asyncstate_jobs``
pass every default label through its ``gettext``: put the labels' messages in the
app's catalogue (docs/browser.rst says how) and compile it as usual. Run it with

    FLASK_SECRET_KEY=dev FLASK_BABEL_TRANSLATION_DIRECTORIES=$PWD/translations \\
        flask --app docs/examples/i18n_babel.py run
"""

import time

from flask import Flask, redirect, render_template_string, request, url_for
from flask_babel import Babel, gettext

from flask_asyncstate import AsyncState

LANGUAGES = ["en", "fr", "de"]


def pick_locale():
    return request.accept_languages.best_match(LANGUAGES) or "en"


app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY, FLASK_BABEL_TRANSLATION_DIRECTORIES
babel = Babel(app, locale_selector=pick_locale)  # before or after AsyncState: either works
asyncstate = AsyncState(app)

STEPS = 100
PAUSE = 0.1  # seconds per step: a 10-second job


@asyncstate.job
def import_products(job, message):
    for _ in job.iter(range(STEPS), message=message):
        time.sleep(PAUSE)
    return {"imported": STEPS}


PAGE = """<!doctype html>
<html lang="{{ lang }}">
<title>Import</title>
<form method="post" action="{{ url_for('start_import') }}"><button>{{ start }}</button></form>
{% if token %}{{ asyncstate_widget(token) }}{% endif %}
</html>
"""


@app.get("/")
def index():
    return render_template_string(
        PAGE, token=request.args.get("token"), lang=pick_locale(), start=gettext("Import")
    )


@app.post("/import")
def start_import():
    # The job has no request, so no locale: translate its message here, in the request.
    handle = import_products.start(gettext("{current} of {total} products"))
    return redirect(url_for("index", token=handle.token))
