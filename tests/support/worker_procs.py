"""Real worker processes for the executor tests: RQ (forking or simple) and Celery workers,
and web instances under ``flask run``, all serving ``tests/support/worker_app.py`` on one redis-server."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis
import requests

from support.redis_server import free_port
from support.waiting import wait_until

TESTS = Path(__file__).resolve().parents[1]  # on the path, so ``support.worker_app`` imports
XHR = {"X-Requested-With": "XMLHttpRequest"}


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a worker's work horse or pool processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def job_process(instance_id: str) -> int:
    """The pid of the process running a job whose document names ``instance_id``
    (host-pid-random): that process, or, for RQ's forking worker (whose work horse runs
    under the worker's instance id), its work horse."""
    pid = int(instance_id.rsplit("-", 2)[1])
    horses = descendants(pid)
    return horses[0] if horses else pid


class Engine:
    """One test's processes: a prefix and a queue of its own, web instances and workers."""

    def __init__(self, kind: str, redis_url: str, log_dir: Path) -> None:
        self.kind = kind  # "rq", "rq-simple" or "celery"
        tag = secrets.token_hex(3)
        self.prefix = f"wt{tag}:"
        self.queue = f"wt-{tag}"
        self.redis = redis.Redis.from_url(redis_url)
        self.log_dir = log_dir
        self.env = {
            **os.environ,
            "WT_REDIS_URL": redis_url,
            "WT_PREFIX": self.prefix,
            "WT_EXECUTOR": "celery" if kind == "celery" else "rq",
            "WT_QUEUE": self.queue,
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
        }
        self.webs: list[tuple[subprocess.Popen[bytes], str]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}-{len(self._logs)}.log", "wb")  # noqa: SIM115
        self._logs.append(log)
        return subprocess.Popen(
            argv,
            cwd=TESTS,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    # -- web instances -------------------------------------------------------

    def start_web(self) -> str:
        port = free_port()
        proc = self._spawn(
            "web",
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "support.worker_app",
                "run",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--with-threads",
            ],
        )
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert proc.poll() is None, f"web instance exited: see {self.log_dir}"
            try:
                return requests.get(f"{url}/asyncstate/jobs", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(answers, 30, interval=0.1, message="web instance answers")
        self.webs.append((proc, url))
        return url

    # -- workers ---------------------------------------------------------------

    def worker_argv(self) -> list[str]:
        if self.kind == "celery":
            return [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "support.worker_app:celery_app",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "--queues",
                self.queue,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
                "--hostname",
                f"w{secrets.token_hex(3)}@%h",
            ]
        argv = [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "support.worker_app",
            "asyncstate",
            "worker",
            "--queue",
            self.queue,
        ]
        return argv + (["--simple"] if self.kind == "rq-simple" else [])

    def start_workers(self, count: int) -> None:
        before = self.worker_instances()
        for _ in range(count):
            self.workers.append(self._spawn("worker", self.worker_argv()))
        wait_until(
            lambda: len(self.worker_instances() - before) >= count,
            60,
            interval=0.1,
            message=lambda: f"{count} {self.kind} workers beating (see {self.log_dir})",
        )

    def worker_instances(self) -> set[str]:
        """Ids of live instances whose role is a worker (each worker beats from the start)."""
        import json

        found = set()
        for key in self.redis.scan_iter(match=f"{self.prefix}{{flask_asyncstate.instance:*"):
            doc = self.redis.hget(key, "d")
            if doc and json.loads(doc).get("role", "web") != "web":
                found.add(key.decode())
        return found

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.workers = []

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and every process below it: a machine that died."""
        for pid in [proc.pid, *descendants(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(5)
        self.workers.remove(proc)

    def close(self) -> None:
        self.stop_workers()
        for proc, _ in self.webs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        for log in self._logs:
            log.close()

    # -- markers the jobs leave ------------------------------------------------

    def mark(self, what: str, job_id: str) -> bytes | None:
        value = self.redis.get(f"{self.prefix}mark:{what}:{job_id}")
        return value if value is None else bytes(value)
