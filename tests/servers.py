"""Run the example app as a real server process on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import requests
from redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent


class AppProcess:
    """``flask --app example_app run`` in its own OS process (what the README tells users)."""

    def __init__(self, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.env = {**os.environ, "SECRET_KEY": "shared-test-secret", "EXAMPLE_PRODUCTS": "2000",
                    "EXAMPLE_BATCH": "20", "EXAMPLE_PAUSE": "0.05", **env}
        self.log_path = log_dir / f"app-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AppProcess:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "example_app", "run",
             "--host", "127.0.0.1", "--port", str(self.port), "--with-threads"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        self._log = log
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/asyncstate/jobs", timeout=1)
                return self
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"example app did not start: {self.log_path.read_text()}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        self._log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def csrf_token(browser: requests.Session, url: str) -> str:
    """The CSRF token of ``browser``'s session, from the page at ``url`` (the example's ``<meta>``)."""
    page = browser.get(url, timeout=5)
    page.raise_for_status()
    found = _CSRF_META.search(page.text)
    if found is None:
        raise AssertionError(f"no <meta name=csrf-token> in {url}")
    return found.group(1)


class GunicornProcess(AppProcess):
    """``gunicorn -k WORKER 'example_app:create_app()'`` in its own process group."""

    def __init__(self, log_dir: Path, worker_class: str = "gevent", workers: int = 1,
                 **env: str) -> None:
        super().__init__(log_dir, **env)
        self.worker_class = worker_class
        self.workers = workers
        self.log_path = log_dir / f"gunicorn-{self.port}.log"

    def start(self) -> GunicornProcess:
        from gunicorn.config import KNOWN_SETTINGS

        # gunicorn >= 25 opens a control socket in ~/.gunicorn: not wanted from a test
        quiet = [c for s in KNOWN_SETTINGS for c in s.cli or () if c == "--no-control-socket"]
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", self.worker_class, "-w", str(self.workers),
             "--bind", f"127.0.0.1:{self.port}", "--graceful-timeout", "5", *quiet,
             "example_app:create_app()"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # stop() can then kill the workers with the master
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/asyncstate/jobs", timeout=1)
                return self
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"gunicorn did not start: {self.log_path.read_text()}")
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to the master (graceful: workers cancel their jobs), SIGKILL to the group after 15 s."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # workers the master left behind
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self.proc = None
        self._log.close()
