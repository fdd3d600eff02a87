"""scripts/infra/net.py: whether a port is free and who listens on it, with real sockets."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import psutil
import pytest

from scripts.infra.net import Listener, is_free, listeners, listening_on
from tests.support.net import listening_addresses

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
    name = psutil.Process().name()
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


def test_listening_on_names_each_address_ipv4_and_ipv6() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as six:
        six.bind(("::1", 0))
        six.listen()
        port = int(six.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as four:
            four.bind(("127.0.0.1", port))
            four.listen()
            assert listening_on(port) == {"::1", "127.0.0.1"}
    assert listening_on(port) == set()
