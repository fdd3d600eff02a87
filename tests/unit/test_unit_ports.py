"""scripts/ports.py: whether a port is free and who listens on it, with real sockets."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.ports import Listener, _decode_address, is_free, listeners, listening_addresses

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - bound for a moment by is_free, never listening


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A socket of this test process listening on 127.0.0.1 at a free port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_is_free_is_false_while_something_listens_and_true_after(
    listening: socket.socket,
) -> None:
    port = int(listening.getsockname()[1])
    assert not is_free("127.0.0.1", port)
    assert not is_free(ALL_INTERFACES, port)  # a wildcard bind would collide too
    listening.close()
    assert is_free("127.0.0.1", port)


def test_listeners_names_this_process(listening: socket.socket) -> None:
    port = int(listening.getsockname()[1])
    found = listeners(port)
    name = Path("/proc/self/comm").read_text().strip()
    assert Listener(os.getpid(), name) in found
    mine = next(listener for listener in found if listener.pid == os.getpid())
    assert mine.describe() == f"{name} (pid {os.getpid()})"


def test_listeners_of_a_free_port_is_empty(listening: socket.socket) -> None:
    port = int(listening.getsockname()[1])
    listening.close()
    assert listeners(port) == []


def test_an_unknown_listener_is_described_as_another_program() -> None:
    assert Listener(None, "").describe() == "another program"
    assert Listener(42, "").describe() == "a process (pid 42)"


def test_listening_addresses_include_this_process_socket(listening: socket.socket) -> None:
    port = int(listening.getsockname()[1])
    assert ("127.0.0.1", port) in listening_addresses(os.getpid())


def test_listening_addresses_skip_sockets_that_do_not_listen() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening
        port = int(sock.getsockname()[1])
        assert all(p != port for _, p in listening_addresses(os.getpid()))


def test_listening_addresses_of_a_missing_process_is_empty() -> None:
    assert listening_addresses(2**22 + 1) == []  # above Linux's pid_max


def test_decode_address_reads_procs_host_order() -> None:
    # As /proc/net/tcp and tcp6 print them on little-endian machines.
    assert _decode_address("0100007F", socket.AF_INET) == "127.0.0.1"
    assert _decode_address("00000000", socket.AF_INET) == ALL_INTERFACES
    assert _decode_address("00000000000000000000000001000000", socket.AF_INET6) == "::1"
