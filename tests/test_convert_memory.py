"""The streaming conversion's memory bound: a 1.4B-shaped checkpoint converts within 3 x its largest
tensor in f32 + 256 MiB of peak RSS, measured in a child process (bench/convert_memory.py prints the
same measurement for every output type)."""
from __future__ import annotations

import numpy as np

from bench.convert_memory import bound, measure, write_synthetic_checkpoint
from engine.ggml_file import GGMLFile


def test_peak_rss_of_a_1_4b_conversion_stays_in_its_bound(tmp_path):
    largest = write_synthetic_checkpoint(tmp_path / "hf", "1.4b")     # about 2.8 GB of f16, deleted with tmp_path
    assert largest == 50304 * 2048
    try:
        rss, _seconds = measure(tmp_path / "hf", tmp_path / "out.bin", "q4_0")
        assert rss <= bound(largest), f"peak RSS {rss / 2**20:.0f} MiB over the bound {bound(largest) / 2**20:.0f} MiB"
        with GGMLFile(tmp_path / "out.bin") as f:
            assert f.hparams["n_embd"] == 2048 and f.hparams["n_layer"] == 24
            embed = f.tensors["gpt_neox.embed_in.weight"]
            assert embed.type == "q4_0" and embed.shape == (50304, 2048)
            first = embed.rows([0])[0]
            source = (np.random.default_rng(0).standard_normal(1 << 20) * 0.02).astype(np.float16)[:2048]
            assert np.abs(first - source).max() < 0.01          # q4_0 steps of the written values
    finally:
        (tmp_path / "hf" / "model.safetensors").unlink(missing_ok=True)
        (tmp_path / "out.bin").unlink(missing_ok=True)
