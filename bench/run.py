"""Run every benchmark against one redis-server, then rebuild the summary table and the chart.

``run.py`` starts one throwaway ``redis-server`` on a free loopback port (never
6379) and runs each script in a fresh interpreter against it (``--redis-url``),
one after another, with ``FLUSHALL`` in between, so nothing one leaves running
skews the next (``stall.py`` freezes a server of its own; ``topologies.py``
adds a Redis Cluster of its own). Each script prints its tables and writes
``bench/out/<script>.json``. Then ``run.py`` writes, from every
``bench/out/*.json``:

- ``bench/out/results.md``: what the scripts printed, under a heading each;
- ``bench/out/summary.md``: the summary table; when every script's latest
  result is a full run, the same table goes between the markers in
  ``bench/README.md``;
- ``bench/out/chart.png``: one panel per figure (bars on a log scale, targets
  in red; lines on log-log axes over sizes), if matplotlib is installed.

``--strict`` is passed on: a script that misses a target exits with 3, the run
goes on, and ``run.py`` exits with 3 at the end. A script that fails stops the run.

    python bench/run.py                      # every script, full (about 8 minutes)
    python bench/run.py --quick              # every script, smallest sizes (about 3 minutes)
    python bench/run.py --only progress,cancel
    python bench/run.py --summary            # no run: rebuild from bench/out/*.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness
import redis

BENCHMARKS = (
    "store",
    "progress",
    "cancel",
    "throughput",
    "start",
    "scale",
    "flood",
    "stall",
    "workers",
    "topologies",
    "growth",
    "again",
    "observability",
    "structure",
    "bytes",
)
README = harness.BENCH / "README.md"
MARKERS = ("<!-- summary: start (bench/run.py writes this part) -->", "<!-- summary: end -->")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    found = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    found.add_argument("--quick", action="store_true", help="pass --quick to every script")
    found.add_argument("--strict", action="store_true", help="exit 3 if a target was missed")
    found.add_argument("--only", default=",".join(BENCHMARKS), help="a subset of the scripts")
    found.add_argument("--summary", action="store_true", help="run nothing: rebuild from out/")
    found.add_argument("--out", default=str(harness.OUT), help="results folder (bench/out)")
    args = found.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    if not args.only or set(args.only) - set(BENCHMARKS):
        found.error(f"--only: a subset of {', '.join(BENCHMARKS)}")
    return args


def run_all(args: argparse.Namespace) -> bool:
    """Run the scripts against one server; False if one missed a target (``--strict``)."""
    missed = False
    with harness.redis_server() as server:
        client = redis.Redis.from_url(server.url)
        print(f"One redis-server for the whole run: {server.url}, FLUSHALL between scripts.\n")
        for name in args.only:
            client.flushall()
            command = [sys.executable, str(harness.BENCH / f"{name}.py"), "--redis-url"]
            command += [server.url, "--out", args.out]
            command += ["--quick"] * args.quick + ["--strict"] * args.strict
            print(f"## {name}.py\n", flush=True)
            start = time.monotonic()
            done = subprocess.run(command, check=False, timeout=1200)
            print(f"\n({name}.py took {time.monotonic() - start:.0f} s)\n", flush=True)
            if done.returncode == harness.MISSED:
                missed = True
            elif done.returncode != 0:
                raise SystemExit(f"bench/{name}.py failed with exit code {done.returncode}")
        client.close()
    return not missed


# -- the summary ----------------------------------------------------------------------------


def load_results(out: str) -> list[dict[str, Any]]:
    """The latest result of each script, in the suite's order."""
    found = []
    for name in BENCHMARKS:
        path = Path(out) / f"{name}.json"
        if path.exists():
            found.append(json.loads(path.read_text(encoding="utf-8")))
    return found


def summary_table(results: list[dict[str, Any]]) -> str:
    """The heading line and the one summary table, from the scripts' ``summary`` rows."""
    dates = sorted({r["date"] for r in results})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    machine = re.search(r"redis-server [^;]*?, (Linux[^,]*, \d+ CPUs)", results[0]["text"])
    heading = (
        f"Latest results: {summary_title(results)}, {when}"
        f"{f' ({machine.group(1)})' if machine else ''}; `bench/out/<script>.json` has every "
        "figure, `bench/out/results.md` every table."
    )
    rows = []
    for result in results:
        for row in result["summary"]:
            met = {True: "yes", False: "**no**", None: ""}[row["met"]]
            cells = [row["what"], row["ours"], row["alternatives"], row["target"], met]
            rows.append([f"`{result['script']}.py`", *cells])
    header = ["script", "what", "ours", "alternatives, same run", "target", "met"]
    return f"{heading}\n\n{harness.markdown_table(header, rows, right=99)}"


