"""The Docker engine as the docker CLI finds it, through the Docker SDK (the `docker` package).

Which engine: DOCKER_HOST (with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH), else DOCKER_CONTEXT,
else the current context of the docker CLI's config, else the local socket: the docker CLI's
own order, so `docker compose` and these queries always meet the same engine. A failure to
reach it is one sentence that names DOCKER_HOST or the context and the fix.

The SDK costs about 0.2 s to import: only the compose backend and the engine probe import it,
never a command of the native backend.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import json
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from scripts.errors import StackError
from scripts.infra import run

if TYPE_CHECKING:
    import docker

DEFAULT_HOST = "unix:///var/run/docker.sock"
PROBE_TIMEOUT = 3.0  # seconds for `engine_version`: a local engine answers in milliseconds
SSH_TIMEOUT = 15  # seconds for an SSH connection to the engine's host
QUERY_TIMEOUT = 60


@dataclass(frozen=True)
class Endpoint:
    """Where the engine is, and how the user chose it (for every sentence about it)."""

    host: str  # "unix:///var/run/docker.sock", "tcp://h:2376", "ssh://user@h:22"
    chosen_by: str  # "DOCKER_HOST", "DOCKER_CONTEXT=x", "docker context x", "" (the default)
    tls: bool = False
    cert_path: str = ""  # DOCKER_CERT_PATH (DOCKER_HOST only)
    context: str = ""  # the context's name when one chose the engine

    @property
    def scheme(self) -> str:
        return self.host.split("://", 1)[0] if "://" in self.host else "unix"

    @property
    def hostname(self) -> str:
        """The engine's machine: "localhost" for a socket, else the host of its address."""
        if self.scheme in ("unix", "npipe", "fd"):
            return "localhost"
        return urlsplit(self.host).hostname or "localhost"

    @property
    def remote(self) -> bool:
        """True when the engine's published ports are not on this machine's loopback."""
        if self.scheme == "ssh":
            return True  # even ssh://localhost: the forwarding is what the tests prove
        return not is_loopback(self.hostname)

    def named(self) -> str:
        """How a sentence names the engine: `DOCKER_HOST=tcp://…` or `docker context x (…)`."""
        if self.chosen_by == "DOCKER_HOST":
            return f"DOCKER_HOST={self.host}"
        if self.context:
            return f"docker context {self.context!r} ({self.host})"
        return f"the local engine ({self.host})"

    def fix_hint(self) -> str:
        if self.chosen_by == "DOCKER_HOST":
            if self.scheme == "unix":  # a socket of this machine: maybe just not started
                return "start the engine with `inv setup`, or fix or unset DOCKER_HOST"
            return "fix or unset DOCKER_HOST"
        if self.context:
            return f"fix the context (`docker context inspect {self.context}`) or choose another"
        return "start it with `inv setup`, or set STACK_BACKEND=native in the env file"

    def ssh_argv(self, *remote: str, options: tuple[str, ...] = ()) -> list[str]:
        """`ssh` to the engine's host as the docker CLI goes there (user, port, the user's own
        ssh config), with `options` before the destination."""
        parts = urlsplit(self.host)
        argv = ["ssh", "-o", f"ConnectTimeout={SSH_TIMEOUT}", *options]
        if parts.username:
            argv += ["-l", parts.username]
        if parts.port:
            argv += ["-p", str(parts.port)]
        return [*argv, "--", parts.hostname or "", *remote]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def endpoint(environ: Mapping[str, str] | None = None) -> Endpoint:
    """The engine the docker CLI would use with `environ` (default: this process's)."""
    env = _environ(environ)
    host = env.get("DOCKER_HOST", "").strip()
    if host:
        tls = bool(env.get("DOCKER_TLS_VERIFY", "").strip()) or host.startswith("https://")
        cert_path = env.get("DOCKER_CERT_PATH", "").strip()
        if tls and not cert_path:
            cert_path = str(Path("~/.docker").expanduser())
        return Endpoint(host, "DOCKER_HOST", tls=tls, cert_path=cert_path)
    name = env.get("DOCKER_CONTEXT", "").strip()
    chosen_by = f"DOCKER_CONTEXT={name}" if name else ""
    if not name:
        name = _current_context(env)
        chosen_by = f"docker context {name}" if name != "default" else ""
    if name == "default":  # the docker CLI's own: the local socket, however chosen
        return Endpoint(DEFAULT_HOST, "")
    meta = _context_dir(env) / "meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
    try:
        endpoints = json.loads(meta.read_text()).get("Endpoints") or {}
        host = str((endpoints.get("docker") or {}).get("Host") or DEFAULT_HOST)
    except (OSError, ValueError, AttributeError):
        where = "DOCKER_CONTEXT" if chosen_by.startswith("DOCKER_CONTEXT") else "config.json"
        raise StackError(
            f"The docker context {name!r} ({where}) does not exist: `docker context ls` lists "
            "the contexts; create it or choose another."
        ) from None
    tls_dir = _tls_dir(env, name)
    tls = any((tls_dir / f).is_file() for f in ("ca.pem", "cert.pem", "key.pem"))
    return Endpoint(host, chosen_by, tls=tls, cert_path=str(tls_dir) if tls else "", context=name)


