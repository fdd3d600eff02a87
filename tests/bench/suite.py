"""The figures of the benchmark, in the order they run on each stack.

Start-up; per backend: cold init, health, db.reset, snapshot and rollback, stop, warm start
(+ anchor), backups and restores with snapshots and rollbacks of the same data.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from scripts.ops.backup_files import FORMATS, manifest_path
from tests.bench import baselines, snapshot_figures
from tests.bench.baselines import RawNativeServers, ThrowawayStack
from tests.bench.figures import Figure, Result, Side, Target, measure_figure
from tests.bench.options import LARGE_RUNS, Options, Size
from tests.bench.stacks import BenchStack
from tests.bench.timing import PYTHON, BenchError, log, measure, run

RESTORE_DB = "bench_restore"
BACKUP_ORDER = ("custom", "sql", "directory")
RESTORE_ORDER = ("sql", "custom", "directory")  # sql first: the directory target compares with it
HEALTHCHECK_OVERRIDE = """\
# Written by the benchmark: the seed's own design, Docker's healthcheck every 10 s.
services:
  postgres:
    healthcheck:
      interval: 10s
  redis:
    healthcheck:
      interval: 10s
"""


def under(limit: float) -> Target:
    return Target(f"< {limit:g} s", lambda p, _b: p < limit, relative=False)


class Suite:
    def __init__(self, options: Options, stacks: dict[str, BenchStack], work: Path) -> None:
        self.options = options
        self.stacks = stacks
        self.work = work
        self.results: dict[str, Result] = {}
        self.data: list[dict[str, Any]] = []
        self.versions: dict[str, dict[str, str]] = {}

    def measure(self, figure: Figure) -> None:
        if figure.key in self.results:
            raise BenchError(f"Figure {figure.key} was measured twice.")
        self.results[figure.key] = measure_figure(figure, self.results)

    def run(self) -> None:
        self.startup(next(iter(self.stacks.values())))
        for backend, stack in self.stacks.items():
            for other, idle in self.stacks.items():
                if other != backend:
                    idle.inv("down")  # nothing of the other stack runs meanwhile
            log(f"{backend}: lifecycle figures")
            self.lifecycle(stack)
            if backend == "native" or self.options.compose_scope() == "all":
                log(f"{backend}: backup and restore figures")
                self.backups_and_restores(stack)
            else:
                log(f"{backend}: backup and restore figures skipped (--backend compose or both)")

    # --- task start-up -------------------------------------------------------------------

    def startup(self, stack: BenchStack) -> None:
        log("warm-up: one untimed `inv --list`")
        stack.inv("--list")
        self.measure(
            Figure(
                key="startup",
                title="task start-up",
                backend="-",
                data="-",
                runs=self.options.runs,
                product=Side("inv --list", lambda: stack.inv("--list")),
                baseline=Side("python -c pass", lambda: run([PYTHON, "-c", "pass"], env=stack.env)),
                target=under(0.25),
            )
        )
        # What one Tab costs: the shell runs this for every completion (backup names read).
        complete = ("--complete", "--", "inv", "db.restore")
        self.measure(
            Figure(
                key="completion",
                title="Tab completion",
                backend="-",
                data="-",
                runs=self.options.runs,
                product=Side("inv --complete -- inv db.restore", lambda: stack.inv(*complete)),
                baseline=Side("python -c pass", lambda: run([PYTHON, "-c", "pass"], env=stack.env)),
                target=under(0.25),
            )
        )

    # --- lifecycle -----------------------------------------------------------------------

    def lifecycle(self, stack: BenchStack) -> None:
        b = stack.backend
        runs = self.options.runs
        reset = ("reset", "--yes", "--no-backup")
        if b == "native":
            throwaway = ThrowawayStack(stack, self.work / "cold")
            cold_baseline = Side(
                "initdb + pg_ctl -w start + createdb + psql -f init-scripts/*.sql + "
                "redis-server + first SELECT 1 / PING",
                throwaway.create,
                before=lambda: stack.inv("down"),
                after=throwaway.destroy,
            )
        else:
            cold_baseline = Side(
                "docker compose up -d --wait (after down -v)",
                lambda: stack.compose("up", "-d", "--wait", "postgres", "redis"),
                before=lambda: stack.compose("down", "-v"),
            )
        self.measure(
            Figure(
                key=f"{b}/cold-init",
                title="cold init to healthy, schema + seed",
                backend=b,
                data="-",
                runs=runs,
                product=Side(
                    "inv init (after inv reset --yes --no-backup)",
                    lambda: stack.inv("init"),
                    before=lambda: stack.inv(*reset),
                ),
                baseline=cold_baseline,
                target=under(3.0) if b == "native" else None,
                baseline_first=True,
            )
        )
        self.record_versions(stack)
        snapshot_figures.db_reset(self, stack)
        snapshot_figures.snapshot_and_rollback(self, stack, None)

        self.measure(
            Figure(
                key=f"{b}/health",
                title="health of a running stack",
                backend=b,
                data="-",
                runs=runs,
                product=Side("inv health", lambda: stack.inv("health")),
                baseline=Side("psql -c 'SELECT 1' + redis-cli PING", lambda: raw_health(stack)),
                target=under(0.3),
            )
        )

        up = ("up-core",)
        if b == "native":
            raw = RawNativeServers(stack, self.work / "raw-logs")
            stop_baseline = Side(
                "pg_ctl stop -m fast + redis-cli SHUTDOWN", raw.stop, before=lambda: stack.inv(*up)
            )
            start_baseline = Side(
                "pg_ctl -w start + redis-server - (config on stdin) + poll psql / redis-cli",
                raw.start,
                before=lambda: stack.inv("down"),
                after=raw.stop_quietly,
            )
        else:
            stop_baseline = Side(
                "docker compose down", lambda: stack.compose("down"), before=lambda: stack.inv(*up)
            )
            start_baseline = Side(
                "docker compose up -d --wait",
                lambda: stack.compose("up", "-d", "--wait", "postgres", "redis"),
                before=lambda: stack.inv("down"),
                after=lambda: stack.compose("down"),
            )
        self.measure(
            Figure(
                key=f"{b}/stop",
                title="stop",
                backend=b,
                data="-",
                runs=runs,
                product=Side("inv down", lambda: stack.inv("down"), before=lambda: stack.inv(*up)),
                baseline=stop_baseline,
            )
        )
        self.measure(
            Figure(
                key=f"{b}/warm-start",
                title="warm start to healthy",
                backend=b,
                data="-",
                runs=runs,
                product=Side(
                    "inv up-core", lambda: stack.inv(*up), before=lambda: stack.inv("down")
                ),
                baseline=start_baseline,
                target=(
                    Target("< 0.6 s and <= 2x baseline", lambda p, bl: p < 0.6 and p <= 2 * bl)
                    if b == "native"
                    else None
                ),
                notes=[
                    "Compose: `inv down` removes the containers (volumes kept), so both sides "
                    "create them again."
                ]
                if b == "compose"
                else [],
            )
        )
        if b == "compose":
            self.healthcheck_anchor(stack)
        stack.inv("down")

    def healthcheck_anchor(self, stack: BenchStack) -> None:
        override = self.work / "compose-healthcheck-10s.yml"
        override.write_text(HEALTHCHECK_OVERRIDE)
        services = ("postgres", "redis")

        def stopped_with_override() -> None:
            stack.compose("up", "-d", *services, override=override)
            stack.compose("stop", *services, override=override)

        def stopped_plain() -> None:
            stack.inv("up-core")
            stack.compose("stop", *services)

        self.measure(
            Figure(
                key="compose/healthcheck-anchor",
                title="start from stopped containers to ready",
                backend="compose",
                data="-",
                runs=self.options.runs,
                product=Side(
                    "inv up-core (own probes, every 50 ms)",
                    lambda: stack.inv("up-core"),
                    before=stopped_plain,
                ),
                baseline=Side(
                    "docker compose -f docker-compose.yml -f override.yml up -d --wait "
                    "(healthcheck interval 10 s)",
                    lambda: stack.compose("up", "-d", "--wait", *services, override=override),
                    before=stopped_with_override,
                ),
                notes=[
                    "The anchor is the seed's own design (Docker healthchecks every 10 s), not "
                    "a raw tool: readiness as `docker compose up --wait` sees it."
                ],
            )
        )

    def record_versions(self, stack: BenchStack) -> None:
        info = stack.redis.call("INFO", "server")
        redis_version = next(
            (line.split(":", 1)[1] for line in info.splitlines() if line.startswith("redis_ver")),
            "?",
        )
        self.versions[stack.backend] = {
            "postgresql_server": stack.pg.query("SHOW server_version"),
            "redis_server": redis_version.strip(),
            "database_bytes_after_init": str(stack.database_size()),
        }

    # --- backups and restores ------------------------------------------------------------

    def backups_and_restores(self, stack: BenchStack) -> None:
        stack.inv("up-core")
        seeded = 0
        for size in self.options.sizes:
            adding = size.users - seeded
            log(f"{stack.backend}: growing the data to {size.label}: inv db.seed --scale {adding}")
            seconds = measure(functools.partial(stack.inv, "db.seed", "--scale", str(adding)))
            seeded = size.users
            database_bytes = stack.database_size()
            self.data.append(
                {
                    "backend": stack.backend,
                    "size": size.label,
                    "users_added": adding,
                    "users_generated_total": seeded,
                    "seed_seconds": round(seconds, 2),
                    "database_bytes": database_bytes,
                }
            )
            log(
                f"{stack.backend}: {size.label}: pg_database_size {database_bytes / 2**20:.1f} MiB"
                f" (seeding took {seconds:.1f} s)"
            )
            kept: dict[str, Path] = {}
            for fmt in BACKUP_ORDER:
                kept[fmt] = self.backup_figure(stack, size, fmt)
            try:
                for fmt in RESTORE_ORDER:
                    self.restore_figure(stack, size, fmt, kept[fmt])
                snapshot_figures.snapshot_and_rollback(self, stack, size)
            finally:
                for path in kept.values():
                    baselines.remove(path)
                    manifest_path(path).unlink(missing_ok=True)

    def _runs_note(self, size: Size) -> list[str]:
        runs = self.options.data_runs(size)
        if runs < self.options.runs:
            return [
                f"{runs} runs instead of {self.options.runs}: {size.label} (at most "
                f"{LARGE_RUNS} for 1 GB and more)."
            ]
        return []

    def backup_figure(self, stack: BenchStack, size: Size, fmt: str) -> Path:
        """Measure `inv db.backup` against pg_dump; return the product's last backup."""
        b = stack.backend
        name = f"bench-{fmt}"
        product_path = stack.settings.backup_dir / f"{name}{FORMATS[fmt]}"
        raw_dir = self.work / f"raw-backups-{b}"
        raw_dir.mkdir(parents=True, exist_ok=True)
        raw_path = raw_dir / baselines.RAW_BACKUP_NAMES[fmt]
        jobs = ["--jobs", "2"] if fmt == "directory" else []
        stock = {
            "custom": "pg_dump -Fc -f F db",
            "sql": "pg_dump -Fp -Z 6 -f F.sql.gz db",
            "directory": "pg_dump -Fd -j 2 -f D db",
        }[fmt]
        extra: dict[str, Any] = {}

        def product_before() -> None:
            baselines.remove(product_path)
            manifest_path(product_path).unlink(missing_ok=True)
            checkpoint(stack)

        def raw_before() -> None:
            baselines.remove(raw_path)
            checkpoint(stack)

        def product_after() -> None:
            if product_path.exists():
                extra["product_bytes"] = baselines.size_of(product_path)

        def raw_after() -> None:
            if raw_path.exists():
                extra["baseline_bytes"] = baselines.size_of(raw_path)

        self.measure(
            Figure(
                key=f"{b}/backup-{fmt}/{size.label}",
                title=f"backup, {fmt}",
                backend=b,
                data=size.label,
                runs=self.options.data_runs(size),
                product=Side(
                    f"inv db.backup --format {fmt}{' --jobs 2' if jobs else ''}",
                    lambda: stack.inv("db.backup", "--format", fmt, "--name", name, *jobs),
                    before=product_before,
                    after=product_after,
                ),
                baseline=Side(
                    stock,
                    lambda: baselines.pg_dump(stack.pg, fmt, raw_path),
                    before=raw_before,
                    after=raw_after,
                ),
                target=Target("<= 1.1x stock pg_dump", lambda p, bl: p <= 1.1 * bl),
                notes=self._runs_note(size),
                extra=extra,
            )
        )
        baselines.remove(raw_path)
        return product_path

    def restore_figure(self, stack: BenchStack, size: Size, fmt: str, source: Path) -> None:
        b = stack.backend
        pg = stack.pg

        def raw_before() -> None:
            baselines.drop(pg, RESTORE_DB)
            baselines.create_empty(pg, RESTORE_DB)
            checkpoint(stack)

        target = None
        if fmt == "directory":
            target = Target(
                "directory, 2 jobs, faster than plain SQL replayed by psql (gunzip | psql)",
                lambda p, sql: p < sql,
                versus=f"{b}/restore-sql/{size.label}",
                only_at="1GB",
            )
        stock = (
            "gunzip -c F.sql.gz | psql -d EMPTYDB"
            if fmt == "sql"
            else f"pg_restore -j 2 -d EMPTYDB {'D' if fmt == 'directory' else 'F'}"
        )
        self.measure(
            Figure(
                key=f"{b}/restore-{fmt}/{size.label}",
                title=f"restore, {fmt}",
                backend=b,
                data=size.label,
                runs=self.options.data_runs(size),
                product=Side(
                    "inv db.restore FILE --yes --no-backup",
                    lambda: stack.inv("db.restore", str(source), "--yes", "--no-backup"),
                    before=lambda: checkpoint(stack),
                ),
                baseline=Side(
                    stock,
                    lambda: baselines.restore_raw(pg, fmt, source, RESTORE_DB),
                    before=raw_before,
                    after=lambda: baselines.drop(pg, RESTORE_DB),
                ),
                target=target,
                notes=[
                    *self._runs_note(size),
                    "Both sides restore the same file (the product's backup); the baseline "
                    "into a freshly created empty database (not timed).",
                    "--no-backup: the safety backup a replacing restore takes first is a "
                    "backup, measured as such above; this figure is the restore's own work.",
                ],
            )
        )


def checkpoint(stack: BenchStack) -> None:
    """Flush dirty buffers before a timed backup or restore, on both sides alike."""
    stack.admin_pg.query("CHECKPOINT")


def raw_health(stack: BenchStack) -> None:
    if stack.pg.query("SELECT 1") != "1":
        raise BenchError("psql -c 'SELECT 1' did not print 1.")
    reply = stack.redis.call("PING")
    if reply != "PONG":
        raise BenchError(f"redis-cli PING answered {reply!r}, not PONG.")
