"""A running job's smoothed rate and its ETA, computed when its document is copied for a write.

``progress()`` only records ``current`` and the time; the writer's copy (a few
times a second at most) feeds them here, so the hot path pays nothing for it.
For the first :data:`SMOOTHING` seconds the rate is the average since the job
began (a burst of quick first items does not pass for the pace); after that, an
exponentially weighted average over about that long, so one slow or fast item
moves the ETA a little, not wildly.
"""

from __future__ import annotations

import math

#: Time constant, in seconds, of the rate's exponential smoothing.
SMOOTHING = 10.0
#: Samples closer together than this (seconds) are skipped: too noisy to rate.
MIN_GAP = 0.2


class Pace:
    """Units per second and seconds left of one job (see the module docstring)."""

    __slots__ = ("_at", "_began", "_current", "_first", "rate")

    def __init__(self) -> None:
        self._at: float | None = None
        self._began = 0.0
        self._current = self._first = 0.0
        #: Smoothed units per second; None until two samples are far enough apart.
        self.rate: float | None = None

    def start(self, at: float, current: float) -> None:
        """The job began running at ``at`` with ``current`` done."""
        self._at, self._current, self.rate = at, current, None
        self._began, self._first = at, current

    def sample(self, at: float, current: float) -> None:
        """``current`` was reached at ``at`` (the document's ``updated_at``)."""
        if self._at is None:
            self.start(at, current)
            return
        gap = at - self._at
        if gap < MIN_GAP:
            return
        moved = current - self._current
        if moved < 0:  # the job counted down or restarted its count: rate it afresh
            self.start(at, current)
            return
        now_rate = moved / gap
        if at - self._began < SMOOTHING:  # early on: the average since the start
            self.rate = (current - self._first) / (at - self._began)
        elif self.rate is None:
            self.rate = now_rate
        else:
            self.rate += (1.0 - math.exp(-gap / SMOOTHING)) * (now_rate - self.rate)
        self._at, self._current = at, current

    def eta(self, current: float, total: float | None) -> float | None:
        """Seconds left at the current rate; None when there is no total or no rate yet."""
        if not total or not self.rate or self.rate <= 0:
            return None
        left = total - current
        return 0.0 if left <= 0 else round(left / self.rate, 1)

    def shown_rate(self) -> float | None:
        return None if self.rate is None else round(self.rate, 3)
