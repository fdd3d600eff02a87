"""Remote Docker engines on this one machine, for the acceptance tests of DOCKER_HOST=tcp://
with TLS and DOCKER_HOST=ssh://.

`tls_engine` gives the project's own dockerd a TLS listener on 127.0.0.1 (dockerd takes
listeners only at start, so it restarts the daemon once; the compose nox session calls it
before any test stack exists) and records it in an endpoint file that `load_tls_endpoint`
reads back in the tests. `ssh_server` runs an OpenSSH server on a free port of 127.0.0.1, as
a child of the test, with keys of its own: the user's ~/.ssh is never read or written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from scripts.errors import StackError
from scripts.infra import procs, run, wait
from scripts.infra.docker import (
    _CHILDREN,
    DEFAULT_SOCKET,
    DOCKERD_LOG,
    DOCKERD_PID_FILE,
    START_TIMEOUT,
    STOP_TIMEOUT,
    EngineReport,
    _is_dockerd,
    _running_dockerd,
    _which_sbin,
)
from tests.support.net import free_ports

TLS_DIR = Path("/run/ai-marketplace-dockerd-tls")
TLS_ENDPOINT_FILE = TLS_DIR / "endpoint.json"
TLS_ENV = "AIM_TEST_DOCKER_TLS"  # the compose suite's pointer to TLS_ENDPOINT_FILE
CERT_DAYS = 30
SSHD = Path("/usr/sbin/sshd")
SSH_CLIENT = Path("/usr/bin/ssh")
SSHD_START_TIMEOUT = 15.0
SSHD_STOP_TIMEOUT = 5.0
APT_TIMEOUT = 600.0
POLL_INTERVAL = 0.05


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TlsEndpoint:
    """The project's dockerd on tcp://127.0.0.1:PORT with --tlsverify, and two client
    certificate directories in Docker's layout (ca.pem, cert.pem, key.pem): one the daemon
    trusts, one from an unrelated CA that it refuses."""

    host: str  # "tcp://127.0.0.1:PORT"
    port: int
    cert_path: Path
    wrong_cert_path: Path

    def env(self) -> dict[str, str]:
        """What the docker CLI (and the product) need to reach the engine over TLS."""
        return {
            "DOCKER_HOST": self.host,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(self.cert_path),
        }


def load_tls_endpoint(path: Path | None = None) -> TlsEndpoint:
    """The TLS endpoint the compose nox session set up (its file named by AIM_TEST_DOCKER_TLS)."""
    if path is None:
        named = os.environ.get(TLS_ENV, "").strip()
        if not named:
            raise StackError(
                f"{TLS_ENV} is not set: run the compose suite through "
                "`nox -s integration -- --backend compose`."
            )
        path = Path(named)
    try:
        data = json.loads(path.read_text())
        return _endpoint_from(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackError(
            f"The TLS endpoint file {path} is unusable ({exc}): run the compose suite through "
            "`nox -s integration -- --backend compose`."
        ) from None


def tls_engine(
    report: EngineReport,
    *,
    directory: Path = TLS_DIR,
    pid_file: Path = DOCKERD_PID_FILE,
    log: Path = DOCKERD_LOG,
) -> tuple[EngineReport, TlsEndpoint]:
    """The project's dockerd with a TLS listener on 127.0.0.1, after ensure_engine's `report`.

    A daemon that has the listener already (its endpoint file in `directory` names its pid)
    is reused. Otherwise the project's own daemon is restarted with the listener; the report
    returned keeps `started` as ensure_engine said, so a session stops the daemon afterwards
    only when it started it, and a developer's running engine stays running (with the
    listener, which the next run reuses). Containers with a restart policy (the stack's) come
    back with the daemon.
    """
    endpoint_file = directory / "endpoint.json"
    running = _running_dockerd(pid_file)
    reusable = _reusable_endpoint(endpoint_file, running)
    if reusable is not None:
        return report, reusable

    ours = running is not None and (
        procs.read_pid(pid_file) == running or (report.how == "dockerd" and report.pid == running)
    )
    elsewhere = os.environ.get("DOCKER_HOST", "").strip() not in ("", f"unix://{DEFAULT_SOCKET}")
    if not ours or running is None or elsewhere or os.environ.get("DOCKER_CONTEXT"):
        raise StackError(
            "The compose suite needs a TLS listener on the Docker engine, which only a dockerd "
            f"this project started (pid file {pid_file}) can be given: stop the running engine "
            "(`systemctl stop docker.socket docker`, or unset DOCKER_HOST) and run the suite again."
        )
    dockerd = _which_sbin("dockerd")
    if dockerd is None:
        raise StackError("dockerd is not on PATH: run `inv setup --yes` to install docker.io.")

    began = time.monotonic()
    _stop_dockerd(running, pid_file)
    with contextlib.suppress(OSError):
        endpoint_file.unlink()
    server, client, wrong = make_certificates(directory)
    (port,) = free_ports(1)
    host = f"tcp://127.0.0.1:{port}"
    argv = [
        dockerd,
        "-H", f"unix://{DEFAULT_SOCKET}",
        "-H", host,
        "--tlsverify",
        "--tlscacert", str(server / "ca.pem"),
        "--tlscert", str(server / "cert.pem"),
        "--tlskey", str(server / "key.pem"),
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        out.write(f"--- {stamp} starting {' '.join(argv)}\n".encode())
    process = run.spawn(argv, log)
    _CHILDREN[process.pid] = process
    pid_file.write_text(f"{process.pid}\n")
    endpoint = TlsEndpoint(host, port, client, wrong)
    try:
        version = _wait_for_both(endpoint, process.pid, log)
    except StackError:
        _stop_dockerd(process.pid, pid_file)
        raise
    _write_json(
        endpoint_file,
        {
            "pid": process.pid,
            "host": host,
            "port": port,
            "cert_path": str(client),
            "wrong_cert_path": str(wrong),
            "server_cert_path": str(server),
        },
    )
    restarted = dataclasses.replace(
        report,
        version=version,
        how="dockerd",
        pid=process.pid,
        log_file=log,
        seconds=time.monotonic() - began,
    )
    return restarted, endpoint


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA with a server certificate (127.0.0.1, localhost) and a client certificate, and an
    unrelated CA with a client certificate of its own, made with the openssl CLI under
    `directory` (0700). Returns the server's, the client's and the unrelated client's
    directories, each with ca.pem, cert.pem and key.pem (0600)."""
    _private_dir(directory)
    ca_dir = _private_dir(directory / "ca")
    wrong_ca_dir = _private_dir(directory / "wrong-ca")
    server = _private_dir(directory / "server")
    client = _private_dir(directory / "client")
    wrong = _private_dir(directory / "wrong")
    _make_ca(ca_dir, "AI Marketplace test CA")
    _make_ca(wrong_ca_dir, "Unrelated test CA")
    _issue(ca_dir, server, "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
           "extendedKeyUsage=serverAuth\n")  # fmt: skip
    _issue(ca_dir, client, "aim-test-client", "extendedKeyUsage=clientAuth\n")
    _issue(wrong_ca_dir, wrong, "aim-test-client", "extendedKeyUsage=clientAuth\n")
    return server, client, wrong


def tls_version(endpoint: TlsEndpoint, cert_path: Path | None = None, timeout: float = 1.0) -> str:
    """The engine's version over TLS with the client files in `cert_path` (the good ones by
    default). Raises OSError (ssl.SSLError among them) when the handshake or call fails."""
    cert_path = cert_path or endpoint.cert_path
    context = ssl.create_default_context(cafile=str(cert_path / "ca.pem"))
    context.load_cert_chain(cert_path / "cert.pem", cert_path / "key.pem")
    conn = http.client.HTTPSConnection("127.0.0.1", endpoint.port, timeout=timeout, context=context)
    return _version(conn)


def socket_version(path: str = DEFAULT_SOCKET, timeout: float = 1.0) -> str:
    """The engine's version on its Unix socket. Raises OSError when it does not answer."""
    return _version(_UnixHTTPConnection(path, timeout))


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _version(conn: http.client.HTTPConnection) -> str:
    """GET /version on `conn`, closed after; OSError for every way it can fail."""
    try:
        conn.request("GET", "/version")
        response = conn.getresponse()
        body = response.read()
    except http.client.HTTPException as exc:
        raise OSError(str(exc)) from None
    finally:
        conn.close()
    if response.status != 200:
        raise OSError(f"GET /version answered {response.status}")
    try:
        return str(json.loads(body).get("Version", "unknown"))
    except (ValueError, AttributeError):
        return "unknown"


def _endpoint_from(data: Mapping[str, object]) -> TlsEndpoint:
    return TlsEndpoint(
        host=str(data["host"]),
        port=int(str(data["port"])),
        cert_path=Path(str(data["cert_path"])),
        wrong_cert_path=Path(str(data["wrong_cert_path"])),
    )


def _reusable_endpoint(endpoint_file: Path, running: int | None) -> TlsEndpoint | None:
    """The endpoint in `endpoint_file` when the running daemon is the one it names and its TLS
    port answers; else None."""
    if running is None:
        return None
    try:
        data = json.loads(endpoint_file.read_text())
        if int(data["pid"]) != running:
            return None
        endpoint = _endpoint_from(data)
        tls_version(endpoint)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return endpoint


def _wait_for_both(endpoint: TlsEndpoint, pid: int, log: Path) -> str:
    """The version once the daemon answers on the Unix socket and on its TLS port."""
    exited = False

    def answer() -> str | None:
        nonlocal exited
        if not procs.alive(pid):
            exited = True
            return ""
        try:
            version = socket_version(timeout=0.5)
            tls_version(endpoint, timeout=0.5)
        except OSError:
            return None
        return version

    version = wait.until(answer, timeout=START_TIMEOUT, interval=0.1)
    if version:
        return version
    what = "exited during start-up" if exited else f"did not answer within {START_TIMEOUT:.0f} s"
    tail = "\n".join(procs.tail(log, 15)) or f"(nothing in {log})"
    raise StackError(
        f"dockerd (pid {pid}) with a TLS listener on {endpoint.host} {what}: fix what its log "
        f"{log} names and try again; it ends with:\n{tail}"
    )


def _stop_dockerd(pid: int, pid_file: Path) -> None:
    if procs.alive(pid) and _is_dockerd(pid):
        procs.stop(pid, signal.SIGTERM, STOP_TIMEOUT, signal.SIGKILL)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.poll()  # reaped already by procs.stop: this records it
    if procs.read_pid(pid_file) == pid:
        with contextlib.suppress(OSError):
            pid_file.unlink()


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-new", *_ec_key(directory / "ca-key.pem"),
        "-out", str(directory / "ca.pem"), "-days", str(CERT_DAYS), "-subj", f"/CN={name}",
    )  # fmt: skip
    (directory / "ca-key.pem").chmod(0o600)


