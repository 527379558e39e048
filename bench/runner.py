"""Running one case: the same problem through a list of implementations, side by side.

:func:`run_case` skips what cannot or should not run (with a note), prepares
the rest, calls each once untimed and checks that answer against the
reference, then times them all interleaved, and appends one
:class:`Record` per implementation to the :class:`Context`.
"""

import sys
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from . import peers
from .checks import relative_difference, tolerance, verdict
from .impls import OURS, YARDSTICK
from .timing import plan_repeats, time_interleaved, warm_up

__all__ = ["Record", "Context", "run_case"]


@dataclass
class Record:
    """One measurement: a row of a table and an entry of results.json."""

    suite: str
    dtype: str
    case: str
    n: int
    batch: list
    impl: str
    key: str
    role: str
    timed: str
    flops: float
    threads: Optional[int] = None
    block_size: Optional[int] = None
    samples: list = field(default_factory=list)   # seconds per call
    number: int = 0                               # calls per sample
    first_call: Optional[float] = None            # seconds, untimed
    min: Optional[float] = None
    median: Optional[float] = None
    rel_diff: Optional[float] = None
    tolerance: Optional[float] = None
    status: str = "ok"                            # ok, WRONG, ERROR, or 'not timed'
    note: str = ""
    extra: dict = field(default_factory=dict)    # suite-specific values (memory)

    def to_json(self):
        return asdict(self)


# Only calls at least this long (seconds) are extrapolated to larger sizes.
_PREDICT_FROM = 0.01


class Context:
    """Everything a suite run shares: settings, results, notes, progress, history."""

    def __init__(self, config, stream=None):
        self.config = config
        self.records = []
        self.notes = {}          # suite -> list of unique one-line notes, in order
        self.stream = sys.stderr if stream is None else stream
        self._history = {}       # (suite, dtype, impl) -> (work, seconds per call)
        self.given_up = {}       # (suite, dtype, impl) -> the note that skipped it for time

    def progress(self, line):
        """One progress line on stderr (the tables go to stdout)."""
        print(line, file=self.stream, flush=True)

    def note(self, suite, text):
        notes = self.notes.setdefault(suite, [])
        if text not in notes:
            notes.append(text)
            self.progress("[%s] note: %s" % (suite, text))

    def remember(self, suite, dtype, impl, work, seconds):
        self._history[(suite, str(dtype), impl)] = (work, seconds)

    def predicted(self, suite, dtype, impl, work):
        """Seconds per call extrapolated from the last smaller case (O(work)), or None."""
        previous = self._history.get((suite, str(dtype), impl))
        # Calls of a few milliseconds are mostly overhead, not the N³ term:
        # extrapolating them by N³ would wrongly skip fast implementations.
        if previous is None or previous[1] < _PREDICT_FROM:
            return None
        return previous[1] * work / previous[0]


def _work(problem):
    """Proportional to the cost of every implementation here: count · N³."""
    return problem.count * float(problem.n) ** 3


def _skip_reason(ctx, suite, impl, problem):
    """Why ``impl`` is not run on ``problem`` (a note), or None to run it."""
    config = ctx.config
    if impl.peer is not None:
        _, reason = peers.load(impl.peer)
        if reason:
            return "%s skipped: %s" % (impl.name, reason)
    reason = impl.supports(problem.dtype)
    if reason:
        return "%s skipped for %s: %s" % (impl.name, problem.dtype, reason)
    if impl.max_n is not None and problem.n > impl.max_n:
        return "%s run only for N ≤ %d (too slow above)" % (impl.name, impl.max_n)
    if impl.role in (OURS, YARDSTICK):
        return None      # the bases of every ratio: never skipped for time
    given_up = (suite, str(problem.dtype), impl.name)
    if given_up in ctx.given_up:       # sizes only grow within a suite: stays skipped
        return ctx.given_up[given_up]
    guess = ctx.predicted(suite, problem.dtype, impl.name, _work(problem))
    # Skip only what would overrun the whole budget in one call: the guess
    # scales the last minimum by N³, pessimistic where that minimum was call
    # overhead or a disturbed sample.
    if guess is not None and guess > config.budget:
        ctx.given_up[given_up] = (
            "%s skipped from %s %s on: about %.3g s per call predicted from the previous "
            "size, over the %g s budget" % (impl.name, problem.label, problem.dtype, guess,
                                           config.budget))
        return ctx.given_up[given_up]
    return None


