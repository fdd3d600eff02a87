"""Web browsers: the pre-filled Adminer URL of `inv open`, and how Chromium is run headless.

The browser tests (tests/support/chromium.py installs it) drive Debian's chromium package,
never a browser download, with the flags that keep it from calling home on a closed network.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

if TYPE_CHECKING:
    from scripts.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
# Headless Chromium as root on a closed network: without the background-networking flags it
# waits on refused connections (updates, sync, field trials) and hangs.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


def adminer_server(settings: Settings, backend: str) -> str:
    """The server Adminer connects to: it runs beside PostgreSQL, inside the compose network
    (the service name) or on this machine (the published port)."""
    if backend == "compose":
        return "postgres"
    return f"{settings.connect_host}:{settings.postgres_port}"


def adminer_url(settings: Settings, backend: str) -> str:
    """Adminer's login page with system, server, user and database filled in; no password."""
    query = urlencode(
        {
            "pgsql": adminer_server(settings, backend),
            "username": settings.postgres_user,
            "db": settings.postgres_db,
        },
        safe=":[]",
    )
    return f"{settings.adminer_url}?{query}"


def has_display(environ: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """Whether a browser window could appear: macOS, or an X11 / Wayland display."""
    environ = os.environ if environ is None else environ
    if (platform or sys.platform) == "darwin":
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def open_in_browser(url: str) -> bool:
    """Open `url` in the user's browser; False when none could be started."""
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False
