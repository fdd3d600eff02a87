"""The stack on a Docker engine that is not this machine's local socket: DOCKER_HOST=tcp://
with TLS, a `docker context` for it, and DOCKER_HOST=ssh:// (the ports carried here by the
tasks' SSH forwarding). Every failure a user meets on the way gives one sentence.

The endpoints are real and on this machine (tests/support/remote.py): the project's dockerd
with a TLS listener on 127.0.0.1 (certificates made with openssl), and Debian's OpenSSH server
on a free port with generated keys. Each lifecycle runs its own stack: env file, compose
project, ports, state and backup dirs under tmp_path.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis

from scripts.backends.compose import this_machine
from scripts.infra import procs, run
from scripts.infra.net import listeners
from scripts.settings import load
from tests.integration.helpers import ROOT
from tests.support.net import free_ports
from tests.support.remote import SshEndpoint, TlsEndpoint, load_tls_endpoint, ssh_server

# What the user's shell has; every stack setting of the suite's own stack is left out.
_SHELL = ("PATH", "HOME", "LANG", "DOCKER_CONFIG", "XDG_DATA_HOME", "XDG_CACHE_HOME")


@dataclass
class RemoteStack:
    """A stack of its own on a given engine, driven by `inv` as a user runs it."""

    work: Path
    engine_env: dict[str, str]
    ports: list[int] = field(default_factory=lambda: free_ports(3))
    project: str = field(default_factory=lambda: f"aim_remote_{secrets.token_hex(4)}")

    @property
    def env_file(self) -> Path:
        return self.work / "stack.env"

    def environ(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in _SHELL if k in os.environ}
        env |= {"STACK_ENV_FILE": str(self.env_file), "PYTHONDONTWRITEBYTECODE": "1"}
        return env | self.engine_env

    def inv(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = self.environ()
        if args and args[0] == "init":
            postgres, redis_port, adminer = self.ports
            env |= {
                "STACK_BACKEND": "compose",
                "COMPOSE_PROJECT_NAME": self.project,
                "STACK_STATE_DIR": str(self.work / "state"),
                "BACKUP_DIR": str(self.work / "backups"),
                "POSTGRES_PORT": str(postgres),
                "REDIS_PORT": str(redis_port),
                "ADMINER_PORT": str(adminer),
                "STACK_READY_TIMEOUT": "120",
            }
        return subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def ok(self, *args: str) -> str:
        done = self.inv(*args)
        assert done.returncode == 0, f"inv {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def docker(self, *args: str) -> str:
        """The docker CLI on the same engine."""
        env = {k: os.environ[k] for k in _SHELL if k in os.environ} | self.engine_env
        done = subprocess.run(["docker", *args], env=env, capture_output=True, text=True,
                              check=False, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def tls() -> TlsEndpoint:
    return load_tls_endpoint()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshEndpoint]:
    with ssh_server(tmp_path_factory.mktemp("sshd")) as endpoint:
        yield endpoint


def _context_env(tls: TlsEndpoint, config: Path) -> dict[str, str]:
    """A DOCKER_CONFIG of its own holding a context for the TLS endpoint, with the Compose
    plugin the machine's docker CLI uses linked in."""
    config.mkdir(parents=True, exist_ok=True)
    plugins = config / "cli-plugins"
    plugins.mkdir(exist_ok=True)
    from scripts.infra.compose_plugin import plugin_link

    (plugins / "docker-compose").symlink_to(plugin_link().resolve())
    name = f"aim-tls-{secrets.token_hex(3)}"
    docker = f"host={tls.host},ca={tls.cert_path}/ca.pem,cert={tls.cert_path}/cert.pem,"
    docker += f"key={tls.cert_path}/key.pem"
    env = {"DOCKER_CONFIG": str(config), "PATH": os.environ["PATH"]}
    subprocess.run(["docker", "context", "create", name, "--docker", docker], env=env,
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    return {"DOCKER_CONFIG": str(config), "DOCKER_CONTEXT": name}


def _round_trip(stack: RemoteStack) -> None:
    """Data in and out through the addresses of the env file, as the application goes."""
    env = {**os.environ, "STACK_ENV_FILE": str(stack.env_file)}
    settings = load(env)
    with psycopg.connect(settings.database_url.reveal(), connect_timeout=10) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS remote_probe (word text)")
        conn.execute("INSERT INTO remote_probe VALUES ('kept')")
    client = redis.Redis.from_url(settings.redis_url.reveal(), socket_timeout=10)
    try:
        client.set("remote_probe", "kept")
        assert client.get("remote_probe") == b"kept"
    finally:
        client.close()


def _words(stack: RemoteStack) -> list[str]:
    settings = load({**os.environ, "STACK_ENV_FILE": str(stack.env_file)})
    with psycopg.connect(settings.database_url.reveal(), connect_timeout=10) as conn:
        return [r[0] for r in conn.execute("SELECT word FROM remote_probe ORDER BY word")]


def _lifecycle(
    stack: RemoteStack, named: str, look: Callable[[], None] = lambda: None
) -> dict[str, object]:
    """init, health, status, a data round trip, db.backup and db.restore, down, reset; the
    status (JSON) as it was while the stack ran. `look` runs while the stack runs."""
    try:
        said = stack.ok("init", "--yes")
        assert named in said, said  # every command says which engine it acts on
        stack.ok("health")
        status = json.loads(stack.inv("status", "--json").stdout)
        assert named in str(status["where"])
        assert all(s["healthy"] for s in status["services"] if s["service"] != "adminer")
        _round_trip(stack)
        look()
        said = stack.ok("db.backup")
        backups = sorted((stack.work / "backups").glob("*.dump"))
        assert backups, said  # the file landed on this machine
        settings = load({**os.environ, "STACK_ENV_FILE": str(stack.env_file)})
        with psycopg.connect(settings.database_url.reveal()) as conn:
            conn.execute("DELETE FROM remote_probe")
        assert _words(stack) == []
        stack.ok("db.restore", str(backups[-1]), "--yes")
        assert _words(stack) == ["kept"]
        stack.ok("down")
        assert stack.docker("ps", "--all", "--quiet", "--filter",
                            f"label=com.docker.compose.project={stack.project}") == ""  # fmt: skip
        return dict(status)
    finally:
        reset = stack.inv("reset", "--yes", "--no-backup")
        assert reset.returncode == 0, reset.stdout + reset.stderr
        volumes = stack.docker("volume", "ls", "--quiet", "--filter",
                               f"label=com.docker.compose.project={stack.project}")  # fmt: skip
        assert volumes.strip() == ""


def test_the_full_lifecycle_on_a_tls_engine(tmp_path: Path, tls: TlsEndpoint) -> None:
    stack = RemoteStack(tmp_path, tls.env())
    _lifecycle(stack, f"DOCKER_HOST={tls.host}")


def test_the_full_lifecycle_through_a_docker_context(tmp_path: Path, tls: TlsEndpoint) -> None:
    env = _context_env(tls, tmp_path / "docker-config")
    stack = RemoteStack(tmp_path / "stack", env)
    stack.work.mkdir()
    _lifecycle(stack, f"docker context {env['DOCKER_CONTEXT']!r}")


def test_the_full_lifecycle_on_an_ssh_engine_through_the_forwarding(
    tmp_path: Path, sshd: SshEndpoint
) -> None:
    stack = RemoteStack(tmp_path, sshd.env(os.environ))
    seen: dict[str, int] = {}

    def look() -> None:
        # The containers publish on the engine host's loopback on ports the engine picked:
        # what reaches POSTGRES_PORT / REDIS_PORT here is the forwarding, nothing else.
        for service, port in (("db", stack.ports[0]), ("redis", stack.ports[1])):
            published = stack.docker("port", f"{stack.project}_{service}").split()[-1]
            engine_port = int(published.rsplit(":", 1)[1])
            assert engine_port != port
            seen[service] = engine_port
        owners = {listener.name for listener in listeners(stack.ports[0])}
        assert owners == {"ssh"}, owners
        # Nothing of this machine's filesystem is mounted: an engine on another host would
        # find none of it. The init scripts and redis.conf arrived as Compose configs.
        for service in ("db", "redis"):
            mounts = stack.docker("inspect", "--format", "{{range .Mounts}}{{.Type}} {{end}}",
                                  f"{stack.project}_{service}").split()  # fmt: skip
            assert mounts == ["volume"], (service, mounts)
        for script in sorted((ROOT / "docker" / "init-scripts").iterdir()):
            inside = stack.docker("exec", f"{stack.project}_db", "cat",
                                  f"/docker-entrypoint-initdb.d/{script.name}")  # fmt: skip
            assert inside == script.read_text(), script.name  # $ signs and all

    status = _lifecycle(stack, f"DOCKER_HOST={sshd.host}", look)
    assert set(seen) == {"db", "redis"}, "the stack was never looked at while it ran"
    listed = status["notes"]
    assert isinstance(listed, list)
    notes = " ".join(str(n) for n in listed)
    assert "ssh forwarding (pid" in notes and f"postgres 127.0.0.1:{stack.ports[0]} ->" in notes
    # down stopped the forwarding: nothing listens on the stack's ports any more.
    assert not listeners(stack.ports[0])


# --- failures: one sentence each, naming DOCKER_HOST or the context and the fix --------------


def _fails(stack: RemoteStack, *args: str) -> str:
    done = stack.inv(*args)
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert "Traceback" not in said, said
    return " ".join(said.split())


def test_an_engine_that_does_not_answer(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    stack = RemoteStack(tmp_path, {"DOCKER_HOST": f"tcp://127.0.0.1:{port}"})
    said = _fails(stack, "init", "--yes")
    assert f"No Docker engine answers at DOCKER_HOST=tcp://127.0.0.1:{port}" in said
    assert "connection refused" in said
    assert "fix or unset DOCKER_HOST" in said


def test_tls_files_missing(tmp_path: Path, tls: TlsEndpoint) -> None:
    empty = tmp_path / "certs"
    empty.mkdir()
    stack = RemoteStack(tmp_path, tls.env() | {"DOCKER_CERT_PATH": str(empty)})
    said = _fails(stack, "init", "--yes")
    assert f"DOCKER_CERT_PATH={empty} lacks ca.pem, cert.pem, key.pem" in said, said


def test_tls_files_of_another_engine(tmp_path: Path, tls: TlsEndpoint) -> None:
    stack = RemoteStack(tmp_path, tls.env() | {"DOCKER_CERT_PATH": str(tls.wrong_cert_path)})
    said = _fails(stack, "init", "--yes")
    assert f"The Docker engine at DOCKER_HOST={tls.host} refused the TLS handshake" in said
    assert "DOCKER_CERT_PATH" in said


def test_a_context_that_does_not_exist(tmp_path: Path) -> None:
    stack = RemoteStack(tmp_path, {"DOCKER_CONTEXT": "no-such-context"})
    said = _fails(stack, "init", "--yes")
    assert "The docker context 'no-such-context' (DOCKER_CONTEXT) does not exist" in said


def test_ssh_refused(tmp_path: Path, sshd: SshEndpoint) -> None:
    stack = RemoteStack(tmp_path, sshd.env(os.environ) | {"DOCKER_HOST": sshd.refused_host})
    said = _fails(stack, "init", "--yes")
    assert f"The Docker engine at DOCKER_HOST={sshd.refused_host} is refused by 127.0.0.1" in said


def test_a_remote_without_docker(tmp_path: Path, sshd: SshEndpoint) -> None:
    stack = RemoteStack(tmp_path, sshd.env(os.environ) | {"DOCKER_HOST": sshd.no_docker_host})
    said = _fails(stack, "init", "--yes")
    assert f"DOCKER_HOST={sshd.no_docker_host} reaches localhost, which has no `docker`" in said


def test_no_compose_for_the_docker_cli(tmp_path: Path, tls: TlsEndpoint) -> None:
    """The engine answers but the docker CLI here has no Compose v2 (a DOCKER_CONFIG without
    the plugin; Compose runs here, whatever the engine): a task says so and how to get it."""
    stack = RemoteStack(tmp_path, tls.env())
    try:
        stack.ok("init", "--yes")
        config = tmp_path / "docker-config-without-compose"
        config.mkdir()
        stack.engine_env = tls.env() | {"DOCKER_CONFIG": str(config)}
        said = _fails(stack, "up")  # Adminer is started with `docker compose up`
        assert "The docker CLI here has no Compose v2 plugin" in said, said
        assert "run `inv setup`" in said, said
    finally:
        stack.engine_env = tls.env()
        reset = stack.inv("reset", "--yes", "--no-backup")
        assert reset.returncode == 0, reset.stdout + reset.stderr


def test_the_forwarding_after_a_kill_and_on_a_shared_engine(
    tmp_path: Path, sshd: SshEndpoint
) -> None:
    """kill -9 of the forwarding: status says so, up-core carries the ports again, the data is
    there. Then another developer's machine claims the project on the shared engine (its
    marker, as that machine's `inv` writes it: a second machine cannot run here): every task
    that would change the stack refuses, naming that machine, and nothing is changed."""
    stack = RemoteStack(tmp_path, sshd.env(os.environ))
    try:
        stack.ok("init", "--yes")
        _round_trip(stack)
        forwarding = json.loads((tmp_path / "state" / "ssh-forward.json").read_text())
        os.kill(int(forwarding["pid"]), signal.SIGKILL)
        notes = json.loads(stack.inv("status", "--json").stdout)["notes"]
        assert any("no SSH forwarding carries their ports here" in n for n in notes), notes
        stack.ok("up-core")
        assert _words(stack) == ["kept"]

        marker = f"{stack.project}_checkout"
        labels = json.loads(stack.docker("volume", "inspect", "--format", "{{json .Labels}}",
                                         marker))  # fmt: skip
        assert labels["org.ai-marketplace.checkout"] == str(ROOT)
        _mark(stack, marker, "bob-laptop/0123456789ab")
        for task in (("down",), ("reset", "--yes", "--no-backup"), ("db.restore", "x", "--yes")):
            said = _fails(stack, *task)
            assert "belongs to a checkout on bob-laptop" in said, (task, said)
            assert "COMPOSE_PROJECT_NAME" in said
        assert _words(stack) == ["kept"]  # nothing was changed
        problems = json.loads(stack.inv("status", "--json").stdout)["problems"]
        assert any("bob-laptop" in p for p in problems), problems
        _mark(stack, marker, this_machine())
    finally:
        reset = stack.inv("reset", "--yes", "--no-backup")
        assert reset.returncode == 0, reset.stdout + reset.stderr


def test_the_ssh_server_of_these_tests_is_what_they_say(tmp_path: Path) -> None:
    """Key A reaches a shell with docker, key B one without; keys are private; the server
    stops with its block."""
    with ssh_server(tmp_path / "ssh") as endpoint:
        env = {**os.environ, **endpoint.env(os.environ)}
        base = ["ssh", "-o", "ConnectTimeout=10", "-T", "-p", str(endpoint.port), "--"]
        normal = run.run([*base, "root@127.0.0.1", "docker", "version"], env=env, timeout=30)
        assert normal.ok, normal.stderr
        no_docker = run.run([*base, "root@localhost", "docker", "version"], env=env, timeout=30)
        assert no_docker.returncode == run.NOT_FOUND
        assert "docker: command not found" in no_docker.stderr
        for key in ("host_key", "key_a", "key_b"):
            assert (tmp_path / "ssh" / key).stat().st_mode & 0o077 == 0
        pid = int((tmp_path / "ssh" / "sshd.pid").read_text())
        assert procs.alive(pid)
    assert not procs.alive(pid)


def _mark(stack: RemoteStack, marker: str, machine: str) -> None:
    """The project's marker volume as the `inv` of `machine` writes it."""
    stack.docker("volume", "rm", marker)
    stack.docker("volume", "create", "--label", f"org.ai-marketplace.checkout={ROOT}",
                 "--label", f"org.ai-marketplace.machine={machine}", marker)  # fmt: skip
