"""Where a restore (scripts.ops.swap) or a copy (scripts.ops.copies) keeps its journal while
it runs: a file in the state dir that says what a killed command left half done.

Kept apart from the modules that write them so that every command can ask "is anything to
recover?" without importing them (each command checks; few ever find one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from scripts.settings import Settings


def restore(settings: Settings) -> Path:
    return settings.state_dir / "restore.journal"


def copy(settings: Settings) -> Path:
    return settings.state_dir / "copy.journal"


def pending(settings: Settings) -> bool:
    """A restore, snapshot, rollback or branch copy was cut short and is still to recover."""
    return restore(settings).exists() or copy(settings).exists()
