"""What a stage may still spend, shared by its concurrent trials.

A trial reserves the epochs it may run before it starts and gives back what it did not
use, so trials running side by side can never together pass the allowance: that is how a
study never spends more epochs than its budget. Trial-seconds are charged as epochs
report them; once they are spent, running trials stop at their next epoch.
"""

from __future__ import annotations

import math
import threading


class Allowance:
    """Epochs and trial-seconds left to one stage (None: not capped)."""

    def __init__(self, epochs: float | None, seconds: float | None) -> None:
        self._epochs = epochs
        self._seconds = seconds
        self._lock = threading.Lock()

    @property
    def epochs_left(self) -> float | None:
        return self._epochs

    def reserve(self, want: float) -> float:
        """Take up to `want` whole epochs; 0 when none is left or the seconds are spent."""
        with self._lock:
            if self.out_of_seconds():
                return 0.0
            if self._epochs is None:
                return want
            granted = min(want, math.floor(max(self._epochs, 0.0) + 1e-9))
            self._epochs -= granted
            return granted

    def settle(self, reserved: float, used: float) -> None:
        """A trial that reserved `reserved` epochs ended having used `used` of them."""
        with self._lock:
            if self._epochs is not None:
                self._epochs += reserved - used

    def charge(self, epochs: float, seconds: float = 0.0) -> None:
        """Take what was spent outside any reservation here: an interrupted trial's earlier
        runs, within the reservation a dead runner held for it."""
        with self._lock:
            if self._epochs is not None:
                self._epochs -= epochs
        self.charge_seconds(seconds)

    def charge_seconds(self, seconds: float) -> None:
        with self._lock:
            if self._seconds is not None:
                self._seconds -= seconds

    def out_of_seconds(self) -> bool:
        return self._seconds is not None and self._seconds <= 0
