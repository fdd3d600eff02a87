"""Fixtures for the browser tests: the isolated stack of `nox -s e2e` and a headless Chromium.

Chromium is Debian's (/usr/bin/chromium) driven by Playwright, never a downloaded browser;
every test saves screenshots of its steps under tests/e2e/artifacts/<backend>/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from scripts import settings as settings_module
from scripts.backends import get_backend
from scripts.ops import browser as browser_module
from scripts.settings import Settings
from tests.integration.helpers import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts"
Shot = Callable[[str], Path]


@pytest.fixture(scope="session")
def stack() -> Settings:
    """The settings of the isolated stack that `nox -s e2e` started with `inv up`."""
    env_file = os.environ.get("STACK_ENV_FILE", "")
    if not env_file or Path(env_file).resolve() == (ROOT / ".env").resolve():
        pytest.fail(
            "The browser tests need their own stack: run them with `nox -s e2e` (it sets "
            "STACK_ENV_FILE to an isolated env file and starts Adminer).",
            pytrace=False,
        )
    return settings_module.load()


@pytest.fixture(scope="session")
def backend(stack: Settings) -> str:
    return get_backend(stack).name


@pytest.fixture(scope="session")
def artifacts(backend: str) -> Path:
    """This backend's screenshot folder, emptied of an earlier run's pictures."""
    folder = ARTIFACTS / backend
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """Headless Chromium; Playwright gives it a fresh user data dir of its own."""
    from playwright.sync_api import sync_playwright

    if not browser_module.CHROMIUM.is_file():
        pytest.fail(f"{browser_module.CHROMIUM} is missing: `nox -s e2e` installs it.")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(browser_module.CHROMIUM),
            headless=True,
            args=list(browser_module.CHROMIUM_ARGS),
        )
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A page in a new browser context: no cookies, so no Adminer session, from earlier tests."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def shot(page: Page, artifacts: Path, request: pytest.FixtureRequest) -> Shot:
    """Save a screenshot of the page as artifacts/<backend>/NN-<test>-<step>.png (NN: the
    order in which they were taken)."""
    test = re.sub(r"^test_", "", request.node.name)

    def take(step: str) -> Path:
        number = len(list(artifacts.glob("*.png"))) + 1
        path = artifacts / f"{number:02d}-{test}-{step}.png"
        page.screenshot(path=str(path))
        return path

    return take


@pytest.fixture
def adminer_url(stack: Settings) -> str:
    return stack.adminer_url