# The docker CLI's contexts, read here rather than with the SDK's ContextAPI: that finds no
# context at all when DOCKER_CONFIG holds no config.json (docker 7.2.0), which is how the
# docker CLI leaves a new DOCKER_CONFIG after `docker context create`.
def _config_dir(env: Mapping[str, str]) -> Path:
    chosen = env.get("DOCKER_CONFIG", "").strip()
    return Path(chosen).expanduser() if chosen else Path("~/.docker").expanduser()


def _context_dir(env: Mapping[str, str]) -> Path:
    return _config_dir(env) / "contexts"


def _tls_dir(env: Mapping[str, str], name: str) -> Path:
    return _context_dir(env) / "tls" / hashlib.sha256(name.encode()).hexdigest() / "docker"


def _current_context(env: Mapping[str, str]) -> str:
    """`docker context use`'s choice (config.json's currentContext), else "default"."""
    try:
        config = json.loads((_config_dir(env) / "config.json").read_text())
    except (OSError, ValueError):
        return "default"
    return str(config.get("currentContext") or "default") if isinstance(config, dict) else "default"


@functools.cache
def _checked_ssh(point: Endpoint) -> None:
    """Reach the engine's host over SSH once, as the SDK and `docker compose` will, and turn
    what ssh says into one sentence. The SDK's own ssh would print ssh's errors to this
    terminal, and the docker CLI's are a wall of text."""
    argv = point.ssh_argv("docker", "system", "dial-stdio", options=("-o", "BatchMode=yes"))
    result = run.run(argv, timeout=SSH_TIMEOUT + 5, stdin=run.DEVNULL)
    if result.ok:
        return
    said = (result.stderr + "\n" + result.stdout).lower()
    where = point.named()
    if result.returncode == run.NOT_FOUND and "ssh" in result.last_line():
        problem = (
            "needs the ssh client, which is not installed here (`apt-get install openssh-client`)"
        )
    elif "command not found" in said or ("not found" in said and "docker" in said):
        problem = (
            f"reaches {point.hostname}, which has no `docker` command on its PATH for SSH "
            "sessions: install Docker there (the docker CLI runs `docker system dial-stdio` "
            "on it), or choose another engine"
        )
    elif ("dial unix" in said or "docker daemon" in said) and "permission denied" in said:
        problem = (
            f"reaches {point.hostname}, but that user may not use its Docker socket: add the "
            'user to the docker group there (`sudo usermod -aG docker "$USER"`)'
        )
    elif "permission denied" in said:
        problem = (
            f"is refused by {point.hostname} (permission denied): add your public key to that "
            "user's ~/.ssh/authorized_keys there, or name another user in the address"
        )
    elif "host key verification failed" in said:
        problem = (
            f"cannot verify the host key of {point.hostname}: connect once with `ssh` by hand "
            "to check and accept it"
        )
    elif "connection refused" in said:
        problem = (
            f"is refused by {point.hostname} (no SSH server on that port): start sshd there, "
            "or fix the port"
        )
    elif "could not resolve" in said or "name or service not known" in said:
        problem = f"names a host this machine cannot resolve ({point.hostname}): fix the name"
    elif result.returncode == run.TIMED_OUT or "timed out" in said:
        problem = f"gets no answer from {point.hostname} within {SSH_TIMEOUT} s: check the network"
    elif "cannot connect to the docker daemon" in said or "dial unix" in said:
        problem = (
            f"reaches {point.hostname}, but no Docker engine runs there: start it "
            "(`sudo systemctl start docker` on that host)"
        )
    else:
        problem = f"fails over SSH ({result.last_line()})"
    raise StackError(f"The Docker engine at {where} {problem}.")


