"""Run the example app with ``flask run`` as a real server process on a free loopback port.

Under gunicorn it runs through :class:`gunicorn_server.GunicornServer`, the one
way the tests (and bench) start gunicorn; this module shares its environment
(:func:`gunicorn_server.app_environment`) and its CSRF-token parser.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Self

import requests

from support.gunicorn_server import ROOT, app_environment
from support.gunicorn_server import csrf_token as page_csrf_token
from support.redis_server import free_port
from support.waiting import WaitTimeout, wait_until


class AppProcess:
    """``flask --app example_app run`` in its own OS process (what the README tells users)."""

    def __init__(self, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.env = app_environment(
            {"EXAMPLE_PRODUCTS": "2000", "EXAMPLE_BATCH": "20", "EXAMPLE_PAUSE": "0.05", **env}
        )
        self.log_path = log_dir / f"app-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "example_app",
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--with-threads",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._answers, 30, interval=0.1, message="GET /asyncstate/jobs answers")
        except (WaitTimeout, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(
                f"example app did not start ({exc}): {self.log_path.read_text()}"
            ) from None
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"flask run exited with {self.proc.returncode}")
        try:
            requests.get(self.url + "/asyncstate/jobs", timeout=1)
        except requests.ConnectionError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def csrf_token(browser: requests.Session, url: str) -> str:
    """The CSRF token of ``browser``'s session, from the page at ``url`` (the example's ``<meta>``)."""
    page = browser.get(url, timeout=5)
    page.raise_for_status()
    found = page_csrf_token(page.text)
    if found is None:
        raise AssertionError(f"no <meta name=csrf-token> in {url}")
    return found
