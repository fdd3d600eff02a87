"""scripts/ops/backup_files.py: a backup named as `inv db.backups` lists it, or by its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.errors import StackError, UsageError
from scripts.ops.backup_files import find
from scripts.settings import Settings
from tests.unit.unit_support import generated_settings


@pytest.fixture
def stack(tmp_path: Path) -> Settings:
    settings = generated_settings(tmp_path, {"BACKUP_DIR": str(tmp_path / "backups")})
    settings.backup_dir.mkdir()
    return settings


def _file(path: Path) -> Path:
    path.write_bytes(b"PGDMP")
    return path


def test_a_name_is_found_in_backup_dir_with_or_without_its_extension(stack: Settings) -> None:
    dump = _file(stack.backup_dir / "before-mig.dump")
    (stack.backup_dir / "nightly.dir").mkdir()
    assert find(stack, "before-mig.dump") == dump
    assert find(stack, "before-mig") == dump
    assert find(stack, "nightly") == stack.backup_dir / "nightly.dir"


def test_a_name_of_two_formats_asks_for_the_full_name(stack: Settings) -> None:
    _file(stack.backup_dir / "x.dump")
    _file(stack.backup_dir / "x.sql.gz")
    with pytest.raises(UsageError) as caught:
        find(stack, "x")
    assert caught.value.message == "'x' names 2 backups (x.dump, x.sql.gz): give the full name."
    assert caught.value.exit_code == 2


def test_a_path_still_works_from_anywhere(stack: Settings, tmp_path: Path) -> None:
    elsewhere = _file(tmp_path / "elsewhere.dump")
    assert find(stack, str(elsewhere)) == elsewhere
    with pytest.raises(StackError, match="no such path"):
        find(stack, str(tmp_path / "gone.dump"))


def test_an_unknown_name_suggests_the_closest_backup(stack: Settings) -> None:
    _file(stack.backup_dir / "before-mig.dump")
    with pytest.raises(StackError) as caught:
        find(stack, "befor-mig")
    message = caught.value.message
    assert "No backup named 'befor-mig'" in message
    assert "did you mean 'before-mig.dump'?" in message
    assert "`inv db.backups`" in message


def test_a_partial_file_is_never_found_by_name(stack: Settings) -> None:
    _file(stack.backup_dir / ".partial-abc.dump")
    with pytest.raises(StackError):
        find(stack, ".partial-abc.dump")
