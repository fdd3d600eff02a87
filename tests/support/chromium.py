"""Debian's Chromium for the browser tests (nox -s e2e): never a browser download."""

from __future__ import annotations

from pathlib import Path

from scripts.errors import StackError
from scripts.ops.browser import CHROMIUM


def ensure_chromium() -> Path:
    """Debian's Chromium for the browser tests, installed with apt when missing."""
    from scripts.infra import prerequisites

    if CHROMIUM.is_file():
        return CHROMIUM
    check = prerequisites.Check("Chromium", None, "e2e", {"apt": ("chromium",)})
    prerequisites.install([check], yes=True, again="nox -s e2e")
    if not CHROMIUM.is_file():
        raise StackError(f"The chromium package did not install {CHROMIUM}: install it by hand.")
    return CHROMIUM
