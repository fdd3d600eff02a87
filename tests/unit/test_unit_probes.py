"""scripts/infra/probes.py and scripts/infra/scram.py: SCRAM, the PostgreSQL, Redis and HTTP
probes, and wait_until_ready.

The servers here are fakes in a thread on 127.0.0.1 (unit tests run no services). Each one
checks what the probe sends, so a probe that sent the wrong password or a malformed message
would fail these tests, not just one that misreads the answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socketserver
import struct
from collections.abc import Callable

import pytest

from scripts.infra.probes import (
    AuthenticityError,
    PgLogin,
    ProbeResult,
    ProtocolError,
    _Scram,
    probe_http,
    probe_postgres,
    probe_redis,
    wait_until_ready,
)
from scripts.infra.scram import saslprep, scram_verifier
from tests.unit.unit_support import closed_port, http_handler, serve_tcp

# --- SCRAM-SHA-256: RFC 7677, section 3 -----------------------------------------------------

RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def rfc_scram() -> _Scram:
    """The project's client with the RFC's user name and nonce (it sends "n=" and a random
    nonce, as PostgreSQL clients do, so the vector needs both set by hand)."""
    scram = _Scram("pencil")
    scram.nonce = RFC_CLIENT_NONCE
    scram.first_bare = f"n=user,r={RFC_CLIENT_NONCE}"
    return scram


def test_scram_client_final_message_matches_rfc_7677() -> None:
    scram = rfc_scram()
    assert scram.first_message() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert scram.final_message(RFC_SERVER_FIRST).decode() == RFC_CLIENT_FINAL
    scram.verify(RFC_SERVER_FINAL)  # the RFC's server signature is accepted


def test_scram_rejects_a_wrong_server_signature() -> None:
    scram = rfc_scram()
    scram.final_message(RFC_SERVER_FIRST)
    wrong = base64.b64encode(b"\0" * 32).decode()
    with pytest.raises(AuthenticityError, match="could not prove it knows the password"):
        scram.verify(f"v={wrong}")
    with pytest.raises(ProtocolError):
        scram.verify("e=invalid-proof")


def test_scram_rejects_a_server_nonce_that_does_not_extend_ours() -> None:
    scram = rfc_scram()
    with pytest.raises(ProtocolError, match="nonce"):
        scram.final_message("r=someoneElsesNonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")


def test_scram_first_message_is_postgres_style_with_a_fresh_nonce() -> None:
    first, second = _Scram("pw"), _Scram("pw")
    assert first.first_message().startswith(b"n,,n=,r=")
    assert first.first_message() == f"n,,n=,r={first.nonce}".encode()
    assert first.nonce != second.nonce
    assert len(base64.b64decode(first.nonce)) >= 18


# --- a fake PostgreSQL server -----------------------------------------------------------------


def _pg_msg(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _pg_error(code: str, message: str) -> bytes:
    fields = f"SFATAL\0C{code}\0M{message}\0\0".encode()
    return _pg_msg(b"E", fields)


def fake_postgres(
    password: str, *, startup_error: tuple[str, str] | None = None, forge_signature: bool = False
) -> type[socketserver.StreamRequestHandler]:
    """A server doing SCRAM-SHA-256 (its own implementation, from RFC 5802) and SELECT 1."""
    salt, iterations = b"fake-salt-16byte", 4096
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    class Handler(socketserver.StreamRequestHandler):
        def read_message(self) -> tuple[bytes, bytes]:
            kind = self.rfile.read(1)
            (length,) = struct.unpack("!I", self.rfile.read(4))
            return kind, self.rfile.read(length - 4)

        def handle(self) -> None:
            (length,) = struct.unpack("!I", self.rfile.read(4))
            startup = self.rfile.read(length - 4)
            assert struct.unpack("!I", startup[:4])[0] == 196608  # protocol 3.0
            items = startup[4:].split(b"\0")
            params = dict(zip(items[0::2], items[1::2], strict=False))
            if startup_error is not None:
                self.wfile.write(_pg_error(*startup_error))
                return
            user = params[b"user"].decode()
            self.wfile.write(_pg_msg(b"R", struct.pack("!I", 10) + b"SCRAM-SHA-256\0\0"))
            kind, body = self.read_message()
            assert kind == b"p"
            mechanism, rest = body.split(b"\0", 1)
            assert mechanism == b"SCRAM-SHA-256"
            client_first = rest[4:].decode()
            assert client_first.startswith("n,,")
            client_first_bare = client_first[3:]
            client_nonce = dict(a.split("=", 1) for a in client_first_bare.split(","))["r"]
            server_first = (
                f"r={client_nonce}fakeServerNonce,s={base64.b64encode(salt).decode()},"
                f"i={iterations}"
            )
            self.wfile.write(_pg_msg(b"R", struct.pack("!I", 11) + server_first.encode()))
            kind, body = self.read_message()
            assert kind == b"p"
            client_final = body.decode()
            without_proof, _, proof = client_final.rpartition(",p=")
            auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
            signature = hmac.digest(stored_key, auth_message, "sha256")
            client_key = bytes(
                a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True)
            )
            if hashlib.sha256(client_key).digest() != stored_key:
                self.wfile.write(
                    _pg_error("28P01", f'password authentication failed for user "{user}"')
                )
                return
            server_signature = hmac.digest(server_key, auth_message, "sha256")
            if forge_signature:
                server_signature = bytes(32)
            final = f"v={base64.b64encode(server_signature).decode()}".encode()
            self.wfile.write(_pg_msg(b"R", struct.pack("!I", 12) + final))
            self.wfile.write(_pg_msg(b"R", struct.pack("!I", 0)))
            self.wfile.write(_pg_msg(b"S", b"server_version\x0015.99 (fake)\0"))
            self.wfile.write(_pg_msg(b"Z", b"I"))
            kind, body = self.read_message()
            assert (kind, body) == (b"Q", b"SELECT 1\0")
            self.wfile.write(_pg_msg(b"T", b"\0\x01?column?\0" + bytes(18)))
            self.wfile.write(_pg_msg(b"D", struct.pack("!HI", 1, 1) + b"1"))
            self.wfile.write(_pg_msg(b"C", b"SELECT 1\0"))
            self.wfile.write(_pg_msg(b"Z", b"I"))
            assert self.read_message()[0] == b"X"

    return Handler


def pg_login(port: int, password: str) -> PgLogin:
    return PgLogin("127.0.0.1", port, "marketplace", password, "ai_marketplace")


def test_probe_postgres_logs_in_with_scram_and_runs_select_1() -> None:
    with serve_tcp(fake_postgres("right-pw")) as port:
        result = probe_postgres(pg_login(port, "right-pw"))
    assert result == ProbeResult(True, "PostgreSQL 15.99 (fake), SELECT 1 ok")


def test_probe_postgres_wrong_password_is_fatal() -> None:
    with serve_tcp(fake_postgres("right-pw")) as port:
        result = probe_postgres(pg_login(port, "wrong-pw"))
    assert not result.ok
    assert result.fatal
    assert "SQLSTATE 28P01" in result.detail
    assert "password authentication failed" in result.detail
    assert "wrong-pw" not in result.detail
    assert result.auth_failed, "a changed password is applied by `inv up-core` on this flag"


def test_probe_postgres_starting_up_is_worth_waiting_for() -> None:
    starting = ("57P03", "the database system is starting up")
    with serve_tcp(fake_postgres("pw", startup_error=starting)) as port:
        result = probe_postgres(pg_login(port, "pw"))
    assert result == ProbeResult(
        False, "the database system is starting up (SQLSTATE 57P03)", fatal=False, sqlstate="57P03"
    )


def test_probe_postgres_refuses_a_server_that_cannot_prove_the_password() -> None:
    with serve_tcp(fake_postgres("pw", forge_signature=True)) as port:
        result = probe_postgres(pg_login(port, "pw"))
    assert not result.ok
    assert result.fatal, "a forged signature will not go away by waiting"
    assert "could not prove it knows the password" in result.detail


def test_login_repr_hides_the_password() -> None:
    assert "Hidden-Pw" not in repr(pg_login(1, "Hidden-Pw"))


# --- closed ports -----------------------------------------------------------------------------


def test_probes_against_a_closed_port_say_nothing_listens() -> None:
    with closed_port() as port:
        where = f"127.0.0.1:{port}"
        results = [
            probe_postgres(pg_login(port, "pw")),
            probe_redis("127.0.0.1", port, "pw"),
            probe_http("127.0.0.1", port),
        ]
    for result in results:
        assert result == ProbeResult(False, f"nothing listens on {where}", refused=True)


# --- a fake Redis server ----------------------------------------------------------------------


def fake_redis(
    replies: dict[str, bytes], received: list[list[str]]
) -> type[socketserver.StreamRequestHandler]:
    """Answers each RESP command with replies[COMMAND] and records what it was sent."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while header := self.rfile.readline():
                assert header.startswith(b"*"), header
                command = []
                for _ in range(int(header[1:])):
                    size = int(self.rfile.readline()[1:])
                    command.append(self.rfile.read(size + 2)[:-2].decode())
                received.append(command)
                self.wfile.write(replies[command[0].upper()])

    return Handler


