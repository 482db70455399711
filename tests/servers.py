"""Run the example app as a real server process on a free loopback port."""

from __future__ import annotations

import os
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
