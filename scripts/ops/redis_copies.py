"""Redis's data beside a snapshot: every key of every database (DUMP, with its time to live),
read in one atomic script per database and put back in one MULTI/EXEC.

This works the same on both backends, over the network, without touching Redis's files or
restarting it; a development Redis holds little, so a whole copy is a fraction of a second.
The copies are files in the state dir (mode 0600, written atomically), one per snapshot.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.errors import StackError

if TYPE_CHECKING:
    import redis

    from scripts.settings import Settings

# KEYS inside a script is atomic: nothing else runs until it returns. Binary-safe in Lua.
_READ_ALL = """
redis.call('SELECT', ARGV[1])
local out = {}
for _, key in ipairs(redis.call('KEYS', '*')) do
  local ttl = redis.call('PTTL', key)
  if ttl ~= -2 then
    out[#out + 1] = key
    out[#out + 1] = redis.call('DUMP', key)
    out[#out + 1] = tostring(ttl)
  end
end
return out
"""

Entries = list[tuple[int, bytes, int, bytes]]  # database, key, ms to live (0: none), DUMP


def directory(settings: Settings) -> Path:
    return settings.state_dir / "snapshots"


# What a rollback --with-redis puts back, copied aside before it starts (the snapshot's own
# copy may be "undo", which the rollback replaces): recovery of a killed one reads it.
PENDING = ".rollback-pending"


def path(settings: Settings, name: str) -> Path:
    return directory(settings) / f"{name}.redis.json"


def all_paths(settings: Settings) -> list[Path]:
    folder = directory(settings)
    return sorted(folder.glob("*.redis.json")) if folder.is_dir() else []


def _client(settings: Settings, db: int = 0) -> redis.Redis:
    import redis

    return redis.Redis(
        host=settings.connect_host,
        port=settings.redis_port,
        db=db,
        password=settings.redis_password.reveal(),
        socket_timeout=30,
    )


def _failed(exc: Exception) -> StackError:
    return StackError(f"Redis did not answer ({exc}): start it with `inv up-core`.")


def set_pending(settings: Settings, name: str) -> None:
    """Snapshot `name`'s copy as the one a rollback puts back (PENDING), read first: a
    damaged copy fails here, before the database changes."""
    from scripts.files import write_atomic

    load(settings, name)
    write_atomic(path(settings, PENDING), path(settings, name).read_text())


def take(settings: Settings, name: str) -> int:
    """Copy Redis's data as `name`'s; return how many keys."""
    import redis

    from scripts.files import write_atomic

    entries: list[list[Any]] = []
    try:
        client = _client(settings)
        keyspace = client.info("keyspace")
        for db in sorted(int(k.removeprefix("db")) for k in keyspace):
            flat = client.eval(_READ_ALL, 0, db)
            for i in range(0, len(flat), 3):
                key, dump, ttl = flat[i], flat[i + 1], int(flat[i + 2])
                entries.append([db, _b64(key), max(ttl, 0), _b64(dump)])
    except redis.RedisError as exc:
        raise _failed(exc) from None
    directory(settings).mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path(settings, name), json.dumps({"version": 1, "keys": entries}))
    return len(entries)


def load(settings: Settings, name: str) -> Entries:
    try:
        data = json.loads(path(settings, name).read_text())
        return [
            (int(db), base64.b64decode(key), int(ttl), base64.b64decode(dump))
            for db, key, ttl, dump in data["keys"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackError(
            f"The copy of Redis of snapshot {name!r} cannot be read ({exc}): roll back "
            "without --with-redis."
        ) from None


def put_back(settings: Settings, entries: Entries) -> None:
    """Replace everything in Redis with `entries`: one transaction per database (FLUSHDB,
    then every key), so no client sees a database half put back."""
    import redis

    try:
        live = {int(k.removeprefix("db")) for k in _client(settings).info("keyspace")}
        for db in sorted(live | {e[0] for e in entries}):
            pipe = _client(settings, db).pipeline(transaction=True)
            pipe.flushdb()
            for _, key, ttl, dump in (e for e in entries if e[0] == db):
                pipe.restore(key, ttl, dump, replace=True)
            pipe.execute()
    except redis.RedisError as exc:
        raise _failed(exc) from None


def _b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()
