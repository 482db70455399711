"""Progress from a loop with ``job.iter`` (docs/jobs.rst).

Run it with ``FLASK_SECRET_KEY=dev flask --app docs/examples/iter.py run`` and open
http://127.0.0.1:5000.
"""

import time

from flask import Flask, redirect, render_template_string, request, url_for

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_SECRET_KEY signs the job tokens
asyncstate = AsyncState(app)

PRODUCTS = 2000  # rows in the made-up catalogue
PAGES = 40  # pages of the made-up order API
PAUSE = 0.005  # seconds of "work" per row or page


def load_catalogue(count):
    return [{"sku": f"SKU-{i:05d}", "price": 1 + i % 97} for i in range(1, count + 1)]


def save(row):
    time.sleep(PAUSE)  # stands in for a database write


def fetch_pages(limit):
    """A paged API: how many pages there are is known only at the end."""
    for page in range(1, limit + 1):
        time.sleep(PAUSE)
        yield [f"order-{page}-{n}" for n in range(10)]


@asyncstate.job
def import_products(job, count):
    rows = load_catalogue(count)  # a list: job.iter takes the total from len(rows)
    for row in job.iter(rows, message="{current:,} of {total:,} products"):
        save(row)  # a cancel stops the loop before the next row
    return {"imported": len(rows)}


@asyncstate.job
def sync_orders(job, pages):
    orders = 0
    # A generator has no len(): the bar is indeterminate and {total} would read "?".
    for batch in job.iter(fetch_pages(pages), message="{current} pages fetched"):
        orders += len(batch)
    return {"orders": orders}


PAGE = """<!doctype html>
<title>Import</title>
<form method="post" action="{{ url_for('start_import') }}"><button>Import products</button></form>
<form method="post" action="{{ url_for('start_sync') }}"><button>Sync orders</button></form>
{% if token %}{{ asyncstate_widget(token) }}{% endif %}
"""


@app.get("/")
def index():
    return render_template_string(PAGE, token=request.args.get("token"))


@app.post("/import")
def start_import():
    handle = import_products.start(PRODUCTS)
    return redirect(url_for("index", token=handle.token))  # post/redirect/get


@app.post("/sync")
def start_sync():
    handle = sync_orders.start(PAGES)
    return redirect(url_for("index", token=handle.token))
