"""tests/support/remote.py: the certificates and the endpoint file of the remote-engine tests
(the daemon restart and the SSH server are exercised by the compose suite, which installs
openssh-server: tests/integration/compose/test_remote.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from scripts.errors import StackError
from scripts.infra import run
from scripts.infra.docker import EngineReport
from tests.support.remote import (
    TLS_ENV,
    SshEndpoint,
    TlsEndpoint,
    load_tls_endpoint,
    make_certificates,
    tls_engine,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def openssl(*args: str) -> run.Result:
    return run.run(["openssl", *args], timeout=30, stdin=run.DEVNULL)


def test_tls_endpoint_env_names_the_good_certificates() -> None:
    endpoint = TlsEndpoint("tcp://127.0.0.1:2376", 2376, Path("/c/good"), Path("/c/wrong"))
    assert endpoint.env() == {
        "DOCKER_HOST": "tcp://127.0.0.1:2376",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": "/c/good",
    }


def test_load_tls_endpoint_without_the_variable_says_how_to_run_the_suite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TLS_ENV, raising=False)
    with pytest.raises(StackError, match=r"nox -s integration -- --backend compose"):
        load_tls_endpoint()


def test_load_tls_endpoint_reads_the_file_the_variable_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint_file = tmp_path / "endpoint.json"
    endpoint_file.write_text(
        json.dumps(
            {
                "pid": 1,
                "host": "tcp://127.0.0.1:4242",
                "port": 4242,
                "cert_path": "/c/good",
                "wrong_cert_path": "/c/wrong",
            }
        )
    )
    monkeypatch.setenv(TLS_ENV, str(endpoint_file))
    assert load_tls_endpoint() == TlsEndpoint(
        "tcp://127.0.0.1:4242", 4242, Path("/c/good"), Path("/c/wrong")
    )
    endpoint_file.write_text("{}")
    with pytest.raises(StackError, match=r"is unusable"):
        load_tls_endpoint()


def test_certificates_chain_to_their_own_ca_only(tmp_path: Path) -> None:
    server, client, wrong = make_certificates(tmp_path / "tls")
    for directory in (tmp_path / "tls", server, client, wrong):
        assert mode(directory) == 0o700
    for directory in (server, client, wrong):
        assert sorted(p.name for p in directory.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
        assert mode(directory / "key.pem") == 0o600

    assert openssl("verify", "-CAfile", str(client / "ca.pem"), str(client / "cert.pem")).ok
    assert openssl("verify", "-CAfile", str(wrong / "ca.pem"), str(wrong / "cert.pem")).ok
    assert not openssl("verify", "-CAfile", str(server / "ca.pem"), str(wrong / "cert.pem")).ok

    text = openssl("x509", "-in", str(server / "cert.pem"), "-noout", "-text").stdout
    assert "IP Address:127.0.0.1" in text
    assert "DNS:localhost" in text
    assert (
        "TLS Web Client Authentication"
        in openssl("x509", "-in", str(client / "cert.pem"), "-noout", "-text").stdout
    )


def test_tls_engine_leaves_a_daemon_it_does_not_own_alone(tmp_path: Path) -> None:
    report = EngineReport("20.10.24", started=False, how="reused", pid=None)
    with pytest.raises(StackError, match=r"only a dockerd this project started"):
        tls_engine(report, directory=tmp_path / "tls", pid_file=tmp_path / "dockerd.pid")
    assert not (tmp_path / "tls").exists()


def test_ssh_endpoint_env_puts_its_ssh_first() -> None:
    endpoint = SshEndpoint(
        port=2222,
        host="ssh://root@127.0.0.1:2222",
        no_docker_host="ssh://root@localhost:2222",
        refused_host="ssh://root@127.0.0.1:2223",
        bin_dir=Path("/w/bin"),
    )
    assert endpoint.env({"PATH": "/usr/bin:/bin", "HOME": "/root"}) == {
        "DOCKER_HOST": "ssh://root@127.0.0.1:2222",
        "PATH": "/w/bin:/usr/bin:/bin",
    }
