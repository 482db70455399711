"""Real Redis topologies on free loopback ports: TLS, ACL users, Sentinel, Cluster (never 6379).

Each class starts throwaway ``redis-server`` processes in a temporary directory,
without persistence (``--save "" --appendonly no``; a cluster node keeps only the
``nodes-<port>.conf`` it needs, a sentinel the config file it rewrites). Use them as
context managers, or call ``start()`` / ``stop()``::

    with SentinelSet() as sentinel_set:
        client = sentinel_set.client()
        ...
        sentinel_set.failover()

``start()`` waits (briefly) until the topology is usable and raises ``RuntimeError``
with the tail of the relevant server logs if it is not; if it fails, whatever it
had started is stopped before the error propagates. ``stop()`` stops every process
that was started, even after failures, and removes the temporary directory.
Addresses are ``(host, port)`` tuples, host always ``"127.0.0.1"``.
"""

from __future__ import annotations

import atexit
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from support.redis_server import free_port
from support.waiting import WaitTimeout, wait_until

HOST = "127.0.0.1"
Address = tuple[str, int]

# What every server gets: loopback only, no persistence, no waiting for replicas at shutdown.
_COMMON = [
    "--bind",
    HOST,
    "--protected-mode",
    "no",
    "--save",
    "",
    "--appendonly",
    "no",
    "--shutdown-timeout",
    "0",
    # a replica's full sync starts at once (the default waits 5 s for more replicas to join)
    "--repl-diskless-sync-delay",
    "0",
]


def _redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
    return binary


def _free_ports(count: int, taken: Iterable[int] = ()) -> list[int]:
    """``count`` distinct free loopback ports (``free_port()`` may hand out one twice)."""
    seen = set(taken)
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in seen and port != 6379:
            seen.add(port)
            ports.append(port)
    return ports


