"""The results: a Markdown table for people and a JSON file with every sample for machines.

Written to tests/bench/results/latest.md and latest.json, replacing the previous run's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.bench.figures import Result

RESULTS = Path(__file__).resolve().parent / "results"


def _gib(size: object) -> str:
    return f"{size / 2**30:.1f} GiB" if isinstance(size, int) else "?"


def _mib(size: object) -> str:
    return f"{size / 2**20:.1f} MiB" if isinstance(size, int) else "?"


def _span(series: Any) -> str:
    return f"{series.min:.3f} / **{series.median:.3f}** / {series.max:.3f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def findings(results: Sequence[Result]) -> list[str]:
    return [
        f"{r.title} ({r.backend}{', ' + r.data if r.data != '-' else ''}): target "
        f"{r.target} missed: {r.verdict}."
        for r in results
        if r.status.startswith("missed")
    ]


def markdown(report: dict[str, Any], results: Sequence[Result]) -> str:
    m = report["machine"]
    v = report["versions"]
    g = report["git"]
    o = report["options"]
    changes = (
        f" + {g['uncommitted_changes']} uncommitted change(s)" if g["uncommitted_changes"] else ""
    )
    large_runs = (
        f" ({o['runs_for_large_backup_restore']} for backups and restores of 1 GB and more)"
        if o["runs_for_large_backup_restore"] < o["runs"]
        else ""
    )
    lines = [
        "# Benchmark: AI Marketplace dev stack",
        "",
        f"Run {report['date']} (took {report['duration_seconds'] / 60:.1f} min) · commit "
        f"`{g['commit'][:12]}`{changes} · `{report['command']}`",
        "",
        f"- **Options**: backend {o['backend']}; sizes {', '.join(o['sizes'])} "
        f"(users generated: {', '.join(f'{k} {n}' for k, n in o['users_per_size'].items())}); "
        f"runs {o['runs']}{large_runs}; quick {'yes' if o['quick'] else 'no'}.",
        f"- **Machine**: {m['cpu']}, {m['cores']} cores, {_gib(m['ram_bytes'])} RAM, "
        f"{m['os']}, {m['kernel']} ({m['architecture']}); disk free {_gib(m['disk']['free_bytes'])}"
        f" of {_gib(m['disk']['total_bytes'])}; load average at start "
        f"{' / '.join(map(str, m['load_average_at_start']))}, at end "
        f"{' / '.join(map(str, report['load_average_at_end']))}.",
        "- **Versions**: "
        + "; ".join(f"{k.replace('_', ' ')} {val}" for k, val in v["tools"].items())
        + ".",
    ]
    for backend, found in v["stacks"].items():
        lines.append(
            f"- **{backend} stack**: PostgreSQL {found['postgresql_server']}, Redis "
            f"{found['redis_server']}, database after `inv init` "
            f"{_mib(int(found['database_bytes_after_init']))}."
        )
    if v.get("images"):
        lines.append(
            "- **Images**: " + "; ".join(f"`{k}` {val}" for k, val in v["images"].items()) + "."
        )
    lines += [
        "",
        "Seconds of wall-clock time for the whole command (`time.perf_counter()` around a "
        "subprocess), **min / median / max** over the runs. Product and raw baseline run "
        "alternately, back to back, from the same state; preparing that state is not timed. "
        "x = product median / baseline median. Targets are judged on medians "
        "(* = indicative only: measured at another size than the target names).",
        "",
        "| Figure | Backend | Data | Runs | Product | s: min / **median** / max | Raw baseline "
        "| s: min / **median** / max | x | Target | Result |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            "| "
            + " | ".join(
                [
                    _cell(r.title),
                    r.backend,
                    r.data,
                    str(r.runs),
                    f"`{_cell(r.product_command)}`",
                    _span(r.product),
                    f"`{_cell(r.baseline_command)}`",
                    _span(r.baseline),
                    f"{r.ratio:.2f}",
                    _cell(r.target or "-"),
                    r.status,
                ]
            )
            + " |"
        )
    if report["data"]:
        lines += [
            "",
            "## Data",
            "",
            "Generated with `inv db.seed --scale N`, growing from one size to the next.",
            "",
            "| Backend | Size | Users added | Seeding s | pg_database_size |",
            "|---|---|---|---|---|",
        ]
        for d in report["data"]:
            lines.append(
                f"| {d['backend']} | {d['size']} | {d['users_added']} | {d['seed_seconds']:.1f} "
                f"| {_mib(d['database_bytes'])} |"
            )
        sizes = [r for r in results if "product_bytes" in r.extra]
        if sizes:
            lines += ["", "Backup sizes (product / stock pg_dump):", ""]
            lines += [
                f"- {r.title} ({r.backend}, {r.data}): {_mib(r.extra.get('product_bytes'))} / "
                f"{_mib(r.extra.get('baseline_bytes'))}"
                for r in sizes
            ]
    found = findings(results)
    lines += ["", "## Findings", ""]
    lines += [f"- {f}" for f in found] if found else ["- Every judged target was met."]
    notes = list(dict.fromkeys([*report["notes"], *(n for r in results for n in r.notes)]))
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], results: Sequence[Result], directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = {**report, "figures": [r.as_dict() for r in results], "findings": findings(results)}
    (directory / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    target = directory / "latest.md"
    target.write_text(markdown(report, results))
    return target
