"""Snapshot, rollback and db.reset figures: the product's in-server copies against the same
CREATE DATABASE ... TEMPLATE run through psql, next to inv db.backup / db.restore of the
same data in the same run (their figures are measured just before these)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from scripts import names
from scripts.ops.copies import SMALL
from tests.bench.figures import Figure, Side, Target
from tests.bench.timing import BenchError, log

if TYPE_CHECKING:
    from tests.bench.options import Size
    from tests.bench.stacks import BenchStack
    from tests.bench.suite import Suite

SNAPSHOT = "bench-snap"
RAW_SNAPSHOT = "bench_raw_snap"
RAW_LIVE = "bench_raw_live"
RAW_ASIDE = "bench_raw_aside"
RAW_RESET = "bench_raw_reset"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _strategy(stack: BenchStack, database: str) -> str:
    """The strategy the product chooses for a database of this size (scripts.ops.copies)."""
    size = int(stack.admin_pg.query(f"SELECT pg_database_size('{database}')"))
    return "WAL_LOG" if size < SMALL else "FILE_COPY"


def _drop(stack: BenchStack, *databases: str) -> None:
    for database in databases:
        stack.admin_pg.query(f"DROP DATABASE IF EXISTS {_q(database)} WITH (FORCE)")


def _copy(stack: BenchStack, target: str, template: str, strategy: str) -> None:
    stack.admin_pg.query(
        f"CREATE DATABASE {_q(target)} TEMPLATE {_q(template)} STRATEGY {strategy}"
    )


def _checkpoint(stack: BenchStack) -> None:
    stack.admin_pg.query("CHECKPOINT")


def _spare_made(stack: BenchStack, spare: str, timeout: float = 300) -> None:
    """Wait (untimed) for the spare copy the product makes in the background after a snapshot
    or rollback, so that no timed command shares the disk with it."""
    import time

    query = f"SELECT count(*) FROM pg_database WHERE datname = '{spare}'"  # noqa: S608 - our name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.admin_pg.query(query) == "1":
            return
        time.sleep(0.1)
    raise BenchError(f"The spare copy {spare} was not made within {timeout:.0f} s.")


def db_reset(suite: Suite, stack: BenchStack) -> None:
    """`inv db.reset` of the seed database, right after `inv init`."""
    b = stack.backend
    base = stack.settings.postgres_base_db
    init = names.snapshot_database(base, "init")
    strategy = _strategy(stack, init)

    def raw() -> None:
        _drop(stack, RAW_RESET)
        _copy(stack, RAW_RESET, init, strategy)

    suite.measure(
        Figure(
            key=f"{b}/db-reset",
            title="db.reset to the post-init state",
            backend=b,
            data="seed",
            runs=suite.options.runs,
            product=Side(
                "inv db.reset",
                lambda: stack.inv("db.reset"),
                before=lambda: _checkpoint(stack),
                after=lambda: _spare_made(stack, names.spare_database(base, "init")),
            ),
            baseline=Side(
                f"psql: DROP DATABASE + CREATE DATABASE ... TEMPLATE init STRATEGY {strategy}",
                raw,
                before=lambda: _checkpoint(stack),
            ),
            target=Target("<= 1 s", lambda p, _b: p <= 1.0, relative=False)
            if b == "native"
            else None,
            notes=[
                "db.reset also keeps the replaced state as the snapshot undo; the raw side "
                "drops it. From the second run on, the spare copy of init (made in the "
                "background, waited for untimed) is renamed into place."
            ],
        )
    )
    _drop(stack, RAW_RESET)


def snapshot_and_rollback(suite: Suite, stack: BenchStack, size: Size | None) -> None:
    """Snapshot and rollback of the live database at `size` (None: the seed database)."""
    b = stack.backend
    label = size.label if size else "seed"
    runs = suite.options.data_runs(size) if size else suite.options.runs
    live = stack.settings.postgres_db
    snap_db = names.snapshot_database(stack.settings.postgres_base_db, SNAPSHOT)
    spare = names.spare_database(stack.settings.postgres_base_db, SNAPSHOT)
    strategy = _strategy(stack, live)
    restore_key = f"{b}/restore-custom/{label}"
    at_1gb = "1GB" if size else None

    def product_snapshot_before() -> None:
        _drop(stack, snap_db, spare)  # as `inv db.snapshot --delete` would leave it
        _checkpoint(stack)

    def raw_snapshot_before() -> None:
        _drop(stack, RAW_SNAPSHOT)
        _checkpoint(stack)

    suite.measure(
        Figure(
            key=f"{b}/snapshot/{label}",
            title="snapshot",
            backend=b,
            data=label,
            runs=runs,
            product=Side(
                f"inv db.snapshot {SNAPSHOT}",
                lambda: stack.inv("db.snapshot", SNAPSHOT),
                before=product_snapshot_before,
                after=lambda: _spare_made(stack, spare),
            ),
            baseline=Side(
                f"psql: CREATE DATABASE ... TEMPLATE live STRATEGY {strategy}",
                lambda: _copy(stack, RAW_SNAPSHOT, live, strategy),
                before=raw_snapshot_before,
            ),
            target=Target(
                "<= 3 s and >= 8x faster than inv db.restore (custom) of the same data",
                lambda p, restore: p <= 3.0 and 8 * p <= restore,
                versus=restore_key,
                versus_side="product",
                only_at=at_1gb,
            )
            if size and b == "native"
            else None,
            notes=[
                "Product and baseline copy the same database the same way; the product "
                "also ends connections, takes the copy under a temporary name and renames "
                "it once complete. The spare copy it then makes in the background is "
                "waited for untimed, so that no timed command shares the disk with it."
            ],
        )
    )

    _drop(stack, RAW_LIVE)
    _copy(stack, RAW_LIVE, live, strategy)

    def without_spare() -> None:
        _spare_made(stack, spare)
        _drop(stack, spare)
        _checkpoint(stack)

    for key, ready, before in (
        ("rollback", "spare copy ready", lambda: _checkpoint(stack)),
        ("rollback-copying", "no spare copy yet", without_spare),
    ):
        suite.measure(
            Figure(
                key=f"{b}/{key}/{label}",
                title=f"rollback to a snapshot ({ready})",
                backend=b,
                data=label,
                runs=runs,
                product=Side(
                    f"inv db.rollback {SNAPSHOT}",
                    lambda: stack.inv("db.rollback", SNAPSHOT),
                    before=before,
                    after=lambda: _spare_made(stack, spare),
                ),
                baseline=Side(
                    "psql: RENAME live aside + CREATE DATABASE live TEMPLATE snapshot + DROP aside",
                    functools.partial(_raw_rollback, stack, strategy),
                    before=lambda: _checkpoint(stack),
                ),
                target=_rollback_target(restore_key, at_1gb)
                if size and b == "native" and key == "rollback"
                else None,
                notes=[
                    "The product keeps the replaced state as the snapshot undo (dropping the "
                    "previous undo); the raw side drops it. With its spare copy ready (made in "
                    "the background after the snapshot and after each rollback, waited for "
                    "untimed) the product renames it into place; without one it copies the "
                    "snapshot, as the raw side does."
                ],
            )
        )
    log(f"{b}: dropping the benchmark's snapshots")
    base = stack.settings.postgres_base_db
    undo = names.snapshot_database(base, "undo")
    _drop(stack, snap_db, spare, undo, RAW_SNAPSHOT, RAW_LIVE, RAW_ASIDE)


def _raw_rollback(stack: BenchStack, strategy: str) -> None:
    stack.admin_pg.query(f"ALTER DATABASE {_q(RAW_LIVE)} RENAME TO {_q(RAW_ASIDE)}")
    _copy(stack, RAW_LIVE, RAW_SNAPSHOT, strategy)
    _drop(stack, RAW_ASIDE)


def _rollback_target(restore_key: str, at_1gb: str | None) -> Target:
    return Target(
        "<= 2 s and >= 8x faster than inv db.restore (custom) of the same data",
        lambda p, restore: p <= 2.0 and 8 * p <= restore,
        versus=restore_key,
        versus_side="product",
        only_at=at_1gb,
    )
