"""The fleet simulator's fault hook: `SLMOPS_SIM_SLOWDOWN=F` makes every inference or generation
step take F times as long, so a test can make one revision slow on one hardware class and watch
the rollout's analysis catch it. The extra time is slept in the worker thread, never on the
event loop, so the server stays responsive the way a truly slower model would."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Slowdown:
    factor: float = 1.0

    def stretch(self, elapsed_s: float) -> None:
        if self.factor > 1.0 and elapsed_s > 0:
            time.sleep(elapsed_s * (self.factor - 1.0))