def _issue(ca_dir: Path, directory: Path, name: str, extensions: str) -> None:
    """A key and a certificate signed by the CA in `ca_dir`, with the CA beside them."""
    request = directory / "request.csr"
    ext_file = directory / "extensions.cnf"
    ext_file.write_text(extensions)
    _openssl("req", "-new", *_ec_key(directory / "key.pem"), "-out", str(request),
             "-subj", f"/CN={name}")  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request),
        "-CA", str(ca_dir / "ca.pem"), "-CAkey", str(ca_dir / "ca-key.pem"),
        "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(CERT_DAYS),
        "-extfile", str(ext_file), "-out", str(directory / "cert.pem"),
    )  # fmt: skip
    request.unlink()
    ext_file.unlink()
    shutil.copyfile(ca_dir / "ca.pem", directory / "ca.pem")
    (directory / "key.pem").chmod(0o600)


def _ec_key(path: Path) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(path)]  # fmt: skip


def _openssl(*args: str) -> None:
    run.run(["openssl", *args], timeout=60, stdin=run.DEVNULL, check=True)


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _write_json(path: Path, data: Mapping[str, object]) -> None:
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    partial.replace(path)


# --------------------------------------------------------------------------- SSH


@dataclass(frozen=True)
class SshEndpoint:
    """An OpenSSH server on 127.0.0.1 that lets root in by key, and an `ssh` on bin_dir that
    uses this server's keys and known_hosts only. Through 127.0.0.1 the remote shell has
    docker on its PATH; through localhost (another key) it has not."""

    port: int
    host: str  # "ssh://root@127.0.0.1:PORT"
    no_docker_host: str  # "ssh://root@localhost:PORT": the remote PATH has no docker
    refused_host: str  # an ssh:// URL to a port where nothing listens
    bin_dir: Path

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """DOCKER_HOST on this server, and this server's `ssh` first on PATH."""
        path = base.get("PATH", os.defpath)
        return {"DOCKER_HOST": self.host, "PATH": f"{self.bin_dir}{os.pathsep}{path}"}


