"""The two ways the stack runs: Docker Compose (compose.py) and local processes (native/),
behind one protocol (base.py). `get_backend` is the one place that picks the class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scripts.backends.base import resolve_backend_name
from scripts.errors import StackError

if TYPE_CHECKING:
    from scripts.backends.base import Backend
    from scripts.settings import Settings


def get_backend(settings: Settings, name: str | None = None) -> Backend:
    chosen = name or resolve_backend_name(settings)
    if chosen == "native":
        from scripts.backends.native import NativeBackend

        return NativeBackend(settings)
    if chosen == "compose":
        from scripts.backends.compose import ComposeBackend

        return ComposeBackend(settings)
    raise StackError(f"STACK_BACKEND={chosen!r} is not a backend: use auto, compose or native.")
