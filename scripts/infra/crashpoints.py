"""Named points in the steps that must survive a crash, where a test may kill this process.

With STACK_CRASH_AT=<name> in the environment, reaching that point is a SIGKILL of the task
itself: no cleanup, no finally block, exactly as a power cut or `kill -9` would leave it. The
crash tests of restores kill at every step of the swap this way, deterministically, and then
check that the next command leaves the old database or the new one live, never neither.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "STACK_CRASH_AT"


def reached(name: str) -> None:
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