@contextlib.contextmanager
def ssh_server(workdir: Path) -> Iterator[SshEndpoint]:
    """An sshd on a free port of 127.0.0.1 with keys and configuration in `workdir`, stopped
    on exit. Installs Debian's openssh-server first when sshd is missing."""
    ensure_sshd()
    workdir = _private_dir(workdir.absolute())
    port, refused_port = free_ports(2)
    host_key = _keygen(workdir / "host_key")
    key_a = _keygen(workdir / "key_a")
    key_b = _keygen(workdir / "key_b")
    authorized = workdir / "authorized_keys"
    authorized.write_text(
        f"{key_a.read_text().strip()}\n"
        f'environment="PATH=/nonexistent" {key_b.read_text().strip()}\n'
    )
    authorized.chmod(0o600)
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {workdir / 'host_key'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        f"PidFile {workdir / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\n"
        "PermitUserEnvironment yes\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "AllowTcpForwarding local\n"  # the tasks forward the stack's ports (ssh -L)
        "X11Forwarding no\n"
        "Subsystem sftp internal-sftp\n"
    )
    host_public = host_key.read_text().split()
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}\n"
        f"[localhost]:{port} {host_public[0]} {host_public[1]}\n"
    )
    client_config = workdir / "ssh_config"
    client_config.write_text(
        _client_block("127.0.0.1", workdir / "key_a", known_hosts)
        + _client_block("localhost", workdir / "key_b", known_hosts)
    )
    bin_dir = _private_dir(workdir / "bin")
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {SSH_CLIENT} -F {client_config} "$@"\n')
    wrapper.chmod(0o700)

    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    log = workdir / "sshd.log"
    check = run.run([str(SSHD), "-t", "-f", str(config)], timeout=30, stdin=run.DEVNULL)
    if not check.ok:
        raise StackError(f"sshd refuses its configuration {config}: {check.last_line()}.")
    process = run.spawn([str(SSHD), "-D", "-e", "-f", str(config)], log)
    try:
        if not wait.until(
            lambda: True if _accepts(port) else (False if process.poll() is not None else None),
            timeout=SSHD_START_TIMEOUT,
            interval=POLL_INTERVAL,
        ):
            tail = "\n".join(procs.tail(log, 10)) or f"(nothing in {log})"
            raise StackError(f"sshd did not listen on 127.0.0.1:{port}; {log} ends with:\n{tail}")
        yield SshEndpoint(
            port=port,
            host=f"ssh://root@127.0.0.1:{port}",
            no_docker_host=f"ssh://root@localhost:{port}",
            refused_host=f"ssh://root@127.0.0.1:{refused_port}",
            bin_dir=bin_dir,
        )
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(SSHD_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def ensure_sshd() -> None:
    """Debian's openssh-server, installed when /usr/sbin/sshd is missing, without leaving a
    system sshd on port 22: its package scripts may start no service meanwhile."""
    if SSHD.exists():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise StackError(
            f"{SSHD} is missing: install it as root with `apt-get install openssh-server`."
        )
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:  # invoke-rc.d asks this script whether to start a service; 101: never
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"]
    try:
        result = run.run(argv, env=env, timeout=APT_TIMEOUT, stdin=run.DEVNULL)
        if not result.ok:  # an old package list: read the sources again once
            run.run(["apt-get", "update"], env=env, timeout=APT_TIMEOUT, stdin=run.DEVNULL)
            result = run.run(argv, env=env, timeout=APT_TIMEOUT, stdin=run.DEVNULL)
    finally:
        if ours:
            policy.unlink()
    system_pid = procs.read_pid(Path("/run/sshd.pid"))
    if system_pid is not None and procs.command_name(system_pid) == "sshd":
        procs.stop(system_pid, signal.SIGTERM, SSHD_STOP_TIMEOUT, signal.SIGKILL)
    if not result.ok or not SSHD.exists():
        raise StackError(
            f"Installing openssh-server failed ({result.last_line()}): run "
            "`apt-get install openssh-server` and read what it says."
        )


def _keygen(path: Path) -> Path:
    """A new ed25519 key pair without passphrase at `path` (0600); returns the public key."""
    for old in (path, path.with_name(path.name + ".pub")):
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)]
    run.run(argv, timeout=30, stdin=run.DEVNULL, check=True)
    path.chmod(0o600)
    return path.with_name(path.name + ".pub")


def _client_block(name: str, key: Path, known_hosts: Path) -> str:
    return (
        f"Host {name}\n"
        f"    IdentityFile {key}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known_hosts}\n"
        "    GlobalKnownHostsFile /dev/null\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
        "    PasswordAuthentication no\n"
    )


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
