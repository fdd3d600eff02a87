"""The benchmark's command-line options, shared by `nox -s bench` and `python -m tests.bench`.

Parsed by hand, without argparse, so the nox session can validate them without exiting.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

USAGE = "nox -s bench -- [--backend native|compose|both] [--sizes 100MB,1GB] [--runs N] [--quick]"
INTERNAL_USAGE = (
    "python -m tests.bench --stack native=ENV_FILE [--stack compose=ENV_FILE] --work DIR "
    "[--backend native|compose|both] [--sizes 100MB,1GB] [--runs N] [--quick]"
)
BACKEND_CHOICES = ("native", "compose", "both")
DEFAULT_SIZES = ("100MB", "1GB")
QUICK_SIZES = ("10MB",)
DEFAULT_RUNS = 3
# Backup and restore of 1 GB or more: at most this many runs (stated in the table).
LARGE_RUNS = 2
# `inv db.seed --scale N`: its help says 45000 users ~ 100 MB and 470000 ~ 1 GB.
USERS_PER_MB_SMALL = 45000 / 100
USERS_PER_GB = 470000


class UsageError(ValueError):
    """The options cannot be used; the message says why and shows the usage."""


@dataclass(frozen=True)
class Size:
    """A database size to generate with `inv db.seed --scale`, e.g. 100MB or 1GB."""

    label: str
    megabytes: float

    @property
    def large(self) -> bool:
        return self.megabytes >= 1024

    @property
    def users(self) -> int:
        """Generated users for about this size (the seed's own rule of thumb)."""
        if self.large:
            return round(self.megabytes / 1024 * USERS_PER_GB)
        return max(1, round(self.megabytes * USERS_PER_MB_SMALL))

    @classmethod
    def parse(cls, text: str) -> Size:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([MG])B?\s*", text, re.IGNORECASE)
        if match is None or float(match[1]) <= 0:
            raise UsageError(f"--sizes: {text!r} is not a size like 10MB, 100MB or 1GB.")
        number = float(match[1])
        megabytes = number * (1024 if match[2].upper() == "G" else 1)
        label = f"{match[1]}{match[2].upper()}B"
        return cls(label, megabytes)


@dataclass(frozen=True)
class Options:
    backend: str | None  # None: native, plus compose lifecycle figures when an engine answers
    sizes: tuple[Size, ...]
    runs: int
    quick: bool
    stacks: dict[str, Path] = field(default_factory=dict)  # backend -> env file (internal)
    work: Path | None = None  # scratch directory (internal)
    argv: tuple[str, ...] = ()  # the user's options as given

    @property
    def native_wanted(self) -> bool:
        return self.backend in (None, "native", "both")

    @property
    def compose_wanted(self) -> bool:
        """compose: required; both and the default: when a Docker engine answers."""
        return self.backend in (None, "compose", "both")

    @property
    def compose_required(self) -> bool:
        return self.backend == "compose"

    def compose_scope(self) -> str:
        """'all' figures on compose when asked for by name, else only the lifecycle ones."""
        return "all" if self.backend in ("compose", "both") else "lifecycle"

    def data_runs(self, size: Size) -> int:
        return min(self.runs, LARGE_RUNS) if size.large else self.runs

    def summary(self) -> dict[str, object]:
        return {
            "backend": self.backend or "default (native + compose lifecycle if an engine answers)",
            "sizes": [s.label for s in self.sizes],
            "users_per_size": {s.label: s.users for s in self.sizes},
            "runs": self.runs,
            "runs_for_large_backup_restore": min(self.runs, LARGE_RUNS),
            "quick": self.quick,
            "arguments": list(self.argv),
        }


def _sizes(value: str) -> tuple[Size, ...]:
    parts = [p for p in value.split(",") if p.strip()]
    if not parts:
        raise UsageError("--sizes needs at least one size, e.g. --sizes 100MB,1GB.")
    unique = {s.megabytes: s for s in map(Size.parse, parts)}
    return tuple(sorted(unique.values(), key=lambda s: s.megabytes))


def _runs(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"--runs {value!r}: give a whole number of at least 1.")
    return int(value)


def _backend(value: str) -> str:
    if value not in BACKEND_CHOICES:
        raise UsageError(f"--backend {value!r}: choose native, compose or both.")
    return value


def _stack(value: str) -> tuple[str, Path]:
    which, _, path = value.partition("=")
    if which not in ("native", "compose") or not path:
        raise UsageError(f"--stack {value!r}: use --stack native=ENV_FILE or compose=ENV_FILE.")
    return which, Path(path).absolute()


def _pairs(argv: Sequence[str], valued: set[str], usage: str) -> list[tuple[str, str | None]]:
    """(name, value) per option; value None for the flag --quick."""
    pairs: list[tuple[str, str | None]] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, has_value, inline = arg.partition("=")
        if name == "--quick" and not has_value:
            pairs.append((name, None))
        elif name not in valued:
            raise UsageError(f"Unknown argument {arg!r}. Usage: {usage}")
        elif has_value:
            pairs.append((name, inline))
        elif args:
            pairs.append((name, args.pop(0)))
        else:
            raise UsageError(f"{name} needs a value. Usage: {usage}")
    return pairs


def parse(argv: Sequence[str], *, internal: bool = False) -> Options:
    """Parse the benchmark's options; `internal` also accepts --stack and --work."""
    usage = INTERNAL_USAGE if internal else USAGE
    valued = {"--backend", "--sizes", "--runs"} | ({"--stack", "--work"} if internal else set())
    found: dict[str, str] = {}
    stacks: dict[str, Path] = {}
    user_args: list[str] = []
    for name, value in _pairs(argv, valued, usage):
        if value is None:
            found[name] = ""
            user_args.append(name)
        elif name == "--stack":
            which, path = _stack(value)
            stacks[which] = path
        else:
            found[name] = value
            if name != "--work":
                user_args += [name, value]
    if internal and not stacks:
        raise UsageError(f"Name at least one stack with --stack. Usage: {usage}")
    if internal and "--work" not in found:
        raise UsageError(f"Name a scratch directory with --work. Usage: {usage}")
    quick = "--quick" in found
    return Options(
        backend=_backend(found["--backend"]) if "--backend" in found else None,
        sizes=_sizes(found.get("--sizes", ",".join(QUICK_SIZES if quick else DEFAULT_SIZES))),
        runs=_runs(found["--runs"]) if "--runs" in found else (1 if quick else DEFAULT_RUNS),
        quick=quick,
        stacks=stacks,
        work=Path(found["--work"]).absolute() if "--work" in found else None,
        argv=tuple(user_args),
    )