def _selected(config, impl):
    """The --impls filter applies to everything except the yardsticks."""
    return impl.role == YARDSTICK or config.impls is None or impl.key in config.impls \
        or impl.name in config.impls


def _new_record(suite, problem, impl):
    return Record(suite=suite, dtype=str(problem.dtype), case=problem.label, n=problem.n,
                  batch=list(problem.batch), impl=impl.name, key=impl.key, role=impl.role,
                  timed=impl.timed, flops=impl.flops(problem), threads=impl.threads,
                  block_size=impl.block_size)


def _error_record(suite, problem, impl, error):
    record = _new_record(suite, problem, impl)
    record.status = "ERROR"
    record.note = "%s: %s" % (type(error).__name__, str(error).splitlines()[0] if str(error) else "")
    return record


def _check(record, prepared, output, reference, dtype):
    """Fill in the relative difference against the reference and the verdict."""
    expected = prepared.reference if prepared.reference is not None else reference
    record.tolerance = tolerance(dtype)
    try:
        record.rel_diff = relative_difference(prepared.answer(output), expected)
    except Exception as error:   # an output we cannot even read is as wrong as it gets
        record.rel_diff = float("inf")
        record.note = "answer unreadable: %s: %s" % (type(error).__name__, error)
    record.status = verdict(record.rel_diff, dtype)


def _progress_line(suite, record):
    head = "[%s %s %s] %s" % (suite, record.dtype, record.case, record.impl)
    if record.status == "ERROR":
        return "%s: ERROR %s" % (head, record.note)
    timing = ("min %.4g ms, median %.4g ms (%d samples × %d calls)"
              % (1e3 * record.min, 1e3 * record.median, len(record.samples), record.number)
              if record.samples else "not timed (%s)" % record.note)
    return "%s: %s, max rel diff %.2g %s" % (head, timing, record.rel_diff, record.status)


def run_case(ctx, suite, problem, impls, reference):
    """Check and time ``impls`` on ``problem``; returns the new records (also in ctx)."""
    config = ctx.config
    records, thunks, plans, first_calls = [], {}, {}, {}
    for impl in impls:
        if not _selected(config, impl):
            continue
        reason = _skip_reason(ctx, suite, impl, problem)
        if reason:
            ctx.note(suite, reason)
            continue
        record = _new_record(suite, problem, impl)
        try:
            prepared = impl.prepare(problem)
            warm = warm_up(prepared.thunk)
        except Exception as error:
            records.append(_error_record(suite, problem, impl, error))
            ctx.progress(_progress_line(suite, records[-1]))
            continue
        record.first_call = warm.first_call
        _check(record, prepared, warm.output, reference, problem.dtype)
        del warm.output
        records.append(record)
        if warm.first_call > config.budget:
            record.note = "not timed: the first call took %.3g s, over the %g s budget" % (
                warm.first_call, config.budget)
            ctx.remember(suite, problem.dtype, impl.name, _work(problem), warm.first_call)
            continue
        thunks[impl.name] = prepared.thunk
        plans[impl.name] = plan_repeats(warm.estimate, config.min_sample, config.repeats,
                                        config.budget)
        first_calls[impl.name] = warm.first_call

    timings = time_interleaved(thunks, plans, first_calls)
    for record in records:
        timing = timings.get(record.impl)
        if timing is not None:
            record.samples, record.number = timing.samples, timing.number
            record.min, record.median = timing.min, timing.median
            ctx.remember(suite, problem.dtype, record.impl, _work(problem), timing.min)
        ctx.progress(_progress_line(suite, record))
    ctx.records.extend(records)
    return records


def wide_reference(function, problem, *names):
    """``function`` applied in double precision to the named arrays, matrix by matrix.

    References are computed one matrix at a time, so that they never depend
    on the batched code paths being benchmarked.
    """
    arrays = [problem.wide(name) for name in names]
    if not problem.batch:
        return function(*arrays)
    flat = [a.reshape((-1,) + a.shape[-2:]) for a in arrays]
    return np.stack([function(*parts) for parts in zip(*flat)]).reshape(arrays[0].shape)
