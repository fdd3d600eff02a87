"""Who holds a TCP port: free, or which process listens on it (from /proc on Linux).

Used before starting anything, so a port taken by another program is reported with its
number and owner instead of a half-started stack.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.console import display_path
from scripts.errors import StackError

if TYPE_CHECKING:
    from scripts.settings import Settings


@dataclass(frozen=True)
class Listener:
    pid: int | None
    name: str  # process name, or "" when /proc does not tell (another user's process)

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
    """Processes with a listening TCP socket on `port` (any address)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    found: list[Listener] = []
    proc = Path("/proc")
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        if _sockets_of(entry) & inodes:
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue  # ended meanwhile
            found.append(Listener(int(entry.name), name))
    return found or [Listener(None, "")]


def _sockets_of(process: Path) -> set[str]:
    """Inodes of the process's sockets; empty when it is gone or not ours to see."""
    inodes: set[str] = set()
    try:
        descriptors = list((process / "fd").iterdir())
    except OSError:
        return inodes
    for fd in descriptors:
        try:
            target = str(fd.readlink())
        except OSError:
            continue  # closed while we looked (our own listing's descriptor, for one)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def ensure_free(settings: Settings, services: Sequence[str]) -> None:
    """Refuse, before anything starts, when a port of `services` is taken by someone else."""
    from scripts.settings import PORT_KEY_OF

    taken = []
    for service in services:
        port = settings.port(service)
        if not is_free(settings.bind_address, port):
            owners = ", ".join(o.describe() for o in listeners(port))
            taken.append(
                f"port {port} ({service}) on {settings.bind_address} is in use by {owners}, "
                f"which is not part of this stack: stop it or set {PORT_KEY_OF[service]} in "
                f"{display_path(settings.env_file)} to a free port"
            )
    if taken:
        raise StackError("Nothing was started: " + "; ".join(taken) + ".")


def _listening_inodes(port: int) -> set[str]:
    return {inode for _address, listening, inode in listen_table() if listening == port}


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """The (address, port) pairs a process listens on, read from /proc."""
    sockets = _sockets_of(Path(f"/proc/{pid}"))
    return [(address, port) for address, port, inode in listen_table() if inode in sockets]


def listen_table() -> Iterator[tuple[str, int, str]]:
    """(address, port, socket inode) of every listening TCP socket, IPv4 and IPv6."""
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                address, port = fields[1].rsplit(":", 1)
                yield _decode_address(address, family), int(port, 16), fields[9]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` right now (for throwaway stacks and tests)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _decode_address(hex_address: str, family: int) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, words)