def write_summary(results: list[dict[str, Any]], out: str) -> None:
    table = summary_table(results)
    Path(out, "summary.md").write_text(table + "\n", encoding="utf-8")
    text = "\n\n".join(
        f"## {r['script']}.py ({r['seconds']:.0f} s)\n\n{r['text']}" for r in results
    )
    Path(out, "results.md").write_text(text + "\n", encoding="utf-8")
    if len(results) == len(BENCHMARKS) and all(r["mode"] == "full" for r in results):
        readme = README.read_text(encoding="utf-8")
        start, end = readme.index(MARKERS[0]), readme.index(MARKERS[1])
        readme = f"{readme[:start]}{MARKERS[0]}\n{table}\n{readme[end:]}"
        README.write_text(readme, encoding="utf-8")
        print(f"Summary table: {os.path.relpath(README)}")
    else:
        print(
            f"Summary table: {os.path.relpath(Path(out, 'summary.md'))} (bench/README.md keeps "
            "its table: it takes only a full result of every script)"
        )


# -- the chart ------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    if value >= 100 or (value >= 1 and value == int(value)):
        text = f"{value:,.0f}"
    else:
        text = f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return f"{text}{'x' if unit == 'x' else ' ' + unit}"


def _panel_height(p: dict[str, Any]) -> float:
    if p.get("kind") == "loglog":
        return 3.0
    return 0.32 * len(p["bars"]) + 1.25


def _target_line(p: dict[str, Any]) -> dict[str, Any]:
    """How a panel's target is drawn: a red dashed line, labelled."""
    label = p.get("target_label") or "target"
    return {"color": "#c44e52", "linestyle": "--", "linewidth": 1.2, "label": label}


