"""`inv logs`: the services' logs merged into one, in the order their lines were written,
each line prefixed with its service; --follow keeps them merged.

Lines are ordered by the time each server wrote on them (a line without one goes with the
line before it). Following, each poll's lines are merged before they are printed, so lines
written in the same fifth of a second by two servers come out in order.

Hidden: PostgreSQL's "the database system is starting up", which every connection attempt
during a start logs (the tasks' readiness probes make them; they say nothing about the
application).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scripts.backends.base import Backend, LogLine

HIDDEN = ("the database system is starting up",)
POLL = 0.2


def merge(
    lines: Mapping[str, Sequence[LogLine]], since: float = float("-inf")
) -> list[tuple[str, str]]:
    """(service, text) of every line, in time order; services keep their own order for lines
    of the same time (and the order given, between services). `since`: the time a line with
    no time of its own and nothing before it gets."""
    keyed = []
    for rank, (service, found) in enumerate(lines.items()):
        when = since
        for seq, line in enumerate(found):
            if line.at is not None:
                when = line.at
            if not any(noise in line.text for noise in HIDDEN):
                keyed.append((when, rank, seq, service, line.text))
    keyed.sort(key=lambda item: item[:3])
    return [(service, text) for _, _, _, service, text in keyed]


def show(
    backend: Backend,
    services: Sequence[str],
    *,
    follow: bool,
    tail: int,
    write: Callable[[str], None] | None = None,
) -> None:
    """Print the last `tail` lines of each service, merged; with `follow`, then what comes,
    until Ctrl-C."""
    out = write or (lambda line: print(line, flush=True))
    width = max(len(s) for s in services)
    sources = {s: backend.log_source(s, follow=follow) for s in services}
    latest = float("-inf")  # the time of the newest line printed: untimed lines follow it

    def emit(lines: Mapping[str, Sequence[LogLine]]) -> None:
        nonlocal latest
        for service, text in merge(lines, since=latest):
            out(f"{service:<{width}} | {text}")
        latest = max([latest, *(line.at for found in lines.values() for line in found if line.at)])

    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it quietly, at any moment
            emit({s: source.past(tail) for s, source in sources.items()})
            while follow:
                time.sleep(POLL)
                emit({s: source.new() for s, source in sources.items()})
    finally:
        for source in sources.values():
            source.close()
