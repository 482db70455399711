"""The app that docs/testing.rst tests (``myapp`` in your project).

An app factory, Flask-WTF's ``CSRFProtect``, and an export job with a checkpoint where a
test can hold it. Run it with ``FLASK_SECRET_KEY=dev flask --app
docs/examples/testing_app.py run`` and open http://127.0.0.1:5000.
"""

import time

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template_string,
    request,
    url_for,
)
from flask_wtf.csrf import CSRFProtect

from flask_asyncstate import AsyncState, QueueFull, QuotaExceeded

asyncstate = AsyncState()
csrf = CSRFProtect()
bp = Blueprint("orders", __name__)


@asyncstate.job
def export_orders(job, count):
    if count < 1:
        raise ValueError("nothing to export")
    orders = list(range(count))  # stands in for a query
    job.progress(0, count, "Orders collected")
    job.checkpoint("collected")  # a test can hold the job here; elsewhere a cancel check
    pause = current_app.config["EXPORT_PAUSE"]  # the job runs in the app's context
    for _ in job.iter(orders, message="{current} of {total} orders"):
        time.sleep(pause)  # stands in for writing one order
    return {"orders": count}


PAGE = """<!doctype html>
<meta name="csrf-token" content="{{ csrf_token() }}">
{% for message in get_flashed_messages() %}<p class="flash">{{ message }}</p>{% endfor %}
<form method="post" action="{{ url_for('orders.start_export') }}">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
  <input name="count" value="1000"><button>Export</button>
</form>
{% if token %}{{ asyncstate_widget(token) }}{% endif %}
"""


@bp.get("/")
def index():
    return render_template_string(PAGE, token=request.args.get("token"))


@bp.post("/export")
def start_export():
    count = request.form.get("count", type=int)
    if count is None:
        abort(400)
    try:
        handle = export_orders.start(count)
    except (QuotaExceeded, QueueFull) as exc:
        flash(exc.user_message)  # words for the user; str(exc) is for the log
        return redirect(url_for("orders.index"))
    return redirect(url_for("orders.index", token=handle.token))  # post/redirect/get


def create_app(config=None):
    app = Flask(__name__)
    app.config.update(EXPORT_PAUSE=0.01)
    app.config.from_prefixed_env()  # FLASK_SECRET_KEY...
    app.config.update(config or {})  # what a test passes wins
    csrf.init_app(app)
    asyncstate.init_app(app)
    app.register_blueprint(bp)
    return app
