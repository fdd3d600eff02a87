"""The application's environment, as `inv env` prints it: where the stack is and how to log in.

Everything comes from the stack's settings (the URLs derived, as the env file should hold
them), in dotenv, shell or JSON form; passwords masked unless asked for.
"""

from __future__ import annotations

import json
import shlex

from scripts import envfile
from scripts.errors import UsageError
from scripts.settings import Settings
from scripts.urls import derive_url, mask_url

FORMATS = ("dotenv", "shell", "json")
MASK = "****"


def environment(settings: Settings, *, show_secrets: bool) -> dict[str, str]:
    """Name -> value, in the order printed. libpq's PG* variables let `psql` and `pg_dump`
    find the stack after `eval "$(inv env --format shell --show-secrets)"`."""
    database_url = derive_url(settings, "DATABASE_URL", settings.values.get("DATABASE_URL", ""))
    redis_url = derive_url(settings, "REDIS_URL", settings.values.get("REDIS_URL", ""))
    pg_password = settings.postgres_password.reveal() if show_secrets else MASK
    redis_password = settings.redis_password.reveal() if show_secrets else MASK
    host = settings.connect_host
    return {
        "DATABASE_URL": database_url if show_secrets else mask_url(database_url),
        "REDIS_URL": redis_url if show_secrets else mask_url(redis_url),
        "ADMINER_URL": settings.adminer_url,
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(settings.postgres_port),
        "POSTGRES_USER": settings.postgres_user,
        "POSTGRES_PASSWORD": pg_password,
        "POSTGRES_DB": settings.postgres_db,
        "REDIS_HOST": host,
        "REDIS_PORT": str(settings.redis_port),
        "REDIS_PASSWORD": redis_password,
        "PGHOST": host,
        "PGPORT": str(settings.postgres_port),
        "PGUSER": settings.postgres_user,
        "PGPASSWORD": pg_password,
        "PGDATABASE": settings.postgres_db,
    }


def render(values: dict[str, str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(values, indent=2)
    if fmt == "shell":
        return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in values.items())
    if fmt == "dotenv":
        return "\n".join(f"{key}={envfile.quote(value)}" for key, value in values.items())
    raise UsageError(f"--format {fmt!r} is not a format: use dotenv, shell or json.")
