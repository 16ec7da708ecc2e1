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
