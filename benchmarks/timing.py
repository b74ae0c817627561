"""Timing helpers: the best of repeated runs (as ``timeit`` does), on threads or processes.

The machine a benchmark runs on is shared, so a single run says little: every measure runs
the same work several times and keeps the fastest run, the one least disturbed by other
work. Runs of the library and of its baseline are interleaved, so that both see the same
conditions.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

Call = Callable[[int], Any]
"""One call of the measured work; it gets the call's number (unique within a measure)."""


class Best:
    """The fastest of several runs, in seconds per call."""

    def __init__(self) -> None:
        self.seconds = math.inf

    def add(self, seconds: float) -> None:
        self.seconds = min(self.seconds, seconds)

    @property
    def us(self) -> float:
        return round(self.seconds * 1e6, 2)

    @property
    def ms(self) -> float:
        return round(self.seconds * 1e3, 3)


def run_once(call: Call, number: int, first: int = 0) -> float:
    """Seconds per call of ``number`` calls ``call(first)``, ``call(first + 1)``..."""
    gc.collect()
    start = time.perf_counter()
    for i in range(first, first + number):
        call(i)
    return (time.perf_counter() - start) / number


def run_threads(call: Call, number: int, threads: int, first: int = 0) -> float:
    """Seconds per call of ``number`` calls spread over ``threads`` threads started together."""
    if threads == 1:
        return run_once(call, number, first)
    gc.collect()
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        barrier.wait()
        try:
            for i in range(first + offset, first + number, threads):
                call(i)
        except BaseException as e:  # raised again below, in the measuring thread
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed / number


def calls_per_run(call: Call, seconds: float, most: int) -> int:
    """How many calls make a run of about ``seconds`` (at least 1, at most ``most``), as
    ``timeit`` chooses its number: from the time of one call, after one to warm up."""
    call(-1)
    start = time.perf_counter()
    call(-2)
    once = time.perf_counter() - start
    return max(1, min(most, int(seconds / once) if once > 0 else most))


def best_interleaved(
    calls: dict[str, Call],
    number: int,
    repeat: int,
    threads: int = 1,
    *,
    seconds: float | None = None,
) -> dict[str, float]:
    """The best seconds per call of each of ``calls``, their runs interleaved. A run is
    ``number`` calls, or with ``seconds`` as many calls (up to ``number``) as last about
    that long, chosen for each of ``calls``."""
    numbers = {
        label: number if seconds is None else calls_per_run(call, seconds, number)
        for label, call in calls.items()
    }
    best = {label: Best() for label in calls}
    done = 0
    for _ in range(repeat):
        for label, call in calls.items():
            best[label].add(run_threads(call, numbers[label], threads, first=done))
        done += max(numbers.values())
    return {label: b.seconds for label, b in best.items()}


Worker = Callable[[int, int, int], None]
"""A process's work: ``worker(process, first, count)`` makes ``count`` calls numbered from
``first``; it opens its own connections (nothing opened before the fork is shared)."""
Setup = Callable[[], Worker]
"""Runs in the new process before the clock starts: opens connections, warms up, and returns
the work to time."""


def _process_main(setup: Setup, index: int, first: int, count: int, barrier: Any, out: Any) -> None:
    try:
        work = setup()
        barrier.wait()
        start = time.monotonic()
        work(index, first, count)
        out.put((index, start, time.monotonic(), None))
    except BaseException:
        barrier.abort()
        out.put((index, 0.0, 0.0, traceback.format_exc()))


def run_processes(setup: Setup, number: int, processes: int, first: int = 0) -> float:
    """Seconds per call of ``number`` calls shared by ``processes`` processes started together
    (forked), from the first process's start to the last one's end."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    out = context.Queue()
    shares = _shares(number, processes)
    pool = []
    start = first
    for index, count in enumerate(shares):
        pool.append(
            context.Process(
                target=_process_main, args=(setup, index, start, count, barrier, out), daemon=True
            )
        )
        start += count
    for process in pool:
        process.start()
    results = [out.get(timeout=600) for _ in pool]
    for process in pool:
        process.join(timeout=60)
    failures = [error for *_, error in results if error is not None]
    if failures:
        raise RuntimeError("a benchmark process failed:\n" + failures[0])
    begin = min(r[1] for r in results)
    end = max(r[2] for r in results)
    return (end - begin) / number


def _shares(number: int, parts: int) -> Sequence[int]:
    base, extra = divmod(number, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def best_processes(
    setups: dict[str, Setup], number: int, repeat: int, processes: int
) -> dict[str, float]:
    """The best seconds per call of each of ``setups`` run on ``processes`` processes, their
    runs interleaved."""
    best = {label: Best() for label in setups}
    done = 0
    for _ in range(repeat):
        for label, setup in setups.items():
            best[label].add(run_processes(setup, number, processes, first=done))
        done += number
    return {label: b.seconds for label, b in best.items()}