def _plain_ticks(*axes: Any) -> None:
    """Major ticks as plain numbers (1,000 rather than 10^3), no minor tick labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for axis in axes:
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.10g}"))
        axis.set_minor_formatter(NullFormatter())


def _draw_loglog(ax: Any, p: dict[str, Any]) -> None:
    """A ``kind: loglog`` panel: one line per series over sizes, both axes on a log scale."""
    from matplotlib.ticker import LogLocator

    ys: list[float] = []
    for series in p["series"]:
        points = [(x, y) for x, y in series["points"] if x > 0 and y > 0]  # a log axis: no zeros
        if not points:
            continue
        xs, values = zip(*points)
        ys += values
        ax.plot(xs, values, marker="o", markersize=4, linewidth=1.4, label=series["label"])
        ax.annotate(
            _fmt(values[-1], p["unit"]),
            (xs[-1], values[-1]),
            textcoords="offset points",
            xytext=(4, 2),
            fontsize=7,
        )
    if p.get("target"):
        ax.axhline(p["target"], **_target_line(p))
        ys.append(p["target"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    if ys:
        ax.set_ylim(min(ys) / 2, max(ys) * 2)
    ticks = sorted({x for s in p["series"] for x, _y in s["points"] if x > 0})
    if ticks:
        ax.set_xticks(ticks)
        ax.set_xlim(ticks[0] / 1.5, ticks[-1] * 1.5)
    if ys and max(ys) / (min(ys) / 4) <= 3000:  # a narrow range: label 1, 2 and 5 too
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    _plain_ticks(ax.xaxis, ax.yaxis)
    ax.tick_params(labelsize=7.5)
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    ax.set_title(p["title"], fontsize=9, loc="left")
    ax.set_xlabel(f"{p.get('x_label', '')} (log scale)", fontsize=8)
    ax.set_ylabel(f"{p['unit']} (log scale)", fontsize=8)
    ax.legend(fontsize=7, loc="best")


def _draw_panel(ax: Any, p: dict[str, Any]) -> None:
    from matplotlib.ticker import LogLocator

    if p.get("kind") == "loglog":
        _draw_loglog(ax, p)
        return
    labels = [bar[0] for bar in p["bars"]][::-1]
    values = [bar[1] for bar in p["bars"]][::-1]
    targets = [bar[2] if len(bar) > 2 else None for bar in p["bars"]][::-1]
    ys = list(range(len(values)))
    ax.barh(ys, values, color="#4c72b0", height=0.6)
    ax.set_xscale("log")
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_title(p["title"], fontsize=9, loc="left")
    ax.set_xlabel(f"{p['unit']} (log scale)", fontsize=8)
    marks = [v for v in values if v > 0] + [t for t in targets if t]
    marks += [m for m in (p.get("target"), p.get("reference")) if m]
    low, high = min(marks) / 2.5, max(marks) * 5
    ax.set_xlim(low, high)
    subs = (1.0,) if high / low > 3000 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    _plain_ticks(ax.xaxis)
    ax.tick_params(axis="x", labelsize=7.5)
    if p.get("reference"):
        ax.axvline(p["reference"], color="grey", linewidth=0.8)
    handles = False
    if p.get("target"):
        ax.axvline(p["target"], **_target_line(p))
        handles = True
    for y, value, target in zip(ys, values, targets):
        ax.text(value * 1.08, y, _fmt(value, p["unit"]), va="center", fontsize=7.5)
        if target:
            ax.plot([target, target], [y - 0.42, y + 0.42], color="#c44e52", linewidth=2)
    if any(targets):
        ax.plot([], [], color="#c44e52", linewidth=2, label="target of that bar")
        handles = True
    if handles:
        ax.legend(fontsize=7, loc="best")


def draw_chart(path: str, panels: list[dict[str, Any]], notes: list[str], title: str) -> None:
    """One panel per figure in two columns: horizontal bars on a log x axis (or, for a
    ``kind: loglog`` panel, lines on log-log axes), targets in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns: list[list[dict[str, Any]]] = [[], []]
    for p in panels:  # in order, each into the shorter column
        min(columns, key=lambda col: sum(map(_panel_height, col))).append(p)
    tallest = max(sum(map(_panel_height, col)) for col in columns)
    extra = 0.6 + 0.2 * len(notes)
    fig = plt.figure(figsize=(16, tallest + extra), layout="constrained")
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    subfigures = list(fig.subfigures(1, 2, wspace=0.04))  # type: ignore[arg-type]
    for sub, col in zip(subfigures, columns):
        if not col:
            continue
        heights = [_panel_height(p) for p in col]
        filler = tallest - sum(heights)
        axes = sub.subplots(
            len(col) + (1 if filler > 0.05 else 0),
            1,
            height_ratios=heights + ([filler] if filler > 0.05 else []),
            squeeze=False,
        )[:, 0]
        for ax, p in zip(axes, col):
            _draw_panel(ax, p)
        for ax in axes[len(col) :]:
            ax.axis("off")
            if notes:
                ax.text(0, 0.5, "\n".join(notes), fontsize=8.5, va="center", wrap=True)
                notes = []
    if notes:
        fig.text(0.01, 0.005, "\n".join(notes), fontsize=8.5, va="bottom")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def chart(results: list[dict[str, Any]], out: str) -> None:
    panels = [p for r in results for p in r["panels"]]
    notes = [f"{r['script']}.py: {note}" for r in results for note in r["notes"]]
    if not panels:
        return
    try:
        draw_chart(
            str(Path(out, "chart.png")), panels, notes, "Benchmarks: " + summary_title(results)
        )
    except ImportError:
        print("No chart: pip install matplotlib")
        return
    print(f"Chart: {os.path.relpath(Path(out, 'chart.png'))}")


def summary_title(results: list[dict[str, Any]]) -> str:
    """``full run at 0a76b3d``, ``full/quick runs at 0a76b3d, 1b2c3d4``."""
    modes, commits = sorted({r["mode"] for r in results}), sorted({r["commit"] for r in results})
    runs = "run" if len(modes) == 1 and len(commits) == 1 else "runs"
    return f"{'/'.join(modes)} {runs} at {', '.join(commits)}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    met = True
    if not args.summary:
        print(f"# Benchmarks, {datetime.date.today().isoformat()}, {harness.checkout()}\n")
        met = run_all(args)
    results = load_results(args.out)
    if not results:
        raise SystemExit(f"no results in {args.out}: run the scripts first")
    write_summary(results, args.out)
    chart(results, args.out)
    if not met:
        raise SystemExit(harness.MISSED)


if __name__ == "__main__":
    main()
