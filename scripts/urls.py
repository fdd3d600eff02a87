"""The application's URLs (DATABASE_URL, REDIS_URL): derived from the stack's settings,
checked against them, and masked for display. Tasks never connect through them: they are
the application's, and may point anywhere.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import quote

from scripts.envfile import PLACEHOLDER_PASSWORD

if TYPE_CHECKING:
    from scripts.settings import Secret, Settings

URL_KEYS = ("DATABASE_URL", "REDIS_URL")


_POSTGRES_SCHEMES = ("postgresql", "postgres")


def url_unset(url: str) -> bool:
    """Empty, or still carrying the placeholder password as .env.example ships it."""
    from urllib.parse import unquote, urlsplit

    if not url.strip():
        return True
    try:
        password = urlsplit(url.strip()).password
    except ValueError:
        return False
    return password is not None and unquote(password) == PLACEHOLDER_PASSWORD


def _is_postgres_scheme(scheme: str) -> bool:
    # postgresql+psycopg:// is how SQLAlchemy 2 names psycopg 3: the same server, to us.
    return scheme in _POSTGRES_SCHEMES or scheme.startswith("postgresql+")


def derive_url(settings: Settings, key: str, template: str = "") -> str:
    """The application's URL for `key`, from the stack's settings, percent-encoded.

    A scheme (postgresql+psycopg://), a Redis database number and a query string of
    `template` (the URL being replaced) are kept; everything that says where and as whom
    comes from the settings.
    """
    from urllib.parse import urlsplit

    try:
        old = urlsplit(template.strip())
    except ValueError:
        old = urlsplit("")
    host = url_host(settings.connect_host)
    query = f"?{old.query}" if old.query else ""
    if key == "DATABASE_URL":
        scheme = old.scheme if _is_postgres_scheme(old.scheme) else "postgresql"
        user, password = quote(settings.postgres_user, safe=""), _quoted(settings.postgres_password)
        database = quote(settings.postgres_db, safe="")
        return f"{scheme}://{user}:{password}@{host}:{settings.postgres_port}/{database}{query}"
    number = old.path.strip("/") if old.scheme == "redis" and old.path.strip("/").isdigit() else "0"
    password = _quoted(settings.redis_password)
    return f"redis://default:{password}@{host}:{settings.redis_port}/{number}{query}"


def _quoted(secret: Secret) -> str:
    return quote(secret.reveal(), safe="")


def url_disagreements(settings: Settings, key: str) -> list[str]:
    """The parts (scheme, host, port, user, password, database) in which the application's URL
    disagrees with the stack's settings; empty when it agrees or is unset (then derived)."""
    from urllib.parse import unquote, urlsplit

    url = settings.values.get(key, "")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ["format"]
    hosts = {settings.connect_host, settings.bind_address}
    if settings.connect_host in ("127.0.0.1", "::1"):
        hosts.add("localhost")
    if key == "DATABASE_URL":
        expected: dict[str, object] = {
            "scheme": _is_postgres_scheme(parts.scheme),
            "host": parts.hostname in hosts,
            "port": (port or 5432) == settings.postgres_port,
            "user": unquote(parts.username or "") == settings.postgres_user,
            "password": unquote(parts.password or "") == settings.postgres_password.reveal(),
            "database": unquote(parts.path.lstrip("/")) == settings.postgres_db,
        }
    else:
        expected = {
            "scheme": parts.scheme == "redis",
            "host": parts.hostname in hosts,
            "port": (port or 6379) == settings.redis_port,
            "user": unquote(parts.username or "") in ("", "default"),
            "password": unquote(parts.password or "") == settings.redis_password.reveal(),
        }
    return [part for part, ok in expected.items() if not ok]


def url_host(host: str) -> str:
    """A host as URLs write it: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def mask_url(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:****@host/db

    Everything up to the last @ before the query goes: a password holding an unquoted @ or /
    (which clients then misread) still shows none of itself.
    """
    from urllib.parse import urlsplit

    try:
        if urlsplit(url).password is None:
            return url
    except ValueError:
        return "(not a URL)"
    head, mark, query = url.partition("?")
    return re.sub(r"^([A-Za-z][\w+.-]*://[^:/@]*:).*@", r"\1****@", head) + mark + query
