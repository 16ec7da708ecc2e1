"""`python -m engine` on GGUF files: info (the format and the QKV order chosen, human and JSON),
generate, perplexity, tokenize and bench take them like legacy files."""
import json

import pytest

from engine import gguf_constants as C
from ggufgen import DEMO, write_demo_gguf
from test_engine_cli import run


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf-cli")
    return {(layout, marker): write_demo_gguf(folder, layout, marker)
            for layout in (C.QKV_SPLIT, C.QKV_INTERLEAVED) for marker in (False, True)}


def test_info_says_the_format_and_which_qkv_order_was_chosen(demo):
    info = json.loads(run("info", demo[C.QKV_INTERLEAVED, False], "--json").stdout)
    assert info["format"] == "GGUF v3" and info["layout"] == "gguf" and info["weight_type"] == "q5_1"
    assert info["qkv_layout"].startswith("interleaved (detected: loss ")
    assert info["tensor_types"] == {"f32": 50, "q5_1": 26} and info["n_vocab"] == 4096
    marked = json.loads(run("info", demo[C.QKV_SPLIT, True], "--json").stdout)
    assert marked["qkv_layout"] == "split (marker)"
    human = run("info", demo[C.QKV_SPLIT, False]).stdout
    assert "GGUF v3" in human and "split (detected: loss" in human


def test_generate_perplexity_tokenize_and_bench_take_a_gguf_file(tmp_path, demo):
    path = demo[C.QKV_SPLIT, False]
    out = json.loads(run("generate", path, "--prompt", "It is a truth", "--max-tokens", "5", "--seed", "1",
                         "--json").stdout.splitlines()[-1])
    assert out
    text = tmp_path / "text.txt"
    text.write_text("It is a truth universally acknowledged, that a single man in possession of a good "
                    "fortune, must be in want of a wife.", encoding="utf-8")
    ppl = json.loads(run("perplexity", path, "--text", text, "--json").stdout)
    legacy = json.loads(run("perplexity", DEMO / "demo-austen-q5_1.bin", "--text", text, "--json").stdout)
    assert ppl == legacy          # the same blocks, the same tokenizer: the same perplexity
    ids = json.loads(run("tokenize", path, "Hello there", "--json").stdout)["ids"]
    assert ids and all(isinstance(i, int) for i in ids)
    bench = json.loads(run("bench", path, "--prompt-tokens", "8", "--gen-tokens", "4", "--json").stdout)
    assert bench["weight_type"] == "q5_1" and bench["gen_tokens_per_s"] > 0


def test_a_damaged_gguf_file_is_one_line_and_exit_code_2(tmp_path, demo):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(demo[C.QKV_SPLIT, True].read_bytes()[:5000])
    proc = run("info", bad, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
