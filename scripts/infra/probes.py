"""Readiness probes that speak each service's own protocol over TCP, with the stdlib only.

A probe is a real login and query (PostgreSQL: SCRAM-SHA-256 then SELECT 1; Redis: AUTH then
PING; Adminer: an HTTP GET). psycopg and redis-py take ~0.4 s each to import, which is more
than a warm start of the whole stack, so health checks, readiness waits and `inv status`
use these instead. Backups, restores and everything else that works on data use psycopg
(scripts.infra.database).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scripts.infra import wait
from scripts.infra.scram import saslprep

if TYPE_CHECKING:
    from scripts.settings import Settings


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # one line: what answered, or why not
    fatal: bool = False  # waiting longer will not help (wrong password, ...)
    refused: bool = False  # nothing listens at all (not started, as opposed to broken)
    auth_failed: bool = False  # it answers, but refuses the password in the env file
    sqlstate: str = ""  # PostgreSQL's error code, when it answered with one


class ProtocolError(Exception):
    pass


class AuthenticityError(ProtocolError):
    """The server failed SCRAM's mutual authentication: waiting will not fix that."""


class _Conn:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self.sock.recv(size - len(chunks))
            if not chunk:
                raise ProtocolError("connection closed by the server")
            chunks += chunk
        return bytes(chunks)

    def close(self) -> None:
        self.sock.close()


# --- PostgreSQL -----------------------------------------------------------------------------


def _pg_message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _pg_read(conn: _Conn) -> tuple[bytes, bytes]:
    header = conn.recv_exact(5)
    kind, length = header[:1], struct.unpack("!I", header[1:])[0]
    return kind, conn.recv_exact(length - 4)


def _pg_error_text(payload: bytes) -> tuple[str, str]:
    fields = {}
    for item in payload.split(b"\0"):
        if item:
            fields[item[:1]] = item[1:].decode("utf-8", "replace")
    return fields.get(b"C", ""), fields.get(b"M", "error")


class _Scram:
    """Client side of SCRAM-SHA-256 (RFC 5802 / 7677) as PostgreSQL uses it."""

    def __init__(self, password: str) -> None:
        self.password = saslprep(password).encode()
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.server_signature = b""

    def first_message(self) -> bytes:
        return f"n,,{self.first_bare}".encode()

    def final_message(self, server_first: str) -> bytes:
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise ProtocolError("server nonce does not extend the client nonce")
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.password, base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: str) -> None:
        attrs = dict(item.split("=", 1) for item in server_final.split(","))
        expected, received = self.server_signature, base64.b64decode(attrs.get("v", ""))
        if not expected or not received or not hmac.compare_digest(received, expected):
            raise AuthenticityError(
                "the server could not prove it knows the password: not the server we expected"
            )


@dataclass(frozen=True)
class PgLogin:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    dbname: str


class PgSession:
    """One logged-in connection running simple queries (values as text, NULL as None).

    For SQL on a hot path where psycopg's import would cost more than the work: probes
    and status queries. Login and connect wait at most
    `timeout`; queries wait `query_timeout` (None: as long as the server takes).
    Raises OSError when nothing answers, PgError when the server says no.
    """

    def __init__(self, login: PgLogin, timeout: float, query_timeout: float | None) -> None:
        self._conn = _Conn(login.host, login.port, timeout)
        try:
            self.params = _pg_login(self._conn, login)
            self._conn.sock.settimeout(query_timeout)
        except BaseException:
            self._conn.close()
            raise

    def query(self, sql: str) -> list[tuple[str | None, ...]]:
        self._conn.send(_pg_message(b"Q", sql.encode() + b"\0"))
        rows: list[tuple[str | None, ...]] = []
        error: PgError | None = None
        while True:
            kind, payload = _pg_read(self._conn)
            if kind == b"D":
                rows.append(_pg_row(payload))
            elif kind == b"E":
                error = PgError(*_pg_error_text(payload))
            elif kind == b"Z":
                break
        if error is not None:
            raise error
        return rows

    def close(self) -> None:
        try:
            self._conn.send(_pg_message(b"X", b""))
        except OSError:
            pass  # the server went first: nothing to say goodbye to
        finally:
            self._conn.close()

    def __enter__(self) -> PgSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pg_query(
    login: PgLogin, sql: str, timeout: float = 2.0
) -> tuple[list[tuple[str | None, ...]], dict[str, str]]:
    """Log in and run one simple query; return its rows (as text) and the server parameters.

    Raises OSError when nothing answers, PgError when the server says no.
    """
    with PgSession(login, timeout, timeout) as session:
        return session.query(sql), session.params


