"""What a widget page makes the browser load: jQuery and the plugin, or the plain module, next to today's.

The pages, each rendered by an app of this checkout (memory store) and every asset it
names fetched through the app's test client, as a first visit with an empty cache would:

- jQuery, before: ``asyncstate_widget(token)`` with its default assets (the stylesheet,
  ``jquery-auto.js``, jQuery, ``asyncstate.js``), the widget's script as the route served
  it before the core (its source read with ``git show`` at :data:`BEFORE`);
- jQuery, now: the same page with this checkout's ``asyncstate.js`` (the core and the
  jQuery plugin, one classic script);
- plain module, now: ``<asyncstate-progress>`` with the stylesheet and ``asyncstate.mjs``,
  no jQuery;
- htmx: ``asyncstate_widget(token, client="htmx")``, the stylesheet, htmx from npm
  (``node_modules/htmx.org/dist/htmx.min.js``, as ``npm ci`` installs it) and the widget's
  fragment as ``<prefix>/fragment/<token>`` answers it (each poll brings it again); then
  the same with htmx's SSE extension (``htmx-ext-sse``), for ``mode="sse"``.

Each is counted unminified (as served: jQuery is xstatic's ``jquery.min.js``, the widget's
own files are not minified) and gzipped (level 6, what a server's gzip sends), with the
ratio to the jQuery page before; then the widget's scripts alone, and their lines
(``wc -l``, prettier-formatted) by layer.

Targets: the core and the jQuery plugin in <= 685 lines (half the 1,371 of issue 25's
count of the old file); the jQuery page gzipped no heavier than before; the plain module
page gzipped <= 0.5x the jQuery page before.

    python bench/bytes.py          # a second or two; no Redis, no browser
"""

from __future__ import annotations

import gzip
import logging
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import harness
from flask import Flask, render_template_string

from flask_asyncstate import AsyncState, JobContext, templating
from flask_asyncstate.security import visible_job

