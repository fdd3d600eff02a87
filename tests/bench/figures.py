"""A figure: the product command and its raw baseline, measured alternately, several runs.

Each run prepares the state (not timed), times one side, cleans up (not timed), then the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.bench.timing import Series, log, measure


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Side:
    """One side of a figure: what is timed, and what runs untimed before and after it."""

    command: str  # as shown in the table
    action: Callable[[], object]
    before: Callable[[], object] = _nothing
    after: Callable[[], object] = _nothing  # runs even when the action failed


@dataclass(frozen=True)
class Target:
    """A goal judged on medians: check(product, baseline) -> met."""

    text: str
    check: Callable[[float, float], bool]
    # Judge against the baseline median of another figure (by key) instead of this one's.
    versus: str | None = None
    versus_side: str = "baseline"  # or "product": that figure's product median
    # The size the target is defined for; at other sizes the verdict is only indicative.
    only_at: str | None = None
    relative: bool = True  # compares with a baseline (else an absolute limit)


@dataclass
class Figure:
    key: str
    title: str
    backend: str  # native | compose | "-" (independent of the backend)
    data: str  # "-" or a size label
    runs: int
    product: Side
    baseline: Side
    target: Target | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    baseline_first: bool = False


@dataclass
class Result:
    key: str
    title: str
    backend: str
    data: str
    runs: int
    product_command: str
    baseline_command: str
    product: Series
    baseline: Series
    target: str = ""
    status: str = "-"  # met | missed | "-" (no target); "*" marks an indicative verdict
    verdict: str = ""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.product.median / self.baseline.median if self.baseline.median else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "backend": self.backend,
            "data": self.data,
            "runs": self.runs,
            "product": {"command": self.product_command, **self.product.as_dict()},
            "baseline": {"command": self.baseline_command, **self.baseline.as_dict()},
            "ratio_of_medians": round(self.ratio, 3),
            "target": self.target,
            "status": self.status,
            "verdict": self.verdict,
            "notes": self.notes,
            "extra": self.extra,
        }


def _time_side(figure: Figure, side: Side, name: str, run: int) -> float:
    side.before()
    try:
        seconds = measure(side.action)
    finally:
        side.after()
    where = f"{figure.backend} · " if figure.backend != "-" else ""
    data = f" [{figure.data}]" if figure.data != "-" else ""
    log(f"{where}{figure.title}{data} · run {run}/{figure.runs} · {name} {seconds:.3f} s")
    return seconds


def measure_figure(figure: Figure, earlier: dict[str, Result]) -> Result:
    """Run both sides `figure.runs` times, alternating; judge the target on the medians."""
    product: list[float] = []
    baseline: list[float] = []
    for run in range(1, figure.runs + 1):
        order = ("baseline", "product") if figure.baseline_first else ("product", "baseline")
        for name in order:
            side = figure.product if name == "product" else figure.baseline
            seconds = _time_side(figure, side, name, run)
            (product if name == "product" else baseline).append(seconds)
    result = Result(
        key=figure.key,
        title=figure.title,
        backend=figure.backend,
        data=figure.data,
        runs=figure.runs,
        product_command=figure.product.command,
        baseline_command=figure.baseline.command,
        product=Series(tuple(product)),
        baseline=Series(tuple(baseline)),
        notes=list(figure.notes),
        extra=dict(figure.extra),
    )
    judge(result, figure.target, earlier)
    summary = (
        f"product median {result.product.median:.3f} s, baseline {result.baseline.median:.3f} s"
        f" ({result.ratio:.2f}x)"
    )
    log(
        f"=> {figure.title}{f' [{figure.data}]' if figure.data != '-' else ''}: {summary}"
        + (f"; target {result.target}: {result.status}" if figure.target else "")
    )
    return result


def judge(result: Result, target: Target | None, earlier: dict[str, Result]) -> None:
    if target is None:
        return
    compared = result.baseline.median
    if target.versus is not None:
        other = earlier.get(target.versus)
        if other is None:
            result.target, result.status = target.text, "-"
            result.verdict = f"not judged: {target.versus} was not measured"
            return
        compared = (
            other.product.median if target.versus_side == "product" else other.baseline.median
        )
    met = target.check(result.product.median, compared)
    result.target = target.text
    result.status = "met" if met else "missed"
    result.verdict = f"product median {result.product.median:.3f} s" + (
        f" vs {compared:.3f} s" if target.relative else ""
    )
    if target.only_at is not None and result.data != target.only_at:
        result.status += "*"
        result.verdict += f" (indicative: the target is for {target.only_at})"
