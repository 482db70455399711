"""Run every benchmark (store, progress, cancel) in one go and print each one's tables.

Each benchmark runs in its own Python process, one after another, so that no
thread or app left over by one (job runners, cancel listeners, workers) skews
the next; each starts and stops its own throwaway redis-server (never port 6379).

Run from the repository root::

    python bench/run.py                   # full run, about 1.5 minutes
    python bench/run.py --quick           # smoke run, under 30 s
    python bench/run.py --only progress,cancel --output bench/out/latest.md

``--output`` also writes everything printed, as markdown, to a file (bench/out/
is git-ignored).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = ("store", "progress", "cancel")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--output", help="also write the markdown report to this file")
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
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "..")
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def run_one(name: str, quick: bool) -> tuple[str, float]:
    """Run ``bench/<name>.py`` in a fresh interpreter; its stdout and wall time in s.

    Its stderr goes straight to ours; a failing benchmark stops the run.
    """
    command = [sys.executable, os.path.join(HERE, f"{name}.py")] + (["--quick"] if quick else [])
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        raise SystemExit(f"bench/{name}.py failed with exit code {done.returncode}")
    return done.stdout.rstrip() + "\n", took


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    mode = "--quick" if args.quick else "full"
    report = [f"# Benchmarks, {datetime.date.today().isoformat()} ({mode} run of {checkout()})\n"]
    print(report[0])
    total = time.perf_counter()
    for name in args.only:
        output, took = run_one(name, args.quick)
        section = f"## {name}.py ({took:.0f} s)\n\n{output}"
        print(section, flush=True)
        report.append(section)
    footer = f"All done in {time.perf_counter() - total:.0f} s."
    print(footer)
    report.append(footer + "\n")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write("\n".join(report))


if __name__ == "__main__":
    main()
