"""The example app under real gunicorn, plus the small HTTP client steps the load tests share.

:class:`GunicornServer` runs ``python -m gunicorn -k gthread --workers W --threads T
--bind 127.0.0.1:PORT 'example_app:create_app()'`` (or ``-k gevent``) from the
repository root on a free loopback port, as a context manager: environment
overrides, a log file in a directory of yours, a readiness wait, and a stop that
sends SIGTERM and then SIGKILLs the server's own process group.

The client helpers work whether or not the example protects ``POST /import``
with Flask-WTF's CSRF token: :func:`prepare` loads ``/`` and returns the token
if the page carries one (hidden ``csrf_token`` input or ``csrf-token`` meta
tag), and :func:`post_import` / :func:`post_cancel` send it when given.

This is the one way the tests run gunicorn (``tests/support/servers.py`` runs ``flask run``).
Used by ``tests/test_flood.py``, ``tests/test_stall.py``, ``tests/test_reliability.py``,
``tests/test_example_app.py`` and, through ``bench/harness.py``'s borrowed helpers, by
``bench/flood.py`` and ``bench/stall.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Self

import gunicorn
import redis
import requests

from support.redis_server import RedisServer, free_port
from support.waiting import WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parents[2]

#: Secret shared by every worker (and by the CLI run against the same store).
SECRET_KEY = "shared-test-secret"

#: Inherited variables that would change what the example app does; dropped unless overridden.
_APP_VARIABLES = ("REDIS_URL", "SESSION_DIR", "SECRET_KEY")
_APP_PREFIXES = ("FLASK_", "EXAMPLE_")

JSON_ACCEPT = {"Accept": "application/json"}
XHR = {"X-Requested-With": "XMLHttpRequest"}


def app_environment(overrides: dict[str, str]) -> dict[str, str]:
    """``os.environ`` without the example's own settings, then ``SECRET_KEY`` and ``overrides``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in _APP_VARIABLES and not k.startswith(_APP_PREFIXES)
    }
    return {**base, "SECRET_KEY": SECRET_KEY, **overrides}