def test_probe_redis_authenticates_then_pings() -> None:
    received: list[list[str]] = []
    with serve_tcp(fake_redis({"AUTH": b"+OK\r\n", "PING": b"+PONG\r\n"}, received)) as port:
        result = probe_redis("127.0.0.1", port, "redis pw with spaces")
    assert result == ProbeResult(True, "PING with AUTH answered PONG")
    assert received == [["AUTH", "redis pw with spaces"], ["PING"]]


def test_probe_redis_wrong_password_is_fatal() -> None:
    wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    with serve_tcp(fake_redis({"AUTH": wrongpass}, [])) as port:
        result = probe_redis("127.0.0.1", port, "wrong")
    assert not result.ok
    assert result.fatal
    assert result.detail.startswith("WRONGPASS")


def test_probe_redis_loading_is_worth_waiting_for() -> None:
    loading = b"-LOADING Redis is loading the dataset in memory\r\n"
    with serve_tcp(fake_redis({"AUTH": b"+OK\r\n", "PING": loading}, [])) as port:
        result = probe_redis("127.0.0.1", port, "pw")
    assert result == ProbeResult(
        False, "LOADING Redis is loading the dataset in memory", fatal=False
    )


def test_probe_redis_unexpected_answer_is_not_ok() -> None:
    with serve_tcp(fake_redis({"AUTH": b"+OK\r\n", "PING": b"$5\r\nhello\r\n"}, [])) as port:
        result = probe_redis("127.0.0.1", port, "pw")
    assert not result.ok
    assert "PING answered" in result.detail


