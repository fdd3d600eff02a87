"""Fixtures for the integration suite: a live, isolated stack started by `nox -s integration`.

The suite refuses to run without STACK_ENV_FILE, so it can never reach a developer's own
stack; it drives the stack through the real `inv` command line and real clients.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from scripts import settings as settings_module
from scripts.settings import Settings
from tests.integration.helpers import ROOT, Inv, connect, ensure_up, run_inv


@pytest.fixture(scope="session")
def stack() -> Settings:
    """The settings of the isolated test stack."""
    env_file = os.environ.get("STACK_ENV_FILE", "")
    if not env_file or Path(env_file).resolve() == (ROOT / ".env").resolve():
        pytest.fail(
            "The integration suite needs its own stack: run it with `nox -s integration` "
            "(it sets STACK_ENV_FILE to an isolated env file).",
            pytrace=False,
        )
    return settings_module.load()


@pytest.fixture
def inv() -> Inv:
    return run_inv


@pytest.fixture
def running(stack: Settings) -> Iterator[Settings]:
    """The stack answering before the test and again after it: for tests that stop, kill
    or reset services."""
    ensure_up(stack)
    yield stack
    ensure_up(stack)


@pytest.fixture
def pg_conn(stack: Settings) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    ensure_up(stack)
    with connect(stack) as conn:
        yield conn


@pytest.fixture
def redis_client(stack: Settings) -> Iterator[redis.Redis]:
    ensure_up(stack)
    client = redis.Redis.from_url(stack.redis_url.reveal(), socket_timeout=5)
    try:
        yield client
    finally:
        client.close()
