"""Facts about the machine and the software a benchmark ran on, for the results' header.

CPU, cores, RAM, kernel, disk free, load; Python, invoke, PostgreSQL, Redis, Docker, git commit.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import sys
from pathlib import Path

from tests.bench.stacks import pg_bindir, tool_version
from tests.bench.timing import ROOT, run


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.system()


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine(work: Path) -> dict[str, object]:
    disk = shutil.disk_usage(work)
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "os": _os_name(),
        "kernel": f"{platform.system()} {platform.release()}",
        "architecture": platform.machine(),
        "disk": {"path": str(work), "free_bytes": disk.free, "total_bytes": disk.total},
        "load_average_at_start": load_average(),
    }


def _package(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions(with_docker: bool) -> dict[str, str]:
    bindir = pg_bindir()
    found: dict[str, str] = {
        "python": f"{platform.python_version()} ({sys.executable})",
        "invoke": _package("invoke"),
        "psycopg": _package("psycopg"),
        "postgresql_host_tools": tool_version([str(bindir / "pg_dump"), "--version"]),
        "redis_host": tool_version(["redis-server", "--version"]).split(" sha=")[0],
    }
    if with_docker:
        from scripts.infra.compose_plugin import compose_version
        from scripts.infra.docker import engine_version

        found["docker_engine"] = engine_version() or "not answering"
        found["docker_compose"] = compose_version() or "missing"
    return found


def images(names: list[str]) -> dict[str, str]:
    """Image id of each tag, and whether it is one of the project's local stand-ins."""
    found = {}
    for name in names:
        result = run(
            [
                "docker",
                "image",
                "inspect",
                "--format",
                '{{.Id}} {{index .Config.Labels "org.ai-marketplace.standin-recipe"}}',
                name,
            ],
            check=False,
        )
        parts = result.stdout.split()
        if result.returncode != 0 or not parts:
            found[name] = "not found"
        else:
            kind = "local stand-in (tests/standins)" if len(parts) > 1 else "not a stand-in"
            found[name] = f"{parts[0][:19]}, {kind}"
    return found


def git() -> dict[str, object]:
    head = run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=False).stdout.strip()
    status = run(["git", "status", "--porcelain"], cwd=ROOT, check=False).stdout
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": head or "unknown", "uncommitted_changes": len(changed), "changed": changed}


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
