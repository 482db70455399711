"""Run every benchmark in one go against one redis-server: print the tables, write a report and a chart.

``run.py`` starts one throwaway ``redis-server`` on a free loopback port (never
6379), then runs each benchmark in its own Python process, one after another,
against that server (``--redis-url``), with ``FLUSHALL`` between two of them,
so that no thread or app left over by one (job runners, cancel listeners,
workers) skews the next. (``stall.py`` takes the option too, but freezes a
redis-server of its own rather than the shared one; ``workers.py`` starts RQ
and Celery worker processes on the shared server and stops them before it
exits; ``topologies.py`` measures the shared server beside a Redis Cluster
of its own, which it starts and stops; ``growth.py`` starts instances and a
gevent gunicorn on the shared server and stops them before it exits.) It
prints each one's tables under a heading with its wall time, and writes:

- ``bench/out/results.md``: the same markdown (``--output`` to change it);
- ``bench/out/chart.png``: one panel per figure (ratios against the
  alternatives, latencies, round trips, bytes), horizontal bars on a log scale
  with the targets drawn in, and for ``growth.py``'s figures over sizes, lines
  on log-log axes (matplotlib, Agg backend; ``--chart`` to change it).

``bench/out/`` is git-ignored.

Run from the repository root::

    python bench/run.py                   # full run, about 8 minutes
    python bench/run.py --quick           # smoke run, about 3 minutes
    python bench/run.py --only progress,cancel
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import redis
from _common import redis_server

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
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
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--output",
        default=os.path.join(OUT, "results.md"),
        help="markdown report (default bench/out/results.md)",
    )
    parser.add_argument(
        "--chart",
        default=os.path.join(OUT, "chart.png"),
        help="PNG chart (default bench/out/chart.png; '' for none)",
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown or not args.only:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    return args


def checkout() -> str:
    """The commit measured, and whether the work tree had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = git("status", "--porcelain", "--untracked-files=all", "--", "..")
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def run_one(name: str, quick: bool, redis_url: str, json_path: str) -> tuple[str, float]:
    """Run ``bench/<name>.py`` in a fresh interpreter; its stdout and wall time in s.

    Its stderr goes straight to ours; a failing benchmark stops the run.
    """
    command = [
        sys.executable,
        os.path.join(HERE, f"{name}.py"),
        "--redis-url",
        redis_url,
        "--json",
        json_path,
    ] + (["--quick"] if quick else [])
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, timeout=1200)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        raise SystemExit(f"bench/{name}.py failed with exit code {done.returncode}")
    return done.stdout.rstrip() + "\n", took


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


def _draw_loglog(ax: Any, p: dict[str, Any]) -> None:
    """A ``kind: loglog`` panel: one line per series over sizes, both axes on a log scale."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

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
        ax.axhline(
            p["target"],
            color="#c44e52",
            linestyle="--",
            linewidth=1.2,
            label=p.get("target_label") or "target",
        )
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
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.10g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.tick_params(labelsize=7.5)
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    ax.set_title(p["title"], fontsize=9, loc="left")
    ax.set_xlabel(f"{p.get('x_label', '')} (log scale)", fontsize=8)
    ax.set_ylabel(f"{p['unit']} (log scale)", fontsize=8)
    ax.legend(fontsize=7, loc="best")


def _draw_panel(ax: Any, p: dict[str, Any]) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

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
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.10g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=7.5)
    if p.get("reference"):
        ax.axvline(p["reference"], color="grey", linewidth=0.8)
    handles = False
    if p.get("target"):
        ax.axvline(
            p["target"],
            color="#c44e52",
            linestyle="--",
            linewidth=1.2,
            label=p.get("target_label") or "target",
        )
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


# -- driver ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    mode = "--quick" if args.quick else "full"
    title = f"Benchmarks, {datetime.date.today().isoformat()} ({mode} run of {checkout()})"
    report = [f"# {title}\n"]
    print(report[0])
    panels: list[dict[str, Any]] = []
    notes: list[str] = []
    total = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="asyncstate-bench-") as tmp, redis_server() as server:
        client = redis.Redis.from_url(server.url)
        line = (
            f"One redis-server for the whole run: {server.url} (started by run.py, "
            f"FLUSHALL between benchmarks).\n"
        )
        print(line)
        report.append(line)
        for name in args.only:
            client.flushall()
            json_path = os.path.join(tmp, f"{name}.json")
            output, took = run_one(name, args.quick, server.url, json_path)
            section = f"## {name}.py ({took:.0f} s)\n\n{output}"
            print(section, flush=True)
            report.append(section)
            if os.path.exists(json_path):
                with open(json_path, encoding="utf-8") as fh:
                    figures = json.load(fh)
                panels += figures.get("panels", [])
                notes += [f"{name}.py: {note}" for note in figures.get("notes", [])]
        client.close()
    footer = f"All done in {time.perf_counter() - total:.0f} s."
    print(footer)
    report.append(footer + "\n")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as fh:
        fh.write("\n".join(report))
    print(f"Report: {os.path.relpath(args.output)}")
    if args.chart and panels:
        draw_chart(args.chart, panels, notes, title)
        print(f"Chart: {os.path.relpath(args.chart)}")


if __name__ == "__main__":
    main()
