"""Handing results from Python threads back to Qt, and the GIL back to the GUI thread.

Work that touches the disk or the network runs on a Python thread; its result comes back as a
signal, which Qt queues to the receiver's thread. A thread that generates hands the GIL over
to the GUI thread every few milliseconds (`GilHandover`). A non-widget module so that
controllers and widgets alike can use it.
"""
from __future__ import annotations

import time


def emit_from_thread(signal, *args) -> None:
    """Emit from a background thread; the widget may have been closed meanwhile (then nobody listens)."""
    try:
        signal.emit(*args)
    except RuntimeError:
        pass


GIL_HANDOVER_EVERY = 0.002     # seconds of generating between two hand-overs of the GIL
GIL_HANDOVER_PAUSE = 0.0001    # the sleep that hands it over: longer than a woken thread takes to run


class GilHandover:
    """Called once per token by a thread that generates: at most every `every` seconds it
    sleeps `pause` seconds, the GIL released, so that a thread waiting for the GIL (the GUI
    thread) takes it.

    Why a sleep is needed: CPython (3.11) takes the GIL away from a running thread only when a
    waiting thread has waited a whole switch interval and no other thread took the GIL in
    between. The engine thread releases the GIL itself many times a token (numpy's BLAS calls,
    numba's nogil kernels) and takes it back before the woken waiter runs; each such release
    counts as a switch, so the waiter's interval starts again and it can wait indefinitely.
    The GUI thread was measured waiting 20-50 ms at a time this way (futex waits on the GIL,
    sampled from /proc while the engine ran), the longest event-loop gaps of a fast generation.
    The cost (bench/gil_handover.py): a hand-over takes about 0.2 ms (the sleep and waking up
    again), 7-8% of a tiny model's 640-720 tokens/s on the fast backend (one every second
    token), within the noise at 410M (55 tokens/s, one per token). Every 5 ms it cost 3-4%, but
    the latency test's worst gaps grew from 11-18 ms to 14-25 ms."""

    def __init__(self, every: float = GIL_HANDOVER_EVERY, pause: float = GIL_HANDOVER_PAUSE,
                 clock=time.perf_counter, sleep=time.sleep):
        self.every = every
        self.pause = pause
        self._clock = clock
        self._sleep = sleep
        self._last = clock()

    def __call__(self) -> None:
        if self._clock() - self._last >= self.every:
            self._sleep(self.pause)
            self._last = self._clock()