def _pg_login(conn: _Conn, login: PgLogin) -> dict[str, str]:
    """Startup and authentication, up to ReadyForQuery; returns the server parameters."""
    options = (("user", login.user), ("database", login.dbname), ("application_name", "probe"))
    startup = struct.pack("!I", 196608) + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in options
    )
    conn.send(struct.pack("!I", len(startup) + 5) + startup + b"\0")
    scram = _Scram(login.password)
    params: dict[str, str] = {}
    while True:
        kind, payload = _pg_read(conn)
        if kind == b"E":
            raise PgError(*_pg_error_text(payload))
        if kind == b"R":
            reply = _pg_auth_reply(scram, login, struct.unpack("!I", payload[:4])[0], payload[4:])
            if reply is not None:
                conn.send(_pg_message(b"p", reply))
        elif kind == b"S":
            name, value, _ = payload.split(b"\0", 2)
            params[name.decode()] = value.decode()
        elif kind == b"Z":
            return params


def _pg_auth_reply(scram: _Scram, login: PgLogin, code: int, body: bytes) -> bytes | None:
    """The answer to one authentication request (None: nothing to send)."""
    if code == 0:  # AuthenticationOk
        return None
    if code == 10:  # SASL: the server lists mechanisms
        if b"SCRAM-SHA-256\0" not in body:
            raise ProtocolError("server offers no SCRAM-SHA-256")
        first = scram.first_message()
        return b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first
    if code == 11:  # SASLContinue
        return scram.final_message(body.decode())
    if code == 12:  # SASLFinal
        scram.verify(body.decode())
        return None
    # The stack's servers ask for SCRAM only (pg_hba.conf, and the image's scram-sha-256):
    # md5 or a password in clear text would be a server we did not set up.
    raise ProtocolError(f"unsupported authentication request {code} (the stack uses SCRAM)")


def _pg_row(payload: bytes) -> tuple[str | None, ...]:
    count = struct.unpack("!H", payload[:2])[0]
    offset, values = 2, list[str | None]()
    for _ in range(count):
        size = struct.unpack("!i", payload[offset : offset + 4])[0]
        offset += 4
        if size < 0:
            values.append(None)
        else:
            values.append(payload[offset : offset + size].decode())
            offset += size
    return tuple(values)


class PgError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# SQLSTATEs that mean "still starting up, try again".
_PG_TRANSIENT = {"57P03"}  # cannot_connect_now
PG_AUTH_FAILED = "28P01"  # invalid_password


def probe_postgres(login: PgLogin, timeout: float = 2.0) -> ProbeResult:
    try:
        rows, params = pg_query(login, "SELECT 1", timeout)
    except PgError as exc:
        fatal = exc.code not in _PG_TRANSIENT
        detail = f"{exc.message} (SQLSTATE {exc.code})"
        if exc.code == "53300":  # too_many_connections: it runs, but has no room for us
            detail = f"{exc.message}: every connection slot is taken; close some clients"
        return ProbeResult(
            False, detail, fatal=fatal, auth_failed=exc.code == PG_AUTH_FAILED, sqlstate=exc.code
        )
    except AuthenticityError as exc:
        return ProbeResult(False, str(exc), fatal=True)
    except (OSError, ProtocolError) as exc:
        return unreachable(exc, login.host, login.port)
    if rows != [("1",)]:
        return ProbeResult(False, f"SELECT 1 returned {rows!r}")
    return ProbeResult(True, f"PostgreSQL {params.get('server_version', '?')}, SELECT 1 ok")


# --- Redis ----------------------------------------------------------------------------------


def _resp_command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


RespValue = str | bytes | list["RespValue"]