# --- a fake Adminer -----------------------------------------------------------------------------

ADMINER_PAGE = b"<!DOCTYPE html><title>Login - Adminer</title><form>...</form>"


def test_probe_http_accepts_adminers_login_page() -> None:
    requests: list[str] = []
    with serve_tcp(http_handler(lambda _: (200, "OK", ADMINER_PAGE), requests)) as port:
        result = probe_http("127.0.0.1", port)
    assert result == ProbeResult(True, "HTTP 200, Adminer login page")
    assert requests == ["GET / HTTP/1.1"]


def test_probe_http_rejects_another_page() -> None:
    page = b"<html><title>Welcome to nginx!</title></html>"
    with serve_tcp(http_handler(lambda _: (200, "OK", page))) as port:
        result = probe_http("127.0.0.1", port)
    assert result == ProbeResult(False, "HTTP 200, but the page is not Adminer's login page")


def test_probe_http_reports_an_error_status() -> None:
    with serve_tcp(http_handler(lambda _: (502, "Bad Gateway", ADMINER_PAGE))) as port:
        result = probe_http("127.0.0.1", port)
    assert result == ProbeResult(False, "HTTP 502 Bad Gateway")


# --- wait_until_ready -----------------------------------------------------------------------


class Sequenced:
    """A probe that answers from a script of results, repeating the last one; counts calls."""

    def __init__(self, *results: ProbeResult) -> None:
        self.results = list(results)
        self.calls = 0

    def __call__(self) -> ProbeResult:
        self.calls += 1
        return self.results[min(self.calls, len(self.results)) - 1]


NOT_YET = ProbeResult(False, "not yet")
READY = ProbeResult(True, "ready")


def test_wait_until_ready_polls_until_every_probe_answers() -> None:
    postgres = Sequenced(NOT_YET, NOT_YET, READY)
    redis = Sequenced(READY)
    results = wait_until_ready([("postgres", postgres), ("redis", redis)], 30, interval=0)
    assert results == {"postgres": READY, "redis": READY}
    assert postgres.calls == 3
    assert redis.calls == 1  # not probed again once ready