def worker_pids(master: int) -> list[int]:
    """Pids of the direct children of ``master`` (gunicorn's workers), read from ``/proc``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(master):
            found.append(int(entry))
    return sorted(found)


def rss_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB (``VmRSS`` of ``/proc/<pid>/status``), None if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class GunicornServer:
    """``python -m gunicorn ... 'example_app:create_app()'`` on a free loopback port.

    ``env`` overrides the app's environment (see :func:`app_environment`);
    ``worker_class`` is ``"gthread"`` (``threads`` per worker) or ``"gevent"``
    (``worker_connections`` per worker). The log (gunicorn's and the app's
    stderr) goes to ``log_dir/gunicorn-<port>.log``. ``app`` is another WSGI app
    to serve (it must answer ``GET /``; a module of ``tests/`` needs ``PYTHONPATH``
    in ``env``).
    """

    def __init__(
        self,
        log_dir: Path | str,
        *,
        workers: int = 1,
        threads: int = 16,
        worker_class: str = "gthread",
        worker_connections: int = 1000,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        ready_timeout: float = 30.0,
        graceful_timeout: float = 10.0,
        app: str = "example_app:create_app()",
    ) -> None:
        if worker_class not in ("gthread", "gevent"):
            raise ValueError(f"worker_class must be 'gthread' or 'gevent', got {worker_class!r}")
        self.port = free_port()
        self.workers = workers
        self.threads = threads
        self.worker_class = worker_class
        self.worker_connections = worker_connections
        self.env = app_environment(env or {})
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self.graceful_timeout = graceful_timeout
        self.app = app
        self.log_path = Path(log_dir) / f"gunicorn-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The gunicorn command line."""
        concurrency = (
            ["--threads", str(self.threads)]
            if self.worker_class == "gthread"
            else ["--worker-connections", str(self.worker_connections)]
        )
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            self.worker_class,
            "--workers",
            str(self.workers),
            *concurrency,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--graceful-timeout",
            str(int(self.graceful_timeout)),
            # 25.1+ opens a control socket at one fixed path per user: two servers would share it
            *(["--no-control-socket"] if gunicorn.version_info >= (25, 1) else []),
            *self.extra_args,
            self.app,
        ]

    def start(self) -> Self:
        """Start gunicorn and wait until ``GET /`` answers and every worker is up."""
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() can kill workers too
        )
        try:
            wait_until(
                self._ready,
                self.ready_timeout,
                interval=0.1,
                message="GET / answers 200 with every worker up",
            )
        except (WaitTimeout, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"gunicorn did not start ({exc}):\n{self.log_text()}") from None
        return self

    def _ready(self) -> bool:
        """``GET /`` answers 200 and every worker is up; RuntimeError if gunicorn exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {self.proc.returncode}")
        try:
            answer = requests.get(self.url + "/", timeout=2)
        except requests.RequestException:
            return False
        return answer.status_code == 200 and len(self.current_workers()) >= self.workers

    def current_workers(self) -> list[int]:
        """Pids of the current gunicorn workers."""
        return worker_pids(self.proc.pid) if self.proc is not None else []

    def worker_pid(self) -> int:
        """The pid of the only worker (for ``workers=1``)."""
        pids = self.current_workers()
        if len(pids) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {pids}")
        return pids[0]

    def log_text(self, tail: int = 8000) -> str:
        """The last ``tail`` characters of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the master, wait for the graceful shutdown, then SIGKILL the process group."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(self.graceful_timeout + 5)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # workers left behind, if any
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``flask --app example_app asyncstate ARGS`` with the server's environment."""
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "example_app", "asyncstate", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli_json(self, *args: str, timeout: float = 60) -> Any:
        """The JSON a CLI command printed; RuntimeError with its output if it failed."""
        done = self.cli(*args, "--json", timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(
                f"asyncstate {' '.join(args)} --json failed: {done.stdout}{done.stderr}"
            )
        return json.loads(done.stdout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- client steps ----------------------------------------------------------------------------


class _CsrfFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.token: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if self.token is None and found.get("name") in ("csrf_token", "csrf-token"):
            self.token = found.get("value") or found.get("content") or None


def csrf_token(html: str) -> str | None:
    """The CSRF token a page carries (hidden ``csrf_token`` input or ``csrf-token`` meta)."""
    finder = _CsrfFinder()
    finder.feed(html)
    return finder.token


def prepare(client: requests.Session, base_url: str, timeout: float = 10) -> str | None:
    """``GET /`` with ``client`` (its cookie jar keeps the session); the page's CSRF token."""
    page = client.get(base_url + "/", timeout=timeout)
    page.raise_for_status()
    return csrf_token(page.text)


def csrf_headers(token: str | None) -> dict[str, str]:
    return {"X-CSRFToken": token} if token else {}


def post_import(
    client: requests.Session | None, base_url: str, token: str | None = None, timeout: float = 10
) -> requests.Response:
    """``POST /import`` as a JSON client (no redirect followed); the CSRF token if given.

    ``client=None`` sends it with a fresh, empty cookie jar.
    """
    headers = {**JSON_ACCEPT, **csrf_headers(token)}
    data = {"csrf_token": token} if token else {}
    send = client.post if client is not None else requests.post
    return send(
        base_url + "/import", headers=headers, data=data, allow_redirects=False, timeout=timeout
    )


def post_cancel(
    client: requests.Session,
    base_url: str,
    job_token: str,
    csrf: str | None = None,
    timeout: float = 10,
) -> requests.Response:
    """``POST /asyncstate/cancel/<token>`` as the widget sends it."""
    return client.post(
        f"{base_url}/asyncstate/cancel/{job_token}",
        headers={**XHR, **JSON_ACCEPT, **csrf_headers(csrf)},
        timeout=timeout,
    )


def clone(client: requests.Session) -> requests.Session:
    """A new ``requests.Session`` with a copy of ``client``'s cookies (same Flask session)."""
    copy = requests.Session()
    copy.cookies.update(client.cookies)
    return copy


def is_json(response: requests.Response) -> bool:
    """The answer says it is JSON and parses as JSON."""
    if response.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
        return False
    try:
        response.json()
    except ValueError:
        return False
    return True


def job_token(response: requests.Response) -> str | None:
    """The job token of an accepted ``POST /import`` (202 JSON), else None."""
    if response.status_code != 202 or not is_json(response):
        return None
    token = response.json().get("token")
    return token if isinstance(token, str) else None


# -- the store, read directly or stalled ------------------------------------------------------


def instances_in_redis(url: str, prefix: str = "asyncstate:") -> list[dict[str, Any]]:
    """Heartbeat documents of live instances, read from Redis.

    The keys are ``<prefix>{flask_asyncstate.instance:*}``; both layouts an entry may
    have are read: a hash whose ``d`` field holds the JSON document (today's), or a
    plain JSON string.
    """
    client = redis.Redis.from_url(url, socket_timeout=5)
    found = []
    try:
        for key in client.scan_iter(match=f"{prefix}{{flask_asyncstate.instance:*", count=1000):
            kind = client.type(key)
            raw = (
                client.hget(key, "d")
                if kind == b"hash"
                else (client.get(key) if kind == b"string" else None)
            )
            if raw is None:
                continue
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if isinstance(doc, dict):
                found.append(doc)
    finally:
        client.close()
    return found


def beat_age(url: str, pid: int, prefix: str = "asyncstate:") -> float:
    """Seconds since the last heartbeat of the instance in process ``pid`` (inf: no live entry)."""
    beats: list[float] = [
        doc["beat_at"]
        for doc in instances_in_redis(url, prefix)
        if doc.get("pid") == pid and isinstance(doc.get("beat_at"), (int, float))
    ]
    return time.time() - max(beats) if beats else float("inf")


def instances(server: GunicornServer, redis_url: str) -> tuple[list[dict[str, Any]], str]:
    """Live instances: from ``asyncstate instances --json`` if the CLI has it, else from Redis.

    Returns the documents and where they came from.
    """
    done = server.cli("instances", "--json", timeout=60)
    if done.returncode == 0:
        try:
            parsed = json.loads(done.stdout)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return parsed, "CLI instances --json"
    return instances_in_redis(redis_url), "Redis instance keys"


# -- timing answers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One timed request: when it was sent and answered (``time.monotonic()``), and how."""

    sent: float
    answered: float
    status: int | None  # None: no answer (timeout, connection error)
    json: bool = False
    retry_after: str | None = None
    error: str | None = None
    body: Any = None

    @property
    def took(self) -> float:
        return self.answered - self.sent


def timed_request(send: Callable[[], requests.Response]) -> Sample:
    """Call ``send()`` and describe its answer as a :class:`Sample`."""
    sent = time.monotonic()
    try:
        answer = send()
    except requests.RequestException as exc:
        return Sample(sent, time.monotonic(), None, error=f"{type(exc).__name__}: {exc}")
    answered = time.monotonic()
    ok = is_json(answer)
    return Sample(
        sent,
        answered,
        answer.status_code,
        ok,
        answer.headers.get("Retry-After"),
        body=answer.json() if ok else answer.text[:200],
    )


class Prober:
    """A thread that sends a request every ``every`` seconds and keeps a :class:`Sample` of each.

    Requests go out on a fixed schedule (first after ``offset`` s); one that is late
    because the previous answer was slow goes out at once, and missed beats are
    skipped, so a slow server is not flooded with catch-up requests.
    """

    def __init__(
        self, send: Callable[[], requests.Response], every: float, offset: float = 0.0
    ) -> None:
        self.send = send
        self.every = every
        self.offset = offset
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="prober")

    def _loop(self) -> None:
        next_at = time.monotonic() + self.offset
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.samples.append(timed_request(self.send))
            next_at += self.every
            next_at = max(next_at, time.monotonic())

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop after the request in flight (if any); the samples."""
        self._stop.set()
        self._thread.join(60)
        return self.samples

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def spread(values: Sequence[float], unit: float = 1000.0) -> str:
    """``n=.. p50 .. p90 .. p99 .. max ..`` in ms (``unit`` scales seconds)."""
    if not values:
        return "n=0"
    return (
        f"n={len(values)} p50 {percentile(values, 50) * unit:.0f} p90 "
        f"{percentile(values, 90) * unit:.0f} p99 {percentile(values, 99) * unit:.0f} "
        f"max {max(values) * unit:.0f} ms"
    )


STALLS = ("sigstop", "pause")


def stall_redis(server: RedisServer, how: str, seconds: float) -> float:
    """Make ``server`` stop answering for ``seconds``, blocking; ``time.monotonic()`` at its end.

    ``sigstop``: SIGSTOP the process, SIGCONT it after ``seconds`` (always, even if
    interrupted). ``pause``: ``CLIENT PAUSE <ms> ALL``, which Redis ends by itself
    (a ``CLIENT UNPAUSE`` would wait behind the pause too). Use a server of your own:
    every client of it stalls.
    """
    if how not in STALLS:
        raise ValueError(f"how must be one of {STALLS}, got {how!r}")
    if server.proc is None or server.proc.poll() is not None:
        raise RuntimeError("the redis-server to stall is not running")
    if how == "sigstop":
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)  # the stall itself
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        return time.monotonic()
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    try:
        client.execute_command("CLIENT", "PAUSE", str(int(seconds * 1000)), "ALL")
        began = time.monotonic()
    finally:
        client.close()
    time.sleep(max(0.0, began + seconds - time.monotonic()))  # block for as long as it lasts
    return began + seconds