def _resp_read(conn: _Conn) -> RespValue:
    line = bytearray()
    while not line.endswith(b"\r\n"):
        line += conn.recv_exact(1)
    kind, rest = line[:1], bytes(line[1:-2])
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return rest.decode()
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return b""
        return conn.recv_exact(size + 2)[:-2]
    if kind == b"*":
        return [_resp_read(conn) for _ in range(max(0, int(rest)))]
    raise ProtocolError(f"unexpected Redis reply {bytes(line)!r}")


class RedisError(Exception):
    pass


def redis_command(
    address: tuple[str, int], password: str | None, *args: str, timeout: float = 2.0
) -> RespValue:
    """AUTH (when a password is given), then one command; return its reply."""
    conn = _Conn(*address, timeout)
    try:
        if password is not None:
            conn.send(_resp_command("AUTH", password))
            _resp_read(conn)
        conn.send(_resp_command(*args))
        return _resp_read(conn)
    finally:
        conn.close()


def probe_redis(host: str, port: int, password: str, timeout: float = 2.0) -> ProbeResult:
    try:
        reply = redis_command((host, port), password, "PING", timeout=timeout)
    except RedisError as exc:
        text = str(exc)
        transient = text.startswith(("LOADING", "BUSY", "MASTERDOWN"))
        wrong = text.startswith(("WRONGPASS", "ERR invalid password", "NOAUTH"))
        return ProbeResult(False, text, fatal=not transient, auth_failed=wrong)
    except (OSError, ProtocolError) as exc:
        return unreachable(exc, host, port)
    if reply != "PONG":
        return ProbeResult(False, f"PING answered {reply!r}")
    return ProbeResult(True, "PING with AUTH answered PONG")


# --- HTTP -----------------------------------------------------------------------------------


def probe_http(host: str, port: int, path: str = "/", timeout: float = 2.0) -> ProbeResult:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return unreachable(exc, host, port)
    import http.client  # once something listens: 2 ms of every `inv health` without Adminer

    try:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection.sock = sock
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read(65536)
        finally:
            connection.close()
    except (OSError, http.client.HTTPException) as exc:
        return unreachable(exc, host, port)
    if response.status != 200:
        return ProbeResult(False, f"HTTP {response.status} {response.reason}")
    if b"Adminer" not in body:
        return ProbeResult(False, "HTTP 200, but the page is not Adminer's login page")
    return ProbeResult(True, "HTTP 200, Adminer login page")


def unreachable(exc: BaseException, host: str, port: int) -> ProbeResult:
    where = f"{host}:{port}"
    if isinstance(exc, ConnectionRefusedError):
        return ProbeResult(False, f"nothing listens on {where}", refused=True)
    if isinstance(exc, TimeoutError | socket.timeout):
        return ProbeResult(False, f"{where} did not answer in time")
    return ProbeResult(False, f"{where}: {exc}")


# --- Waiting --------------------------------------------------------------------------------


def wait_until_ready(
    probes: Sequence[tuple[str, Callable[[], ProbeResult]]],
    timeout: float,
    interval: float = 0.05,
    still_running: Callable[[str], str | None] | None = None,
    check_every: float = 0.5,
) -> dict[str, ProbeResult]:
    """Poll every probe until each answers, one fails for good, or `timeout` passes.

    `still_running(name)` may return a reason the service can never become ready (its
    process exited), which ends the wait for it at once. It can be costly (a `docker
    compose ps`), so it runs at most once per `check_every` seconds per service.
    """
    results: dict[str, ProbeResult] = {}
    pending = dict(probes)
    checked: dict[str, float] = {}

    def one_round() -> bool | None:
        for name, probe in list(pending.items()):
            result = probe()
            now = time.monotonic()
            due = now - checked.get(name, -check_every) >= check_every
            if not result.ok and not result.fatal and still_running is not None and due:
                checked[name] = now
                reason = still_running(name)
                if reason:
                    result = ProbeResult(False, reason, fatal=True)
            results[name] = result
            if result.ok or result.fatal:
                del pending[name]
        return True if not pending else None

    wait.until(one_round, timeout=timeout, interval=interval)
    return results


def pg_login(settings: Settings, *, admin: bool = False, dbname: str | None = None) -> PgLogin:
    """How the tasks' own client (scripts.infra.probes) logs in: as the application or the admin."""
    info = settings.pg_conninfo(dbname, admin=admin)
    return PgLogin(info["host"], int(info["port"]), info["user"], info["password"], info["dbname"])
