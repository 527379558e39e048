"""Timing: untimed first calls, calibrated samples, repeats interleaved across implementations.

The machine this runs on may be shared and noisy, so what we quote are
minima (the least disturbed run) and ratios between implementations timed
side by side, never a lone absolute time.  Interleaving -- one sample of
every implementation per round, the order rotated each round -- spreads
slow drifts (other jobs, clock changes) evenly over all of them, so the
ratios stay fair even when the absolute times wander.
"""

import gc
import math
import statistics
import time
from dataclasses import dataclass, field

__all__ = ["Timing", "Warmup", "warm_up", "plan_repeats", "time_interleaved"]

# A first call under this many seconds is cheap enough to be followed by a
# second untimed call, whose time (free of one-off costs: jit compilation,
# page faults, thread-pool start) calibrates the samples better.
_SECOND_WARMUP_BELOW = 0.05


@dataclass
class Timing:
    """Seconds per call: one entry per sample, each the mean of ``number`` calls."""

    samples: list = field(default_factory=list)
    number: int = 1
    first_call: float = float("nan")   # the untimed first call, for the record only

    @property
    def min(self):
        return min(self.samples)

    @property
    def median(self):
        return statistics.median(self.samples)


@dataclass
class Warmup:
    """What the untimed first call(s) told us about one implementation."""

    output: object        # the first call's result, kept for the correctness check
    first_call: float     # seconds
    estimate: float       # seconds per call, for calibration


def warm_up(thunk):
    """Call ``thunk`` once (twice when cheap), untimed as far as the results go."""
    start = time.perf_counter()
    output = thunk()
    first = time.perf_counter() - start
    estimate = first
    if first < _SECOND_WARMUP_BELOW:
        start = time.perf_counter()
        thunk()
        estimate = time.perf_counter() - start
    return Warmup(output, first, max(estimate, 1e-9))


def plan_repeats(estimate, min_sample, repeats, budget, min_repeats=3):
    """``(number, samples)``: calls per sample and samples, to fit the time budget.

    ``number`` calls make one sample last at least ``min_sample`` seconds (so
    that timer resolution and call overhead do not dominate tiny cases);
    ``samples`` is ``repeats`` cut down so that the total stays near
    ``budget`` seconds, but never below ``min_repeats`` (a median of fewer
    means little).
    """
    number = max(1, math.ceil(min_sample / estimate))
    affordable = int(budget // (estimate * number))
    return number, max(min(repeats, affordable), min(min_repeats, repeats))


def _one_sample(thunk, number):
    start = time.perf_counter()
    for _ in range(number):
        thunk()
    return (time.perf_counter() - start) / number


def time_interleaved(thunks, plans, first_calls=None):
    """Sample every thunk in rounds, rotating the order each round.

    ``thunks`` maps names to zero-argument callables and ``plans`` maps the
    same names to ``(number, samples)`` from :func:`plan_repeats`.  A thunk
    drops out of the rounds once it has its samples.  The garbage collector
    is paused while timing, as :mod:`timeit` does.  Returns name → Timing.
    """
    names = list(thunks)
    first_calls = first_calls or {}
    timings = {name: Timing(number=plans[name][0], first_call=first_calls.get(name, float("nan")))
               for name in names}
    rounds = max((plans[name][1] for name in names), default=0)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                number, samples = plans[name]
                if r < samples:
                    timings[name].samples.append(_one_sample(thunks[name], number))
    finally:
        if gc_was_enabled:
            gc.enable()
    return timings