def _info_fields(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            fields[key.strip()] = value.strip()
    return fields


class _Process:
    """One ``redis-server`` process whose stdout and stderr go to a log file."""

    def __init__(self, name: str, args: list[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                args, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        except BaseException:
            self._log.close()
            raise

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}")

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
        finally:
            self._log.close()


_LIVE: set[_Topology] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Safety net: a topology nobody stopped (a crashed fixture) is stopped at exit."""
    for topology in list(_LIVE):
        try:
            topology.stop()
        except Exception:  # noqa: BLE001, S110 - exiting anyway
            pass


class _Topology:
    """Temporary directory, processes, readiness waits with log tails, and cleanup."""

    kind = "topology"

    def __init__(self, keep_dir: bool = False) -> None:
        self.binary = _redis_server_binary()
        self.dir = Path(tempfile.mkdtemp(prefix=f"asyncstate-{self.kind}-"))
        self.keep_dir = keep_dir
        self.processes: dict[str, _Process] = {}
        self.startup_seconds: float | None = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._started:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._started = True
        _LIVE.add(self)
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process started (all signalled at once, then waited for), remove the dir."""
        errors: list[str] = []
        processes = list(self.processes.values())[::-1]  # sentinels and replicas first
        for process in processes:
            try:
                process.terminate()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                errors.append(f"{process.name}: {exc!r}")
        for process in processes:
            try:
                process.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                errors.append(f"{process.name}: {exc!r}")
        self.processes.clear()
        _LIVE.discard(self)
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise RuntimeError("could not stop cleanly: " + "; ".join(errors))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers for subclasses --------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> _Process:
        process = _Process(name, [self.binary, *args], self.dir / f"{name}.log", self.dir)
        self.processes[name] = process
        return process

    def logs(self, names: Iterable[str] | None = None, lines: int = 25) -> str:
        chosen = list(self.processes) if names is None else list(names)
        return "\n".join(
            f"--- {name} ({self.processes[name].log_path}) ---\n"
            + self.processes[name].log_tail(lines)
            for name in chosen
            if name in self.processes
        )

    def _wait(
        self,
        predicate: Callable[[], Any],
        what: str,
        timeout: float = 10.0,
        interval: float = 0.05,
        logs: Iterable[str] | None = None,
    ) -> Any:
        """Poll ``predicate`` (a Redis error counts as "not yet"); fail with the logs' tails."""
        last_error: list[BaseException] = []

        def attempt() -> Any:
            for process in self.processes.values():
                process.check_alive()
            try:
                return predicate()
            except (redis.RedisError, OSError) as exc:
                last_error[:] = [exc]
                return None

        try:
            return wait_until(attempt, timeout, interval=interval, message=what)
        except (WaitTimeout, RuntimeError) as exc:
            cause = f" (last error: {last_error[0]!r})" if last_error else ""
            raise RuntimeError(f"{type(self).__name__}: {exc}{cause}\n{self.logs(logs)}") from None


def _role(client: redis.Redis) -> dict[str, str]:
    """``INFO replication`` as strings (redis-py parses numbers)."""
    return {key: str(value) for key, value in client.info("replication").items()}


_NO_RETRY = {"retry": Retry(NoBackoff(), 0)}


def _probe(port: int, **kwargs: Any) -> redis.Redis:
    """A client for the helpers' own checks: 1 s timeouts, no retries (redis-py retries 10x)."""
    options: dict[str, Any] = {"socket_timeout": 1, "socket_connect_timeout": 1, **_NO_RETRY}
    return redis.Redis(host=HOST, port=port, **{**options, **kwargs})


# == TLS =================================================================================


class TlsRedis(_Topology):
    """A TLS-only redis-server with a throwaway CA and a certificate for IP 127.0.0.1.

    ``url`` verifies the certificate: redis-py passes unknown URL query parameters
    through as strings, so ``?ssl_ca_certs=<path>`` reaches ``SSLConnection`` (and
    ``ssl_cert_reqs`` defaults to ``"required"``, ``ssl_check_hostname`` to True).
    """

    kind = "tls"

    def __init__(self, port: int | None = None, keep_dir: bool = False) -> None:
        super().__init__(keep_dir)
        self.port = port or _free_ports(1)[0]
        self.ca_path = str(self.dir / "ca.crt")
        self.cert_path = str(self.dir / "server.crt")
        self.key_path = str(self.dir / "server.key")

    @property
    def url(self) -> str:
        return f"rediss://{HOST}:{self.port}/0?ssl_ca_certs={quote(self.ca_path, safe='/')}"

    @property
    def ssl_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` giving a verified TLS connection."""
        return {"ssl": True, "ssl_ca_certs": self.ca_path, "ssl_cert_reqs": "required"}

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis.Redis that verifies the server certificate against :attr:`ca_path`."""
        return redis.Redis(host=HOST, port=self.port, **{**self.ssl_kwargs, **kwargs})

    def _openssl(self, *args: str) -> None:
        done = subprocess.run(
            ["openssl", *args], cwd=self.dir, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")

    def _make_certificates(self) -> None:
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self._openssl(
            "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=flask-asyncstate throwaway test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        self._openssl(
            "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
            "-subj", f"/CN={HOST}",
        )  # fmt: skip
        (self.dir / "server.ext").write_text(
            f"subjectAltName=IP:{HOST}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        self._openssl(
            "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
        )  # fmt: skip

    def _start(self) -> None:
        self._make_certificates()
        self._spawn(
            "redis-tls",
            [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", self.cert_path,
                "--tls-key-file", self.key_path,
                "--tls-ca-cert-file", self.ca_path,
                "--tls-auth-clients", "no",
                "--dir", str(self.dir),
                *_COMMON,
            ],
        )  # fmt: skip

        def answers() -> bool:
            with _probe(self.port, **self.ssl_kwargs) as client:
                return bool(client.ping())

        self._wait(answers, f"TLS PING on port {self.port} answered")


# == ACL =================================================================================


class AclRedis(_Topology):
    """A redis-server whose ``default`` user is disabled and has no password.

    Unauthenticated connections can do nothing (``NOAUTH``); the ``admin`` user (random
    password, ``~* &* +@all``) is what :meth:`admin` uses; :meth:`add_user` makes more.
    """

    kind = "acl"
    admin_name = "admin"

    def __init__(self, port: int | None = None, keep_dir: bool = False) -> None:
        super().__init__(keep_dir)
        self.port = port or _free_ports(1)[0]
        self.admin_password = secrets.token_hex(16)

    def url_for(self, name: str, password: str) -> str:
        return f"redis://{quote(name, safe='')}:{quote(password, safe='')}@{HOST}:{self.port}/0"

    @property
    def admin_url(self) -> str:
        return self.url_for(self.admin_name, self.admin_password)

    def admin(self, **kwargs: Any) -> redis.Redis:
        """A client authenticated as the ``admin`` user (every right)."""
        return self.client_for(self.admin_name, self.admin_password, **kwargs)

    def client_for(self, name: str, password: str, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, username=name, password=password, **kwargs)

    def add_user(self, name: str, password: str, rules: list[str]) -> None:
        """``ACL SETUSER name reset on >password *rules``: exactly these rights, nothing else.

        E.g. ``rules=["~test:*", "+@all"]``: every command, keys ``test:*`` only (no channels).
        """
        with self.admin(**_NO_RETRY) as admin:
            admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules)

    def _start(self) -> None:
        config = self.dir / "redis.conf"
        config.write_text(
            "user default off resetpass resetkeys resetchannels -@all\n"
            f"user {self.admin_name} on >{self.admin_password} ~* &* +@all\n"
        )
        self._spawn(
            "redis-acl",
            [str(config), "--port", str(self.port), "--dir", str(self.dir), *_COMMON],
        )

        def answers() -> bool:
            with self.admin(socket_timeout=1, socket_connect_timeout=1, **_NO_RETRY) as admin:
                return bool(admin.ping())

        self._wait(answers, f"PING as {self.admin_name} on port {self.port} answered")


# == Sentinel ============================================================================


class SentinelSet(_Topology):
    """A master, one replica and one sentinel monitoring them as ``mymaster`` (quorum 1).

    ``fast_timers`` (default) shortens the sentinel's internal periods with ``SENTINEL
    DEBUG`` (INFO every 1 s instead of 10 s, hello every 0.5 s instead of 2 s): with the
    defaults, turning the old master into a replica after a failover takes 10-20 s.
    """

    kind = "sentinel"
    master_name = "mymaster"

    def __init__(self, fast_timers: bool = True, keep_dir: bool = False) -> None:
        super().__init__(keep_dir)
        self.fast_timers = fast_timers
        master, replica, sentinel = _free_ports(3)
        self.node_ports = [master, replica]  # the first is the master at start
        self.sentinel_port = sentinel

    @property
    def sentinels(self) -> list[Address]:
        return [(HOST, self.sentinel_port)]

    @property
    def nodes(self) -> list[Address]:
        return [(HOST, port) for port in self.node_ports]

    def _node_name(self, port: int) -> str:
        return f"redis-{port}"

    def sentinel_client(self) -> redis.Redis:
        return _probe(self.sentinel_port, decode_responses=True)

    def sentinel(self, **kwargs: Any) -> redis.Sentinel:
        return redis.Sentinel(self.sentinels, socket_timeout=1, **kwargs)

    def client(self) -> redis.Redis:
        return self.sentinel().master_for(self.master_name)

    def master_address(self) -> Address:
        """The master's address, as the sentinel reports it."""
        with self.sentinel_client() as sentinel:
            host, port = sentinel.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
            )
        return (host, int(port))

    def role(self, address: Address) -> dict[str, str]:
        """``INFO replication`` of one node."""
        with _probe(address[1]) as client:
            return _role(client)

    def _known_replicas(self) -> list[dict[str, Any]]:
        with self.sentinel_client() as sentinel:
            return sentinel.sentinel_slaves(self.master_name)

    def _sentinel_sees_healthy_replica(self, port: int) -> bool:
        for replica in self._known_replicas():
            if (
                int(replica["port"]) == port
                and replica["flags"] == "slave"
                and replica.get("master-link-status") == "ok"
            ):
                return True
        return False

    def _is_replica_of(self, replica: Address, master: Address) -> bool:
        info = self.role(replica)
        return (
            info.get("role") == "slave"
            and int(info.get("master_port", -1)) == master[1]
            and info.get("master_link_status") == "up"
        )

    def _start(self) -> None:
        master, replica = self.node_ports
        for port in self.node_ports:
            args = ["--port", str(port), "--dir", str(self.dir), *_COMMON]
            if port == replica:
                args += ["--replicaof", HOST, str(master)]
            self._spawn(self._node_name(port), args)
        self._wait(
            lambda: self._is_replica_of((HOST, replica), (HOST, master)),
            f"replica {replica} in sync with master {master} (master_link_status:up)",
        )
        config = self.dir / "sentinel.conf"  # the sentinel rewrites it: it must be ours
        config.write_text(
            f"port {self.sentinel_port}\n"
            f"bind {HOST}\n"
            "protected-mode no\n"
            f'dir "{self.dir}"\n'
            "sentinel resolve-hostnames no\n"
            "sentinel announce-hostnames no\n"
            f"sentinel announce-ip {HOST}\n"
            f"sentinel monitor {self.master_name} {HOST} {master} 1\n"
            f"sentinel down-after-milliseconds {self.master_name} 1000\n"
            f"sentinel failover-timeout {self.master_name} 5000\n"
        )
        self._spawn("sentinel", [str(config), "--sentinel"])

        def sentinel_answers() -> bool:
            with self.sentinel_client() as sentinel:
                if self.fast_timers:
                    sentinel.execute_command(
                        "SENTINEL", "DEBUG", "INFO-PERIOD", 1000, "PUBLISH-PERIOD", 500
                    )
                return bool(sentinel.ping())

        self._wait(sentinel_answers, f"sentinel on port {self.sentinel_port} answered")
        self._wait(
            lambda: self._sentinel_sees_healthy_replica(replica),
            f"sentinel knows replica {replica} (SENTINEL REPLICAS {self.master_name})",
        )

    def failover(self, timeout: float = 15.0) -> Address:
        """``SENTINEL FAILOVER``; wait until both nodes and the sentinel agree; new master."""
        old = self.master_address()
        (new,) = [address for address in self.nodes if address != old]
        deadline = time.monotonic() + timeout
        # a planned failover: the replica first holds every write made so far (under load it
        # can lag by seconds, and a replica promoted then loses documents, as Redis's
        # asynchronous replication allows; the job's writer recreates them, the test waits)
        with _probe(old[1]) as client:
            client.execute_command("WAIT", 1, 800)  # under the probe's 1 s timeout

        while True:
            try:
                with self.sentinel_client() as sentinel:
                    sentinel.execute_command("SENTINEL", "FAILOVER", self.master_name)
                break
            except redis.ResponseError as exc:
                # NOGOODSLAVE: the sentinel has not heard from the replica recently enough yet;
                # anything else (INPROG: a failover is already running) must not be retried
                if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SENTINEL FAILOVER {self.master_name} refused: {exc}\n{self.logs()}"
                    ) from None
                time.sleep(0.1)
        self._wait(
            lambda: (
                self.master_address() == new
                and self.role(new).get("role") == "master"
                and self._is_replica_of(old, new)
            ),
            f"failover from {old[1]} to {new[1]}: sentinel reports {new[1]}, which reports"
            f" role master, and {old[1]} replicates from it",
            timeout=max(0.1, deadline - time.monotonic()),
        )
        return new


# == Cluster =============================================================================


def _parse_cluster_nodes(text: str) -> list[dict[str, Any]]:
    """``CLUSTER NODES`` lines as dicts: id, address, flags (set), master_id, link, slots."""
    nodes = []
    for line in text.strip().splitlines():
        fields = line.split()
        endpoint = fields[1].split("@")[0].split(",")[0]
        host, _, port = endpoint.rpartition(":")
        slots: list[tuple[int, int]] = []
        for item in fields[8:]:
            if item.startswith("["):
                continue  # a slot being imported or migrated
            start, _, end = item.partition("-")
            slots.append((int(start), int(end or start)))
        nodes.append(
            {
                "id": fields[0],
                "address": (host, int(port)),
                "flags": set(fields[2].split(",")),
                "master_id": fields[3],
                "link": fields[7],
                "slots": slots,
            }
        )
    return nodes


class RedisClusterServers(_Topology):
    """``primaries`` primaries with ``replicas`` replicas each (default 3 + 3), via redis-cli.

    Each node gets a free client port and a free bus port (``--cluster-port``), so the
    usual port + 10000 rule does not matter. Slots follow hash tags: the slot of
    ``prefix{kind:name}`` is that of ``kind:name`` (``CLUSTER KEYSLOT`` does the work).
    """

    kind = "cluster"

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        keep_dir: bool = False,
    ) -> None:
        super().__init__(keep_dir)
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        count = primaries * (1 + replicas)
        ports = _free_ports(2 * count)
        self.ports = ports[:count]
        self.bus_ports = dict(zip(self.ports, ports[count:], strict=True))

    @property
    def startup_nodes(self) -> list[Address]:
        return [(HOST, port) for port in self.ports]

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        host, port = self.startup_nodes[0]
        return redis.cluster.RedisCluster(host=host, port=port, decode_responses=False, **kwargs)

    def node_client(self, address: Address) -> redis.Redis:
        return _probe(address[1], decode_responses=True)

    def cluster_nodes(self, address: Address) -> list[dict[str, Any]]:
        """``CLUSTER NODES`` as one node sees it (parsed)."""
        with self.node_client(address) as client:
            return _parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))

    def cluster_info(self, address: Address) -> dict[str, str]:
        with self.node_client(address) as client:
            info = client.execute_command("CLUSTER", "INFO")
        if isinstance(info, dict):  # redis-py parsed it
            return {key: str(value) for key, value in info.items()}
        return _info_fields(info)

    def _ask_any(self, call: Callable[[Address], Any]) -> Any:
        error: BaseException | None = None
        for address in self.startup_nodes:
            try:
                return call(address)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                error = exc
        raise RuntimeError(f"no cluster node answered: {error!r}")

    def keyslot(self, key: str | bytes) -> int:
        def ask(address: Address) -> int:
            with self.node_client(address) as client:
                return int(client.execute_command("CLUSTER", "KEYSLOT", key))

        return self._ask_any(ask)

    @staticmethod
    def _owner(nodes: list[dict[str, Any]], slot: int) -> dict[str, Any] | None:
        for node in nodes:
            if "master" in node["flags"] and any(a <= slot <= b for a, b in node["slots"]):
                return node
        return None

    def primary_for_slot(self, slot: int) -> Address:
        owner = self._owner(self._ask_any(self.cluster_nodes), slot)
        if owner is None:
            raise RuntimeError(f"no primary serves slot {slot}")
        return owner["address"]

    def primary_for_key(self, key: str | bytes) -> Address:
        """Address of the primary serving the key's slot (hash tags respected)."""
        return self.primary_for_slot(self.keyslot(key))

    def replicas_of(self, primary: Address) -> list[Address]:
        nodes = self._ask_any(self.cluster_nodes)
        by_address = {node["address"]: node for node in nodes}
        if primary not in by_address:
            raise RuntimeError(f"{primary} is not a cluster node")
        primary_id = by_address[primary]["id"]
        return [
            node["address"]
            for node in nodes
            if "slave" in node["flags"] and node["master_id"] == primary_id
        ]

    def replica_of(self, primary: Address) -> Address:
        replicas = self.replicas_of(primary)
        if not replicas:
            raise RuntimeError(f"primary {primary} has no replica")
        return replicas[0]

    # -- readiness -------------------------------------------------------------------

    def _node_healthy(
        self,
        address: Address,
        owners: dict[int, Address] | None,
        replica_of: dict[Address, Address] | None,
    ) -> bool:
        info = self.cluster_info(address)
        if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
            return False
        if int(info.get("cluster_known_nodes", 0)) != len(self.ports):
            return False
        nodes = self.cluster_nodes(address)
        for node in nodes:
            if node["flags"] & {"fail", "fail?", "handshake", "noaddr"}:
                return False
            if "myself" not in node["flags"] and node["link"] != "connected":
                return False
        replicas = [node for node in nodes if "slave" in node["flags"]]
        if len(replicas) != self.primaries * self.replicas:
            return False
        if owners is not None:  # every node must map these slots the same way
            for slot, expected in owners.items():
                owner = self._owner(nodes, slot)
                if owner is None or owner["address"] != expected:
                    return False
        if replica_of is not None:  # ... and see these replicas of these primaries
            ids = {node["address"]: node["id"] for node in nodes}
            for node in replicas:
                wanted = replica_of.get(node["address"])
                if wanted is not None and node["master_id"] != ids.get(wanted):
                    return False
            if not set(replica_of) <= {node["address"] for node in replicas}:
                return False
        return True

    def _replicas_linked(self) -> bool:
        for address in self.startup_nodes:
            with self.node_client(address) as client:
                info = _role(client)
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def _all_healthy(
        self,
        owners: dict[int, Address] | None = None,
        replica_of: dict[Address, Address] | None = None,
    ) -> bool:
        return all(self._node_healthy(a, owners, replica_of) for a in self.startup_nodes)

    def _start(self) -> None:
        for port in self.ports:
            self._spawn(
                f"node-{port}",
                [
                    "--port", str(port),
                    "--cluster-port", str(self.bus_ports[port]),
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(self.dir / f"nodes-{port}.conf"),
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                    "--dir", str(self.dir),
                    *_COMMON,
                ],
            )  # fmt: skip

        def answer() -> bool:
            for port in self.ports:
                with _probe(port) as client:
                    client.ping()
            return True

        self._wait(answer, "every node answers PING")
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed")
        create = subprocess.run(
            [
                cli, "--cluster", "create",
                *(f"{HOST}:{port}" for port in self.ports),
                "--cluster-replicas", str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        (self.dir / "cluster-create.log").write_text(create.stdout + create.stderr)
        if create.returncode != 0 or "[OK] All 16384 slots covered" not in create.stdout:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({create.returncode}):\n"
                f"{create.stdout[-3000:]}{create.stderr[-2000:]}\n{self.logs(lines=10)}"
            )
        self._wait(
            self._all_healthy,
            f"cluster_state:ok and all {len(self.ports)} nodes connected, on every node",
            timeout=20,
            interval=0.1,
        )
        self._wait(self._replicas_linked, "every replica has master_link_status:up")

    # -- failover --------------------------------------------------------------------

    def failover_key(self, key: str | bytes, timeout: float = 15.0) -> Address:
        """``CLUSTER FAILOVER`` on the replica of the key's primary; wait; the new primary.

        Waits until every node says ``cluster_state:ok``, maps the key's slot to the
        replica and sees the old primary as its replica, and the old primary's
        replication link to the new one is up (so another failover can follow at once).
        """
        slot = self.keyslot(key)
        old = self.primary_for_slot(slot)
        new = self.replica_of(old)
        with self.node_client(new) as client:
            client.execute_command("CLUSTER", "FAILOVER")

        def switched() -> bool:
            if not self._all_healthy(owners={slot: new}, replica_of={old: new}):
                return False
            with self.node_client(old) as client:
                info = _role(client)
            return (
                info.get("role") == "slave"
                and int(info.get("master_port", -1)) == new[1]
                and info.get("master_link_status") == "up"
            )

        self._wait(
            switched,
            f"slot {slot} moved from {old[1]} to {new[1]} and cluster_state:ok everywhere",
            timeout=timeout,
            interval=0.05,
            logs=[f"node-{old[1]}", f"node-{new[1]}"],
        )
        return new