def client(
    environ: Mapping[str, str] | None = None, *, timeout: float = QUERY_TIMEOUT
) -> docker.APIClient:
    """The SDK's API client for the engine of `environ`; unreachable is a StackError (one
    sentence). The low-level client: one request per query (the high-level one's
    containers.list inspects every container once more)."""
    point = endpoint(environ)
    if point.scheme == "ssh":
        _checked_ssh(point)
    return _client(point, timeout)


def _sdk(*, ssh: bool) -> None:
    """Import the Docker SDK, or say in one sentence that it is missing: without it,
    `import docker` finds this repository's docker/ folder (a namespace package) and fails
    later, somewhere less clear.

    The SDK imports paramiko for ssh:// engines whatever the engine: 0.24 s of its 0.5 s
    import, measured here. For any other engine paramiko is kept out (the SDK imports it
    only if it can, and then offers no ssh:// transport, which that engine does not use)."""
    if "docker.api" in sys.modules:
        return
    keep_out = not ssh and "paramiko" not in sys.modules
    if keep_out:
        sys.modules["paramiko"] = None  # type: ignore[assignment] # import paramiko fails
    try:
        import docker.constants  # noqa: F401 - the import is the check
    except ImportError:
        raise StackError(
            f"The Docker SDK for Python (the docker package) is not installed for {sys.executable}:"
            " run `uv sync` in the checkout (or `inv setup`), which installs the pinned version."
        ) from None
    finally:
        if keep_out:
            del sys.modules["paramiko"]


def _client(point: Endpoint, timeout: float) -> docker.APIClient:
    _sdk(ssh=point.scheme == "ssh")
    import docker
    import docker.constants
    import docker.utils
    from docker.errors import DockerException, TLSParameterError
    from requests.exceptions import RequestException

    # requests takes fractions of a second; the SDK's annotation says int. Never 0: that is
    # "no time at all".
    seconds = cast("int", max(timeout, 0.1))
    try:
        tls: docker.tls.TLSConfig | bool = False
        if point.chosen_by == "DOCKER_HOST" and point.tls:
            env = {"DOCKER_HOST": point.host, "DOCKER_TLS_VERIFY": "1"}
            tls = docker.utils.kwargs_from_env(
                environment=env | {"DOCKER_CERT_PATH": point.cert_path}
            )["tls"]
        elif point.tls:
            files = Path(point.cert_path)
            tls = docker.tls.TLSConfig(
                client_cert=(str(files / "cert.pem"), str(files / "key.pem")),
                ca_cert=str(files / "ca.pem"),
                verify=True,
            )
        api = docker.APIClient(
            base_url=point.host,
            tls=tls,
            timeout=seconds,
            version=docker.constants.MINIMUM_DOCKER_API_VERSION,  # asked for below
            use_ssh_client=True,
        )
        # The engine's CA and nothing else: with trust_env, requests lets REQUESTS_CA_BUNDLE
        # or CURL_CA_BUNDLE (set machine-wide on many hosts) replace it (requests#3829).
        api.trust_env = False
        # The engine's own API version, as the SDK's version="auto" asks for it.
        cast("Any", api)._version = str(api.version(api_version=False)["ApiVersion"])
        return api
    except TLSParameterError:
        raise StackError(_tls_files_problem(point)) from None
    except (DockerException, RequestException) as error:
        raise StackError(unreachable(point, str(error))) from None
    except (KeyError, TypeError, ValueError):  # an answer that is not an engine's
        raise StackError(unreachable(point, "the answer is not a Docker engine's")) from None


