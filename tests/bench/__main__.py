"""Run the benchmark on isolated stacks and write tests/bench/results/latest.{md,json}.

Usually started by `nox -s bench`, which makes the stacks; exit 0 once everything was measured.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from tests.bench import machine, report
from tests.bench.baselines import remove_relocated
from tests.bench.options import UsageError, parse
from tests.bench.stacks import BenchStack
from tests.bench.suite import Suite
from tests.bench.timing import BenchError, log

GENERAL_NOTES = [
    "Raw baselines use the host's PostgreSQL 15 tools (/usr/lib/postgresql/15/bin) and "
    "redis-cli with PGPASSWORD / REDISCLI_AUTH in the environment; on compose they connect "
    "to the published ports, while the product runs pg_dump / pg_restore inside the container.",
    "Product commands run as `python -m invoke ...` from the repository root with the stack's "
    "STACK_ENV_FILE, exactly as a user runs `inv`, after one untimed `inv --list`. Python may "
    "write bytecode as in a normal venv (this machine's PYTHONDONTWRITEBYTECODE=1 is dropped for "
    "them): tasks.py turns it back on for scripts/ after invoke switched it off (its "
    "--write-pyc default), so only tasks.py itself is compiled at every run, as for every user.",
    "Clean-up between runs (not timed): backup files deleted, restored databases dropped, a "
    "CHECKPOINT before every backup and restore on both sides; OS caches are not dropped.",
]


def main(argv: Sequence[str]) -> int:
    try:
        options = parse(argv, internal=True)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    assert options.work is not None
    work = options.work
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    date = machine.now()
    ordered = sorted(options.stacks.items(), key=lambda item: item[0] != "native")
    try:
        stacks = {b: BenchStack(b, path) for b, path in ordered}
        facts = machine.machine(work)
        suite = Suite(options, stacks, work)
        suite.run()
        with_docker = "compose" in stacks
        tools = machine.versions(with_docker)
        images = (
            machine.images(
                [stacks["compose"].settings.postgres_image, stacks["compose"].settings.redis_image]
            )
            if with_docker
            else {}
        )
    except BenchError as exc:
        log(f"ABORTED: {exc}")
        return 1
    finally:
        remove_relocated(work)
    notes = list(GENERAL_NOTES)
    if options.compose_wanted and not with_docker:
        notes.append("No Docker engine answered: the compose figures were not measured.")
    if with_docker and options.compose_scope() == "lifecycle":
        notes.append(
            "Compose: lifecycle figures only (the default); `--backend compose` or `both` adds "
            "its backups and restores."
        )
    if any("stand-in" in text and "not a" not in text for text in images.values()):
        notes.append(
            "Compose ran on the local stand-in images (tests/standins), not the official ones: "
            "its figures describe the stand-ins."
        )
    user_args = " ".join(options.argv)
    data: dict[str, Any] = {
        "schema": 1,
        "date": date,
        "duration_seconds": round(time.monotonic() - began, 1),
        "command": "nox -s bench" + (f" -- {user_args}" if user_args else ""),
        "git": machine.git(),
        "options": options.summary(),
        "machine": facts,
        "load_average_at_end": machine.load_average(),
        "versions": {"tools": tools, "stacks": suite.versions, "images": images},
        "stacks": {b: s.describe() for b, s in stacks.items()},
        "data": suite.data,
        "notes": notes,
    }
    written = report.write(data, list(suite.results.values()))
    print()
    print(written.read_text())
    log(f"wrote {written} and {written.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
