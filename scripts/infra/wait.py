"""The one way this project waits for something: poll a check until it gives an answer or a
deadline passes. Closely at first (servers usually answer within a few hundred ms), then at
the given interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")
EAGER_SECONDS = 0.5  # poll every EAGER_INTERVAL this long before slowing to `interval`
EAGER_INTERVAL = 0.01


def until(check: Callable[[], T | None], *, timeout: float, interval: float = 0.05) -> T | None:
    """Call `check` until it returns something other than None, or `timeout` seconds pass;
    return that, or None. It is always called at least once."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        found = check()
        if found is not None:
            return found
        now = time.monotonic()
        if now >= deadline:
            return None
        pause = EAGER_INTERVAL if now - started < EAGER_SECONDS else interval
        time.sleep(min(pause, max(0.0, deadline - now)))


def concurrently(calls: Mapping[str, Callable[[], T]]) -> dict[str, T]:
    """Run each call in its own thread and wait for all of them; their results by name.
    The first exception (in the mapping's order) is raised once every call has ended, so
    nothing is left running behind an error."""
    from concurrent.futures import ThreadPoolExecutor

    if len(calls) <= 1:
        return {name: call() for name, call in calls.items()}
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
    return {name: future.result() for name, future in futures.items()}
