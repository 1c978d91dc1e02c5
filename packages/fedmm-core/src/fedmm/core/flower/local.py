"""Flower's deployment engine on one machine: a SuperLink and N SuperNodes on loopback.

For trying a deployment before moving to real machines, for the tests and for the engines
benchmark. It uses Flower's own processes and commands — ``flower-superlink``,
``flower-supernode`` and ``flwr run <app> <connection> --stream`` — with insecure loopback
connections; ``docs/flower.md`` shows the same steps on real machines with TLS and node
authentication.

>>> with LocalDeployment(nodes=3, workdir="flwr-local") as dep:
...     dep.run(app_dir, run_config={"config": "/abs/run.toml", "out": "/abs/run-folder"})
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from fedmm.core.errors import FedmmError

CONNECTION = "fedmm-local"


def write_app(directory: str | os.PathLike[str], **config: Any) -> Path:
    """Write a Flower App folder whose components are fedmm's config-driven apps.

    ``config`` gives the app's run-config defaults (``config``, ``out``, ``round-timeout``,
    ``node-wait``; see :mod:`fedmm.core.flower.app`). The folder holds only ``pyproject.toml``:
    the code is the installed ``fedmm-core``, which every SuperLink and SuperNode machine needs.
    """
    defaults = {"config": "", "out": "", "round-timeout": 0.0, "node-wait": 60.0, "min-nodes": 0, **config}
    lines = []
    for key, value in defaults.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise FedmmError(f"Flower run-config value {key}={value!r} must be a string or a number")
        lines.append(f"{key} = {_toml(value)}")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(
        "\n".join(
            [
                "[build-system]",
                'requires = ["hatchling"]',
                'build-backend = "hatchling.build"',
                "",
                "[project]",
                'name = "fedmm-run"',
                'version = "1.0.0"',
                'description = "A fedmm run config on Flower"',
                'license = "Apache-2.0"',
                "dependencies = []",
                "",
                "[tool.flwr.app]",
                'publisher = "fedmm"',
                "",
                "[tool.flwr.app.components]",
                'serverapp = "fedmm.core.flower.app:server_app"',
                'clientapp = "fedmm.core.flower.app:client_app"',
                "",
                "[tool.flwr.app.config]",
                *lines,
                "",
            ]
        )
    )
    return path


def _toml(value: str | int | float) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise FedmmError(f"the SuperLink did not open 127.0.0.1:{port} within {timeout:.0f}s")


def make_credentials(directory: str | os.PathLike[str], nodes: int, host: str = "127.0.0.1") -> Path:
    """Test credentials for a secured deployment, written to ``directory``.

    ``ca.crt`` (a throwaway CA), ``server.pem`` / ``server.key`` (the SuperLink's certificate for
    ``host``, signed by that CA) and ``node<k>`` / ``node<k>.pub`` (each SuperNode's EC P-384 key
    pair in OpenSSH format, as ``flwr supernode register`` and ``--auth-supernode-private-key``
    expect). For trying TLS and node authentication on one machine; real deployments use their
    own CA (``docs/flower.md``).
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: Any, issuer: str, signer: Any, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            try:
                name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
            except ValueError:
                name = x509.DNSName(host)
            builder = builder.add_extension(x509.SubjectAlternativeName([name]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    def pem_key(key: Any) -> bytes:
        return bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = cert("fedmm-local-ca", ca_key, "fedmm-local-ca", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = cert(host, server_key, "fedmm-local-ca", ca_key, ca=False)
    (path / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (path / "server.pem").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    (path / "server.key").write_bytes(pem_key(server_key))
    for k in range(nodes):
        node_key = ec.generate_private_key(ec.SECP384R1())
        (path / f"node{k}").write_bytes(
            node_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        (path / f"node{k}.pub").write_bytes(
            node_key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
        )
    return path


class LocalDeployment:
    """A SuperLink and ``nodes`` SuperNodes (``partition-id`` 0..nodes-1) on 127.0.0.1.

    Each process runs in its own process group with its own ``FLWR_HOME`` under ``workdir``
    (logs in ``workdir/logs``); :meth:`stop` (or leaving the ``with`` block) ends them all.
    Flower's update check and telemetry are off, and runtime dependency installation is
    disabled: the machine's environment must already hold fedmm and its techniques.

    ``secure=True`` runs it as a real deployment should: TLS on every connection and SuperNode
    authentication, with throwaway credentials from :func:`make_credentials`; each node's public
    key is registered with ``flwr supernode register`` before the node starts.
    """

    def __init__(
        self,
        nodes: int,
        workdir: str | os.PathLike[str],
        *,
        num_partitions: int | None = None,
        superexec_poll: float = 0.1,
        secure: bool = False,
    ) -> None:
        if nodes < 1:
            raise FedmmError(f"a deployment needs at least one SuperNode (got nodes={nodes})")
        self.nodes = nodes
        self.num_partitions = num_partitions or nodes
        self.workdir = Path(workdir).resolve()
        self.port = 0
        self.superexec_poll = superexec_poll
        self.secure = secure
        self.credentials = self.workdir / "credentials"
        self.superlink: subprocess.Popen[bytes] | None = None
        self.supernodes: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    # -- processes ---------------------------------------------------------------------------
    def _env(self, home: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                # The SuperLink/SuperNodes start Flower's own executables: this environment's.
                "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
                "FLWR_HOME": str(home),
                "FLWR_TELEMETRY_ENABLED": "0",
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(self.superexec_poll),
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )
        return env

    def _spawn(self, name: str, cmd: list[str], home: Path) -> subprocess.Popen[bytes]:
        home.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop)
        self._logs.append(log)
        exe = shutil.which(cmd[0], path=self._env(home)["PATH"])
        if exe is None:
            raise FedmmError(f'{cmd[0]} is not installed; pip install "fedmm-core[flower]"')
        return subprocess.Popen(
            [exe, *cmd[1:]], stdout=log, stderr=subprocess.STDOUT, env=self._env(home), start_new_session=True
        )

    @property
    def home(self) -> Path:
        """The ``FLWR_HOME`` of the SuperLink and of ``flwr run`` (holds the connection config)."""
        return self.workdir / "superlink"

    def start(self, timeout: float = 60.0) -> LocalDeployment:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        if self.secure:
            creds = make_credentials(self.credentials, self.nodes)
            security = [
                "--ssl-ca-certfile",
                str(creds / "ca.crt"),
                "--ssl-certfile",
                str(creds / "server.pem"),
                "--ssl-keyfile",
                str(creds / "server.key"),
                "--enable-supernode-auth",
            ]
            connection = f'root-certificates = "{creds / "ca.crt"}"\n'
        else:
            security, connection = ["--insecure"], "insecure = true\n"
        self.superlink = self._spawn(
            "superlink",
            [
                "flower-superlink",
                *security,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--disable-runtime-dependency-installation",
            ],
            self.home,
        )
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{self.port}"\n{connection}'
        )
        _wait_port(self.port, timeout)
        for i in range(self.nodes):
            if self.secure:
                self.register_node(self.credentials / f"node{i}.pub")
            self.start_node(i)
        return self

    def register_node(self, public_key: str | os.PathLike[str]) -> None:
        """``flwr supernode register <key> fedmm-local``: let a SuperNode with this key join."""
        proc = self._spawn(
            "register", ["flwr", "supernode", "register", str(public_key), CONNECTION], self.home
        )
        if proc.wait(timeout=60) != 0:
            raise FedmmError(f"registering {public_key} failed; see {self.workdir / 'logs' / 'register.log'}")

    def start_node(self, partition: int, private_key: str | os.PathLike[str] | None = None) -> None:
        """Start (or restart) the SuperNode holding client ``partition``; in a secure deployment
        it authenticates with ``private_key`` (default: its own generated key)."""
        if self.secure:
            key = private_key or self.credentials / f"node{partition}"
            security = [
                "--root-certificates",
                str(self.credentials / "ca.crt"),
                "--auth-supernode-private-key",
                str(key),
            ]
        else:
            security = ["--insecure"]
        self.supernodes[partition] = self._spawn(
            f"supernode{partition}",
            [
                "flower-supernode",
                *security,
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--node-config",
                f"partition-id={partition} num-partitions={self.num_partitions}",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
            ],
            self.workdir / f"supernode{partition}",
        )

    def kill_node(self, partition: int) -> None:
        """SIGKILL the SuperNode of ``partition`` and the ClientApp it is running (a crash)."""
        proc = self.supernodes.pop(partition)
        _kill_group(proc, signal.SIGKILL)

    def stop(self) -> None:
        for proc in [*self.supernodes.values(), *([self.superlink] if self.superlink else [])]:
            _kill_group(proc, signal.SIGTERM)
        for proc in [*self.supernodes.values(), *([self.superlink] if self.superlink else [])]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        self.supernodes.clear()
        self.superlink = None
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LocalDeployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- runs --------------------------------------------------------------------------------
    def submit(
        self, app_dir: str | os.PathLike[str], run_config: Mapping[str, Any] | None = None
    ) -> subprocess.Popen[bytes]:
        """``flwr run <app_dir> fedmm-local --stream`` in the background (returns its process)."""
        overrides = self.workdir / "run-config.toml"
        overrides.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in (run_config or {}).items()))
        cmd = ["flwr", "run", str(Path(app_dir).resolve()), CONNECTION, "--stream"]
        if run_config:
            cmd += ["--run-config", str(overrides)]
        return self._spawn("flwr-run", cmd, self.home)

    def run(
        self,
        app_dir: str | os.PathLike[str],
        run_config: Mapping[str, Any] | None = None,
        timeout: float = 1800.0,
    ) -> None:
        """Submit a run and wait for it to finish; raise if it failed (see ``logs/``)."""
        proc = self.submit(app_dir, run_config)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            raise FedmmError(f"the Flower run did not finish within {timeout:.0f}s") from None
        if rc != 0:
            raise FedmmError(f"`flwr run` exited with {rc}; see {self.workdir / 'logs'}")


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def run_deployment(
    config_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    nodes: int,
    workdir: str | os.PathLike[str],
    round_timeout: float = 0.0,
) -> dict[str, Any]:
    """Run a fedmm TOML config on a :class:`LocalDeployment`; the run folder lands in ``out``.

    Returns the wall seconds of start-up (SuperLink + SuperNodes) and of the run.
    """
    workdir = Path(workdir).resolve()
    app = write_app(workdir / "app")
    t0 = time.perf_counter()
    with LocalDeployment(nodes, workdir) as dep:
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        dep.run(
            app,
            {
                "config": str(Path(config_path).resolve()),
                "out": str(Path(out).resolve()),
                "round-timeout": float(round_timeout),
                "min-nodes": nodes,
            },
        )
        seconds = time.perf_counter() - t1
    return {"startup_seconds": startup, "seconds": seconds}


__all__ = ["LocalDeployment", "free_port", "make_credentials", "run_deployment", "write_app"]
