"""One fuzz case under the rules of issue 16, and the loop that runs many.

Allowed outcomes: the file loads (and survives its target's `use`), or the reader refuses it
with its own error type and a message. Findings: any other exception, more than
`MAX_SECONDS` of CPU time for the case (CPU, not wall-clock, time: on a shared machine a niced
run waits for the processor; a case blocked without computing is caught by `MAX_WALL_SECONDS`), or
more than `MAX_ALLOCATED` bytes allocated while the reader runs (measured with tracemalloc,
which numpy reports its buffers to; mapped files do not count). Time numba spends compiling
during a case is not the file's: a mutated file may mix weight types the seeds never did, and
its first forward pass then compiles that specialisation once per process (a minute on a loaded
machine: the long run of 2026-12-05 reported three such "findings", each loading in 0.5 s when
replayed with the cache warm); `COMPILE_CLOCK` measures it and the limits apply to the rest.
A crash of the process is a finding too; the long run (`python -m tests.fuzz`) sees it from
the parent process, the quick run in the suite simply dies with it.
"""
from __future__ import annotations

import time
import traceback
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

from numba.core import event as numba_event

from .mutate import Chooser
from .targets import Refused, Target

MAX_SECONDS = 10.0
MAX_WALL_SECONDS = 60.0
MAX_ALLOCATED = 64 * 1024 * 1024


class CompileClock(numba_event.Listener):
    """Seconds numba has spent compiling in this process (outermost compilations only: numba holds
    one compiler lock, so compilations nest but never overlap)."""

    def __init__(self):
        self.seconds = 0.0
        self._depth = 0
        self._started = 0.0

    def on_start(self, event):
        if self._depth == 0:
            self._started = time.perf_counter()
        self._depth += 1

    def on_end(self, event):
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._started


COMPILE_CLOCK = CompileClock()
numba_event.register("numba:compile", COMPILE_CLOCK)


class Finding(Exception):
    """A case whose outcome the rules do not allow; carries what is needed to replay it."""

    def __init__(self, target: str, seed: str, problem: str, data: bytes):
        self.target, self.seed, self.problem, self.data = target, seed, problem, data
        super().__init__(f"{target} (from seed {seed}, {len(data)} bytes): {problem}")


@dataclass
class Outcome:
    """What one case did: "loaded" or "refused", its CPU seconds, the reader's peak allocation."""

    kind: str
    seconds: float
    peak: int
    message: str = ""


def run_case(target: Target, data: bytes, workdir: Path, ch: Chooser, seed: str = "",
             timed: bool = True) -> Outcome:
    """Run one mutated file through a target; raises Finding when the outcome is not allowed."""
    def finding(problem: str) -> Finding:
        return Finding(target.name, seed, problem, data)

    path = target.prepare(workdir, data)
    start, start_cpu, start_compile = time.perf_counter(), time.process_time(), COMPILE_CLOCK.seconds
    obj, kind, message = None, "loaded", ""
    tracemalloc.start()
    try:
        try:
            obj = target.read(path, ch)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    except target.errors as exc:
        kind, message = "refused", str(exc)
        if not message.strip():
            raise finding(f"{type(exc).__name__} without a message") from exc
    except Exception as exc:   # noqa: BLE001 - any other exception is what we are looking for
        raise finding(f"the reader raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}") from exc
    if peak > MAX_ALLOCATED:
        raise finding(f"the reader allocated {peak / 2**20:.1f} MiB (limit {MAX_ALLOCATED / 2**20:.0f} MiB)")
    if kind == "loaded":
        try:
            target.use(obj, path, ch)
        except Refused as exc:
            kind, message = "refused", str(exc)
        except Exception as exc:   # noqa: BLE001
            raise finding(f"a file the reader accepted failed when used: {type(exc).__name__}: {exc}\n"
                          f"{traceback.format_exc()}") from exc
        finally:
            target.close(obj)
    compiling = COMPILE_CLOCK.seconds - start_compile
    seconds = max(0.0, time.process_time() - start_cpu - compiling)
    wall = max(0.0, time.perf_counter() - start - compiling)
    if timed and (seconds > MAX_SECONDS or wall > MAX_WALL_SECONDS):
        raise finding(f"took {seconds:.1f} s of CPU time, {wall:.1f} s in all (limits {MAX_SECONDS:.0f} s, "
                      f"{MAX_WALL_SECONDS:.0f} s; {compiling:.1f} s of numba compiling not counted)")
    return Outcome(kind, seconds, peak, message)


def warm_up(target: Target, workdir: Path, ch: Chooser) -> None:
    """Every seed must load as it is (this also compiles the kernels before anything is timed)."""
    for seed in target.seeds:
        outcome = run_case(target, seed.data, workdir, ch, seed.name, timed=False)
        if outcome.kind != "loaded":
            raise AssertionError(f"seed {target.name}/{seed.name} does not load: {outcome.message}")


@dataclass
class Tally:
    """Counts of one target's run."""

    cases: int = 0
    loaded: int = 0
    refused: int = 0
    slowest: float = 0.0
    peak: int = 0
    findings: list[Finding] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.cases += 1
        self.loaded += outcome.kind == "loaded"
        self.refused += outcome.kind == "refused"
        self.slowest = max(self.slowest, outcome.seconds)
        self.peak = max(self.peak, outcome.peak)
