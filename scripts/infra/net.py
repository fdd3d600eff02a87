"""Who holds a TCP port: free, or which process listens on it (asked of psutil).

Used before starting anything, so a port taken by another program is reported with its
number and owner instead of a half-started stack.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scripts.console import display_path
from scripts.errors import StackError

if TYPE_CHECKING:
    from scripts.settings import Settings


@dataclass(frozen=True)
class Listener:
    pid: int | None
    name: str  # process name, or "" when it may not be known (another user's process)

    def describe(self) -> str:
        if self.pid is None:
            return "another program"
        return f"{self.name or 'a process'} (pid {self.pid})"


def is_free(host: str, port: int) -> bool:
    """True when a listener could bind host:port now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            if exc.errno == errno.EADDRNOTAVAIL:
                raise StackError(
                    f"BIND_ADDRESS={host} is not an address of this machine: use 127.0.0.1, "
                    "0.0.0.0 or one of the addresses `ip -brief address` lists."
                ) from None
            raise
    return True


def listeners(port: int) -> list[Listener]:
    """Processes with a listening TCP socket on `port` (any address); a listener psutil may
    not name (another user's, when we are not root) is "another program"."""
    found = {
        Listener(conn.pid, _name(conn.pid))
        for conn in _listening()
        if conn.laddr and conn.laddr.port == port
    }
    return sorted(found, key=lambda o: o.pid or 0)


def listening_on(port: int) -> set[str]:
    """Every local address with a listening TCP socket on `port`."""
    return {conn.laddr.ip for conn in _listening() if conn.laddr and conn.laddr.port == port}


def _listening() -> list[Any]:
    import psutil

    return [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]


def _name(pid: int | None) -> str:
    if pid is None:
        return ""
    import psutil

    try:
        return str(psutil.Process(pid).name())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def ensure_free(settings: Settings, services: Sequence[str], *, nothing: str = "started") -> None:
    """Refuse, before anything starts (or changes: `nothing`), when a port of `services` is
    taken by someone else."""
    from scripts.settings import PORT_KEY_OF

    taken = []
    for service in services:
        port = settings.port(service)
        if not is_free(settings.bind_address, port):
            owners = ", ".join(o.describe() for o in listeners(port)) or "another program"
            taken.append(
                f"port {port} ({service}) on {settings.bind_address} is in use by {owners}, "
                f"which is not part of this stack: stop it or set {PORT_KEY_OF[service]} in "
                f"{display_path(settings.env_file)} to a free port"
            )
    if taken:
        raise StackError(f"Nothing was {nothing}: " + "; ".join(taken) + ".")