def test_wait_until_ready_stops_at_once_on_a_fatal_result() -> None:
    wrong = ProbeResult(False, "WRONGPASS", fatal=True)
    redis = Sequenced(wrong, READY)
    results = wait_until_ready([("redis", redis)], 30, interval=0)
    assert results == {"redis": wrong}
    assert redis.calls == 1


def test_wait_until_ready_stops_when_the_service_exited() -> None:
    postgres = Sequenced(NOT_YET)
    asked: list[str] = []

    def still_running(name: str) -> str | None:
        asked.append(name)
        return "postgres exited: FATAL: data directory has wrong ownership"

    results = wait_until_ready(
        [("postgres", postgres)], 30, interval=0, still_running=still_running
    )
    assert results == {
        "postgres": ProbeResult(
            False, "postgres exited: FATAL: data directory has wrong ownership", fatal=True
        )
    }
    assert postgres.calls == 1
    assert asked == ["postgres"]


def test_wait_until_ready_keeps_waiting_while_the_service_runs() -> None:
    postgres = Sequenced(NOT_YET, NOT_YET, READY)
    still_running: Callable[[str], str | None] = lambda _name: None  # noqa: E731
    results = wait_until_ready(
        [("postgres", postgres)], 30, interval=0, still_running=still_running
    )
    assert results == {"postgres": READY}


def test_wait_until_ready_gives_up_after_the_timeout_with_the_last_result() -> None:
    calls = 0

    def probe() -> ProbeResult:
        nonlocal calls
        calls += 1
        return ProbeResult(False, f"attempt {calls}")

    redis = Sequenced(READY)
    results = wait_until_ready([("postgres", probe), ("redis", redis)], 0.05, interval=0.01)
    assert calls >= 1
    assert results == {"postgres": ProbeResult(False, f"attempt {calls}"), "redis": READY}


def test_wait_until_ready_asks_still_running_sparingly() -> None:
    # still_running may be a `docker compose ps`: not once per probe round.
    postgres = Sequenced(NOT_YET)
    asked: list[str] = []

    def still_running(name: str) -> str | None:
        asked.append(name)
        return None

    results = wait_until_ready(
        [("postgres", postgres)], 0.1, interval=0.001, still_running=still_running, check_every=3600
    )
    assert results == {"postgres": NOT_YET}
    assert postgres.calls > 1
    assert asked == ["postgres"]


# --- SASLprep and the SCRAM verifier ------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "prepared"),
    [
        ("plain-ascii pw", "plain-ascii pw"),
        ("I\u00adX", "IX"),  # RFC 4013 3.1: soft hyphen mapped to nothing
        ("\u00aa", "a"),  # RFC 4013 3.3: NFKC
        ("\u2168", "IX"),  # RFC 4013 3.4: ROMAN NUMERAL NINE
        ("no\u00a0break", "no break"),  # non-ASCII space -> space
        ("\ufb01le\u00bd\uff21BC", "file1\u20442ABC"),  # ligature, fraction, fullwidth
        ("bell\u0007", "bell\u0007"),  # ASCII control: prohibited, so used as it is
        ("\u0627\u0031", "\u0627\u0031"),  # RandAL not at both ends: used as it is
        ("\U000e0001tag", "\U000e0001tag"),  # a tagging character: prohibited
    ],
)
def test_saslprep_as_postgresql_applies_it(password: str, prepared: str) -> None:
    assert saslprep(password) == prepared


@pytest.mark.parametrize("password", ["s3cret", "\ufb01le\u00bd\uff21BC", "no\u00a0break"])
def test_scram_verifier_holds_the_keys_of_the_prepared_password(password: str) -> None:
    verifier = scram_verifier(password)
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    assert (method, iterations) == ("SCRAM-SHA-256", "4096")
    salted = hashlib.pbkdf2_hmac(
        "sha256", saslprep(password).encode(), base64.b64decode(salt), 4096
    )
    assert stored == hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    assert server == hmac.digest(salted, b"Server Key", "sha256")
    assert password not in verifier
    assert scram_verifier(password) != verifier, "each verifier has its own salt"


def test_the_probe_logs_in_with_a_password_saslprep_changes() -> None:
    # The server stored the verifier of the prepared password, as PostgreSQL does.
    with serve_tcp(fake_postgres(saslprep("\ufb01le\u00bd\uff21BC"))) as port:
        assert probe_postgres(pg_login(port, "\ufb01le\u00bd\uff21BC")).ok