#: The last commit of the widget before the core (the jQuery-only asyncstate.js).
BEFORE = "6cfd5b4"
STATIC = Path(harness.ROOT, "flask_asyncstate", "static")
#: Issue 25's line count of the old asyncstate.js (before prettier), and the target's share.
ISSUE_LINES = 1371
TARGETS = (
    harness.Target("core + jQuery plugin, lines", "<=", ISSUE_LINES // 2),
    harness.Target("jQuery page gzipped, now / before", "<=", 1.0, "x"),
    harness.Target("plain module page gzipped / jQuery page before", "<=", 0.5, "x"),
)
MODULE_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Import</title>
<link rel="stylesheet" href="{{ prefix }}/asyncstate.css">
<script type="module" src="{{ prefix }}/asyncstate.mjs"></script></head>
<body><asyncstate-progress token="{{ token }}" prefix="{{ prefix }}"></asyncstate-progress>
</body></html>"""


NODE_MODULES = Path(harness.ROOT, "node_modules")
#: htmx and its SSE extension as npm installs them (the app serves them; not our routes).
HTMX = {
    "htmx.min.js": NODE_MODULES / "htmx.org" / "dist" / "htmx.min.js",
    "sse.js": NODE_MODULES / "htmx-ext-sse" / "dist" / "sse.js",
}


class Assets(HTMLParser):
    """The URLs a page loads: scripts (and the one jquery-auto.js loads), stylesheets."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self.urls += [u for u in (found.get("src"), found.get("data-src")) if u]
        elif tag == "link" and found.get("rel") == "stylesheet" and found.get("href"):
            self.urls.append(str(found["href"]))


def page_assets(app: Flask, html: str) -> dict[str, bytes]:
    """Every asset ``html`` names, as the app serves it."""
    parser = Assets()
    parser.feed(html)
    client = app.test_client()
    out = {}
    for url in parser.urls:
        with client.get(url) as response:
            assert response.status_code == 200, (url, response.status_code)
            out[url.rsplit("/", 1)[-1]] = response.get_data()
    return out


def make_app() -> tuple[Flask, Any]:
    """An app of this checkout (memory store) and a job to show."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="bench-bytes", TESTING=True)
    ext = AsyncState(app)

    @ext.job
    def noop(job: JobContext) -> None:
        return None

    return app, noop


def widget_pages(app: Flask, job: Any) -> tuple[dict[str, bytes], ...]:
    """The assets of the jQuery page, of the plain module page and of the htmx page (with
    htmx and the fragment; empty without ``node_modules``), now."""
    with app.test_request_context("/"):  # one session: the job is the htmx widget's too
        token = job.start().token
        prefix = templating.prefix_url()
        jquery = render_template_string("{{ asyncstate_widget(token) }}", token=token)
        module = render_template_string(MODULE_PAGE, token=token, prefix=prefix)
        found = app.extensions["asyncstate"]
        # alone on its page: its stylesheet with it
        htmx = render_template_string(
            "{{ asyncstate_widget(token, client='htmx', include_assets=True) }}", token=token
        )
        # each poll of a running job: its fragment, Cancel and all (the job here ends at once)
        doc = dict(visible_job(found, token)[1], status="running", percent=42.0)
        doc.update(current=42, total=100, message="42 of 100 products")
        fragment = templating.fragment(found, token, doc)
    htmx_page: dict[str, bytes] = {}
    if all(path.is_file() for path in HTMX.values()):
        htmx_page = page_assets(app, htmx)
        htmx_page["htmx.min.js"] = HTMX["htmx.min.js"].read_bytes()
        htmx_page["fragment"] = str(fragment).encode()  # what <prefix>/fragment/<token> answers
    return page_assets(app, jquery), page_assets(app, module), htmx_page


def script_before(prelude: bytes) -> tuple[bytes, int] | None:
    """``asyncstate.js`` as its route served it at BEFORE (``prelude``: the statuses and
    labels the route puts in front), and its source's line count; None without git."""
    done = subprocess.run(
        ["git", "show", f"{BEFORE}:flask_asyncstate/static/asyncstate.js"],
        cwd=harness.ROOT,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    return prelude + done.stdout, len(done.stdout.splitlines())


def gz(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=6, mtime=0))


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def section_lines(path: Path, marker: Callable[[str], bool]) -> list[int]:
    """Lines of ``path`` between its section markers (``marker(line)``): one count each."""
    counts, current = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if marker(line) and current:
            counts.append(current)
            current = 0
        current += 1
    return [*counts, current]


def main(argv: list[str] | None = None) -> int:
    args = harness.parse(harness.parser(__doc__), argv)
    logging.getLogger("flask_asyncstate").setLevel(logging.ERROR)  # its cookie-session advice
    report = harness.Report(__file__, args)
    report.out(
        f"Bytes of a widget page's assets, first visit; {harness.checkout()} against {BEFORE};"
        f" Python {sys.version.split()[0]}, load average {harness.load_average():.2f}"
    )
    jquery_now, module_now, htmx_now = widget_pages(*make_app())
    htmx_sse = dict(htmx_now, **{"sse.js": HTMX["sse.js"].read_bytes()}) if htmx_now else {}
    served = module_now["asyncstate.mjs"]
    found = script_before(served[: served.index(b"/*!")])
    before, old = found if found else (None, 0)
    jquery_before = dict(jquery_now, **({"asyncstate.js": before} if before else {}))
    pages = [
        ("jQuery, before", jquery_before if before else None),
        ("jQuery, now (core + jQuery plugin)", jquery_now),
        ("plain module, now", module_now),
        ("htmx (polling its fragment)", htmx_now or None),
        ("htmx + its SSE extension", htmx_sse or None),
    ]
    base_raw = sum(map(len, jquery_before.values()))
    base_gz = sum(map(gz, jquery_before.values()))
    rows = []
    sizes: dict[str, tuple[int, int]] = {}
    for name, assets in pages:
        if assets is None:
            missing = "(npm ci first)" if name.startswith("htmx") else "(no git history)"
            rows.append([name, missing, "-", "-", "-", "-"])
            continue
        raw, packed = sum(map(len, assets.values())), sum(map(gz, assets.values()))
        sizes[name] = (raw, packed)
        rows.append(
            [
                name,
                ", ".join(assets),
                kib(raw),
                kib(packed),
                f"{raw / base_raw:.2f}x",
                f"{packed / base_gz:.2f}x",
            ]
        )
    report.table(
        ["page", "assets", "unminified", "gzipped", "unminified / before", "gzipped / before"],
        rows,
        right=2,
    )

    scripts = [
        ("asyncstate.js, before", before),
        ("asyncstate.js, now (core + jQuery plugin)", jquery_now["asyncstate.js"]),
        ("asyncstate.mjs, now (the plain module)", module_now["asyncstate.mjs"]),
        ("jQuery 3 (xstatic, minified)", jquery_now["jquery.js"]),
        ("htmx 2 (npm, minified)", htmx_now.get("htmx.min.js")),
        ("htmx-ext-sse (npm)", htmx_sse.get("sse.js")),
        ("the htmx widget's fragment (each poll)", htmx_now.get("fragment")),
    ]
    first = before or jquery_now["asyncstate.js"]
    rows = []
    for name, data in scripts:
        if data is None:
            missing = "(no git history)" if name.startswith("asyncstate") else "(npm ci first)"
            rows.append([name, missing, "-", "-", "-"])
            continue
        ratios = [f"{len(data) / len(first):.2f}x", f"{gz(data) / gz(first):.2f}x"]
        ours = name.startswith("asyncstate")
        rows.append([name, kib(len(data)), kib(gz(data)), *(ratios if ours else ["-", "-"])])
    report.table(
        [
            "script or fragment, as served",
            "unminified",
            "gzipped",
            "unminified / before",
            "gzipped / before",
        ],
        rows,
    )

    module = STATIC / "asyncstate.mjs"
    # the file's header, then its sections: the core, the Widget, the add-ons, the element
    header, core, widget, addons, element = section_lines(
        module, lambda line: line.startswith("// ---")
    )
    core += header
    adapter = len((STATIC / "asyncstate.js").read_text(encoding="utf-8").splitlines())
    report.table(
        ["source (prettier-formatted, wc -l)", "lines"],
        [
            ["asyncstate.js before: the whole jQuery widget", f"{old:,}" if old else "-"],
            ["asyncstate.mjs: the core (transport, state, cancel, Try again, events)", str(core)],
            ["asyncstate.mjs: the Widget (the markup, drawn)", str(widget)],
            ["asyncstate.mjs: the add-ons (page title, notification, result slot)", str(addons)],
            ["asyncstate.mjs: <asyncstate-progress>", str(element)],
            ["asyncstate.js now: the jQuery plugin", str(adapter)],
            ["core + jQuery plugin", str(core + adapter)],
            [
                "all a jQuery page runs (the module + the plugin)",
                str(core + widget + addons + element + adapter),
            ],
        ],
    )

    lines_met = report.check(TARGETS[0], core + adapter, shown=f"{core + adapter} lines")
    ratios = []
    if before:
        now = sizes["jQuery, now (core + jQuery plugin)"][1] / base_gz
        plain = sizes["plain module, now"][1] / base_gz
        ratios = [report.check(TARGETS[1], now), report.check(TARGETS[2], plain)]
        report.summary(
            "bytes of a widget page, gzipped: jQuery (jQuery + core + plugin); plain module",
            f"{kib(sizes['jQuery, now (core + jQuery plugin)'][1])}; "
            f"{kib(sizes['plain module, now'][1])}",
            f"the jQuery page before {kib(base_gz)} ({now:.2f}x; {plain:.2f}x)",
            "jQuery page <= 1x before; plain module <= 0.5x",
            all(ratios),
        )
    report.summary(
        "lines: the core + the jQuery plugin (prettier, wc -l)",
        f"{core + adapter}",
        f"the old asyncstate.js {old:,} (1,371 at issue 25)" if old else "",
        f"<= {ISSUE_LINES // 2}",
        lines_met,
    )
    report.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
