"""docker-compose.yml on an engine whose host is not this machine.

The compose file bind-mounts files of the checkout (the init scripts, redis.conf, Adminer's
index.php). An engine elsewhere would look for those paths on its own host, find nothing,
and mount empty directories in their place: PostgreSQL without its roles, Redis without its
configuration. On such an engine the stack adds an override file, written into the state dir
before each `docker compose` command, that replaces those mounts with Compose configs whose
content is the files' own: Compose copies them into the containers through the engine's
API, so they arrive wherever the engine runs. The named volumes stay as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from scripts.errors import StackError
from scripts.files import write_atomic

if TYPE_CHECKING:
    from scripts.settings import Settings

OVERRIDE_FILE = "compose.remote.yml"
# What docker-compose.yml bind-mounts, and the named volumes each service keeps.
_DATA = {"postgres": ["postgres_data:/var/lib/postgresql/data"], "redis": ["redis_data:/data"]}


def _mounted(settings: Settings) -> dict[str, list[tuple[Path, str, int]]]:
    """Per service: (file here, path in the container, mode) of every file it mounts."""
    docker = settings.root / "docker"
    init = sorted(p for p in (docker / "init-scripts").iterdir() if p.is_file())
    return {
        "postgres": [(p, f"/docker-entrypoint-initdb.d/{p.name}", 0o555) for p in init],
        "redis": [(docker / "redis" / "redis.conf", "/usr/local/etc/redis/redis.conf", 0o444)],
        "adminer": [(docker / "adminer" / "index.php", "/var/www/html/index.php", 0o444)],
    }


def write_override(settings: Settings) -> Path:
    """The override file for an engine elsewhere, from the files as they are now."""
    services: dict[str, object] = {}
    configs: dict[str, object] = {}
    for service, files in _mounted(settings).items():
        mounts = []
        for index, (path, target, mode) in enumerate(files):
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise StackError(
                    f"{path} is not text, and an engine on another host gets the stack's files "
                    "as Compose configs, which hold text only: use a plain .sql or .sh file."
                ) from None
            name = f"{service}_{index}_{path.name}".replace(".", "_")
            # Compose interpolates ${...} in a config's content: $$ keeps a $ as it is.
            configs[name] = {"content": text.replace("$", "$$")}
            mounts.append({"source": name, "target": target, "mode": mode})
        services[service] = {
            "volumes": _Override(_DATA.get(service, [])),
            "configs": mounts,
        }
    document = {"services": services, "configs": configs}
    path = settings.state_dir / OVERRIDE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by the stack's tasks for an engine on another host: see compose_remote.py\n"
    write_atomic(path, header + yaml.dump(document, Dumper=_Dumper, sort_keys=False), durable=False)
    return path


class _Override(list[str]):
    """A list that replaces the base file's list instead of adding to it (`!override`)."""


class _Dumper(yaml.SafeDumper):
    """YAML for Compose: `!override` lists."""


def _represent_override(dumper: yaml.SafeDumper, data: _Override) -> yaml.Node:
    return dumper.represent_sequence("!override", list(data))


_Dumper.add_representer(_Override, _represent_override)
