import time

from flask import Flask, redirect, render_template_string, request, url_for

from flask_asyncstate import AsyncState

app = Flask(__name__)
app.config.from_prefixed_env()  # reads FLASK_SECRET_KEY
asyncstate = AsyncState(app)


@asyncstate.job
def count_to(job, n):
    for _ in job.iter(range(1, n + 1), message="{current} of {total}"):
        time.sleep(0.1)  # the real work goes here
    return {"counted": n}


PAGE = """
<form method="post"><button>Count to 100</button></form>
{% if token %}{{ asyncstate_widget(token) }}{% endif %}
"""


@app.get("/")
def index():
    return render_template_string(PAGE, token=request.args.get("token"))


@app.post("/")
def start():
    handle = count_to.start(100)  # returns at once
    return redirect(url_for("index", token=handle.token))
