"""The env file's checks: it exists, is private and ignored by git, every value is valid,
no key is unknown or set twice, passwords are not placeholders, the URLs agree.
"""

from __future__ import annotations

import difflib
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from scripts import envfile
from scripts.console import display_path
from scripts.envfile import PLACEHOLDER_PASSWORD
from scripts.errors import StackError
from scripts.infra import run
from scripts.ops.validate.report import Report
from scripts.settings import (
    DEFAULTS,
    PROCESS_ONLY_KEYS,
    ROOT,
    Settings,
    env_file_path,
    merge,
    problems_in,
)
from scripts.urls import URL_KEYS, url_disagreements, url_unset

WEAK = {"password", "postgres", "redis", "secret", "admin", "123456", "12345678", "changeme"}


def check_env_file(report: Report, environ: Mapping[str, str]) -> Settings | None:
    area = "Env file"
    path = env_file_path(environ)
    shown = display_path(path)
    if not path.is_file():
        report.add(
            area,
            "exists",
            "fail",
            f"no env file at {shown}",
            "run `inv init` to create it from .env.example (passwords are generated)",
        )
        return None
    report.add(area, "exists", "pass", shown)
    mode = path.stat().st_mode & 0o777
    report.add(
        area,
        "private",
        "pass" if not mode & 0o077 else "fail",
        f"mode {mode:04o}" + ("" if not mode & 0o077 else ": other users can read the passwords"),
        "" if not mode & 0o077 else f"chmod 600 {shown}",
    )
    _git_ignored(report, path)
    try:
        text = envfile.read_text(path)
    except StackError as exc:
        report.add(area, "readable", "fail", exc.message, "save it as UTF-8, readable by you")
        return None
    parsed = envfile.parse(text, environ)
    for note in parsed.notes(shown):
        report.add(area, "format", "warn", note)
    _unknown_keys(report, text)
    problems = problems_in(merge(parsed.values, environ))
    for problem in problems:
        report.add(area, problem.split(" ", 1)[0].split("=", 1)[0], "fail", problem)
    if problems:
        return None
    report.add(area, "values", "pass", "every key present and valid")
    from scripts.settings import load

    settings = load(environ)
    _passwords(report, settings)
    _urls(report, settings)
    return settings


def _git_ignored(report: Report, path: Path) -> None:
    area = "Env file"
    if not path.resolve().is_relative_to(ROOT) or shutil.which("git") is None:
        report.add(area, "ignored by git", "pass", "outside the repository")
        return
    result = run.run(["git", "check-ignore", "--quiet", str(path)], cwd=ROOT)
    if result.returncode == 0:
        report.add(area, "ignored by git", "pass", ".gitignore keeps it out of commits")
    elif result.returncode == 1:
        report.add(
            area,
            "ignored by git",
            "fail",
            f"{display_path(path)} is not ignored: its passwords could be committed",
            f"add {path.name} to .gitignore",
        )
    else:
        report.add(area, "ignored by git", "skip", "not a git checkout")


def _unknown_keys(report: Report, text: str) -> None:
    known = [*DEFAULTS, *PROCESS_ONLY_KEYS]
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.match(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=", stripped)
        if match is None:
            report.add(
                "Env file",
                f"line {number}",
                "fail",
                f"line {number} is not KEY=VALUE: Docker Compose refuses such a file",
                "fix or remove the line",
            )
            continue
        key = match[1]
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}?" if close else "remove it if it is a leftover"
            report.add("Env file", key, "warn", f"{key} is not a setting of the stack", hint)


def _passwords(report: Report, settings: Settings) -> None:
    for key, secret in (
        ("POSTGRES_PASSWORD", settings.postgres_password.reveal()),
        ("REDIS_PASSWORD", settings.redis_password.reveal()),
    ):
        if secret == PLACEHOLDER_PASSWORD:
            report.add(
                "Env file",
                key,
                "fail",
                f"{key} is still the placeholder from .env.example",
                "set a real password (inv init generates one for a new env file)",
            )
        elif len(secret) < 12 or secret.lower() in WEAK:
            report.add(
                "Env file",
                key,
                "warn",
                f"{key} is weak ({len(secret)} characters)",
                "use 12 or more random characters",
            )
        else:
            report.add("Env file", key, "pass", f"{len(secret)} characters, not a placeholder")


def _urls(report: Report, settings: Settings) -> None:
    from scripts.ops.preflight import url_sentence

    for key in URL_KEYS:
        if url_unset(settings.file_values.get(key, "")):
            report.add(
                "Env file",
                key,
                "warn",
                f"{key} is not set in the env file: the application reading it gets none",
                "any `inv` task (e.g. `inv status`) writes the stack's URL there",
            )
        elif parts := url_disagreements(settings, key):
            report.add("Env file", key, "fail", url_sentence(settings, key, parts))
        else:
            report.add("Env file", key, "pass", "agrees with the stack's settings")