def _tls_files_problem(point: Endpoint) -> str:
    if point.context:
        return (
            f"The TLS files of {point.named()} are missing: create the context again with "
            "`docker context create … --docker host=…,ca=…,cert=…,key=…`."
        )
    missing = [
        n for n in ("ca.pem", "cert.pem", "key.pem") if not Path(point.cert_path, n).is_file()
    ]
    return (
        f"DOCKER_TLS_VERIFY is set for DOCKER_HOST={point.host} but DOCKER_CERT_PATH="
        f"{point.cert_path} lacks {', '.join(missing) or 'readable files'}: point DOCKER_CERT_PATH "
        "at the directory holding the engine's ca.pem and your cert.pem and key.pem."
    )


def unreachable(point: Endpoint, detail: str) -> str:
    """One sentence for an engine that could not be reached or did not answer (`detail`: the
    SDK's or requests' own words)."""
    lowered = detail.lower()
    where = point.named()
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
        if "wrong version number" in lowered or "http request to an https" in lowered:
            reason = "speaks plain HTTP or another protocol where TLS was expected"
            fix = "unset DOCKER_TLS_VERIFY, or use the engine's TLS port"
        else:
            reason = "refused the TLS handshake (the certificates are not this engine's)"
            fix = (
                "use the CA that signed the engine's certificate and a client certificate it "
                "trusts" + (" in DOCKER_CERT_PATH" if point.chosen_by == "DOCKER_HOST" else "")
            )
        return f"The Docker engine at {where} {reason}: {fix}."
    if "connection refused" in lowered or "no such file" in lowered:
        reason = "connection refused: nothing listens there"
    elif "timed out" in lowered or "timeout" in lowered:
        reason = "no answer in time"
    elif "permission denied" in lowered:
        path = point.host.removeprefix("unix://")
        return (
            f"This user may not use the Docker socket {path}: run as root, or add the user to "
            'the docker group (`sudo usermod -aG docker "$USER"`) and log in again.'
        )
    elif "name or service not known" in lowered or "failed to resolve" in lowered:
        reason = f"this machine cannot resolve {point.hostname}"
    else:
        reason = (
            detail.splitlines()[-1].strip().rstrip(".")[:200] if detail.strip() else "no answer"
        )
    return f"No Docker engine answers at {where} ({reason}): {point.fix_hint()}."


def engine_version(
    environ: Mapping[str, str] | None = None, *, timeout: float = PROBE_TIMEOUT
) -> str | None:
    """The engine's version when it answers, else None. A problem the user must fix that is
    not "nothing runs there" (a missing context, TLS files, a refused SSH key, a socket this
    user may not use) is a StackError: it must not read as "no engine"."""
    try:
        point = endpoint(environ)
        if point.scheme == "ssh":
            _checked_ssh(point)
        with contextlib.closing(Guarded(_client(point, timeout), point)) as engine:
            return str(engine.version(api_version=False).get("Version", "unknown"))
    except StackError as error:
        if error.message.startswith("No Docker engine answers"):
            return None
        raise


def resolve_ip(host: str) -> str:
    """An IP address for `host` (PostgreSQL's hostaddr needs one); `host` itself if it is one."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0])
    except OSError:
        raise StackError(
            f"This machine cannot resolve the Docker engine's host {host!r}: fix DOCKER_HOST."
        ) from None


class Guarded:
    """An SDK API client whose every call turns a failure into one sentence (StackError): an
    engine that goes away mid-command (a restart, a dropped SSH link) or refuses a request.
    NotFound passes through: the callers ask for things that may not exist."""

    def __init__(self, api: docker.APIClient, point: Endpoint) -> None:
        self._api = api
        self._point = point

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._api, name)
        if not callable(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            from docker.errors import APIError, DockerException, NotFound
            from requests.exceptions import RequestException

            try:
                return found(*args, **kwargs)
            except NotFound:
                raise
            except APIError as error:
                said = str(error.explanation or error).strip().rstrip(".")
                raise StackError(
                    f"The Docker engine at {self._point.named()} refused {name} ({said}): fix "
                    "what it names and try again."
                ) from None
            except (DockerException, RequestException, OSError) as error:
                raise StackError(unreachable(self._point, str(error))) from None

        return call
