"""How many threads the kernels use: a setting, by default the number of physical cores.

numba's thread count is per calling thread (``numba.set_num_threads`` only affects the thread
that calls it), so a session applies it on every evaluation: generation often runs on a worker
thread, not the one that loaded the model.
"""
from __future__ import annotations

import glob
import os

import numba

from engine.errors import SettingsError


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads do not help these kernels)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:          # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "physical_package_id") as f:
                package = f.read().strip()
            with open(base + "core_id") as f:
                core = f.read().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores) or len(glob.glob("/sys/devices/system/cpu/cpu[0-9]*")))


def resolve_threads(threads: int | None) -> int:
    """The thread count to use: the setting if given (checked), else the physical cores."""
    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return max(1, min(physical_cores(), limit))
    threads = int(threads)
    if not 1 <= threads <= limit:
        raise SettingsError("threads", f"must be within 1..{limit} on this machine, got {threads}")
    return threads


def apply_threads(threads: int) -> None:
    """Make the calling thread's kernels use this many threads."""
    if numba.get_num_threads() != threads:
        numba.set_num_threads(threads)


def _openblas_thread_setters():
    """openblas_set_num_threads of every OpenBLAS build loaded in this process (numpy's included)."""
    import ctypes
    paths = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "openblas" in path.lower() and path.startswith("/"):
                    paths.add(path)
    except OSError:
        return []
    setters = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                setters.append(fn)
                break
    return setters


def single_threaded_blas() -> bool:
    """Make numpy's BLAS run on the calling threads only (best effort; True if it worked).

    OpenBLAS's own threads and numba's OpenMP threads both busy-wait between jobs; sharing
    the cores they slow each other down tenfold. The prompt path runs BLAS on its own workers
    instead (``prompt.TileDecoder``).
    """
    setters = _openblas_thread_setters()
    for fn in setters:
        fn(1)
    return bool(setters)


class ThreadChooser:
    """Decides, token by token, whether generation runs on all threads or on the calling one.

    Every parallel region ends in a barrier, and on a busy machine (other programs keeping the
    cores busy) a barrier often waits a whole scheduler time slice for a thread that was parked:
    a token on 2 threads then takes 20x longer than on 1. So the session times its tokens, keeps
    a running average of the mode in use, and now and then runs one token the other way (a probe)
    to notice when the machine's load changes; it switches when the probe was clearly faster
    (``MARGIN``: a model whose speed is bound by memory bandwidth runs almost as fast on one
    thread, and a probe that won by noise would keep it on one thread for a while). A probe that
    loses clearly (``LOSE``) doubles the interval to the next one (up to ``MAX_INTERVAL``), so a
    lost cause costs little: on a quiet machine a 410M f16 token took 1.65x as long on one thread,
    and a probe every 17 tokens cost 4% of the generation speed. Since a probe can then be 256
    tokens away, a token of the current mode that takes ``SPIKE`` times its average (the machine
    got busy) brings the next probe forward to the next token.
    """

    MIN_INTERVAL = 16
    MAX_INTERVAL = 256
    ALPHA = 0.25          # weight of the newest sample in a running average
    MARGIN = 0.85         # a probe must take under this share of the current mode's time to win
    LOSE = 1.25           # a probe taking over this multiple of the current mode's time lost clearly
    SPIKE = 3.0           # a token of the current mode this many times its average: probe next

    def __init__(self, threads: int):
        self.threads = threads
        self.average = {1: None, threads: None}
        self.current = threads          # the mode in use between probes
        self.interval = self.MIN_INTERVAL
        self.until_probe = self.MIN_INTERVAL

    def choose(self) -> int:
        """Threads for the next token: the faster mode, or the other one when a probe is due."""
        if self.threads == 1:
            return 1
        other = 1 if self.current != 1 else self.threads
        if self.average[other] is None or self.until_probe <= 0:
            return other
        return self.current

    def record(self, threads: int, seconds: float) -> None:
        """The time one token took on this many threads."""
        if self.threads == 1:
            return
        if threads == self.current:
            old = self.average[threads]
            self.average[threads] = seconds if old is None else (1 - self.ALPHA) * old + self.ALPHA * seconds
            self.until_probe = 0 if old is not None and seconds > self.SPIKE * old else self.until_probe - 1
            return
        # a probe: the other mode's old average is stale, the probe is what it costs now
        self.average[threads] = seconds
        mine, theirs = self.average[self.current], self.average[threads]
        if mine is None or theirs < self.MARGIN * mine:
            self.current = threads
            self.interval = self.MIN_INTERVAL
        elif theirs > self.LOSE * mine:
            self.interval = min(2 * self.interval, self.MAX_INTERVAL)
        self.until_probe = self.interval


class PromptThreadChooser(ThreadChooser):
    """ThreadChooser for short prompts (``session.SHORT_PROMPT``), fed each prompt's time per token.

    Prompts come one per request, not one per token, so it probes after 4 of them, not 16: on a
    busy machine the wrong mode costs the most there (8 tokens at 410M q4_0 took 0.7 s on 2
    threads, 45 ms on 1, at load 6 on 2 cores), and a lost probe still doubles the interval.
    """

    MIN_INTERVAL = 4
    MAX_INTERVAL = 64
    SPIKE = float("inf")  # prompts of different lengths differ in time per token by several times
