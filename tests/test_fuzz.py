"""The quick run of the fuzzing harness (tests/fuzz): a few hundred mutated files per reader.

Every seed of the committed corpus must load as it is; then hypothesis draws the mutations
(derandomized, so the suite runs the same cases every time and a failure shrinks to a small
input). The long run that explores new cases is ``python -m tests.fuzz --minutes N``.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.harness import run_case, warm_up
from fuzz.mutate import HypothesisChooser, RandomChooser
from fuzz.targets import ALL_TARGETS

# Cases per target: about 20 s for all of them on one core, after the kernels are compiled.
QUICK_CASES = {"ggml": 200, "gguf": 150, "safetensors": 150, "safetensors-index": 80, "torch-pickle": 150, "story": 300,
               "autosave": 100, "manifest": 80, "catalog": 60, "catalog-cache": 60, "settings": 100,
               "tokenizer-json": 80, "hf-folder": 60}


def test_every_reader_has_a_quick_run():
    assert set(QUICK_CASES) == set(ALL_TARGETS)


@pytest.mark.parametrize("name", sorted(ALL_TARGETS))
def test_mutated_files_load_or_are_refused_by_the_reader(name, tmp_path):
    target = ALL_TARGETS[name]()
    warm_up(target, tmp_path, RandomChooser(random.Random(0)))

    @settings(max_examples=QUICK_CASES[name], deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(st.data())
    def case(data):
        ch = HypothesisChooser(data)
        seed, blob = target.mutate(ch)
        run_case(target, blob, tmp_path, ch, seed)

    case()


def test_numba_compiling_during_a_case_is_not_the_files_time(tmp_path):
    # a mutated file mixing weight types compiles a new specialisation on its first forward pass
    # (a minute on a loaded machine): that must not read as a slow reader, yet the case's own
    # work must still count
    import time as clock

    from numba import njit

    from fuzz.harness import COMPILE_CLOCK, Outcome
    from fuzz.targets import Target

    @njit
    def fresh(n):           # a new function: its first call compiles
        total = 0
        for i in range(n):
            total += i * i
        return total

    class Compiles(Target):
        name, errors = "compiles", (ValueError,)

        def prepare(self, workdir, data):
            return workdir / "x"

        def read(self, path, ch):
            before = COMPILE_CLOCK.seconds
            fresh(10)
            self.compiled = COMPILE_CLOCK.seconds - before
            busy = clock.process_time() + 0.05
            while clock.process_time() < busy:      # the reader's own work
                pass
            return None

        def use(self, obj, path, ch):
            pass

        def close(self, obj):
            pass

    target = Compiles()
    outcome = run_case(target, b"", tmp_path, RandomChooser(random.Random(0)))
    assert isinstance(outcome, Outcome) and outcome.kind == "loaded"
    assert target.compiled > 0.01                       # the clock saw the compilation
    assert 0.04 <= outcome.seconds < 0.05 + target.compiled / 2
