"""What `inv validate` finds: one Check per thing looked at, in areas, with its fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

AREAS = ("Tools", "Env file", "Compose file", "SQL files", "Ports", "Data", "Services", "Security")


@dataclass(frozen=True)
class Check:
    area: str
    name: str
    status: str  # pass | warn | fail | skip
    finding: str
    fix: str = ""


class Report:
    """The checks in the order they ran, with a count per status."""

    def __init__(self) -> None:
        self.checks: list[Check] = []

    def add(self, area: str, name: str, status: str, finding: str, fix: str = "") -> None:
        self.checks.append(Check(area, name, status, finding, fix))

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("pass", "warn", "fail", "skip"), 0)
        for check in self.checks:
            counts[check.status] += 1
        return counts

    def as_json(self) -> dict[str, Any]:
        return {"checks": [asdict(c) for c in self.checks], "summary": self.counts()}
