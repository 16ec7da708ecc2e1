"""engine.loaded.open_model: the one way app, server and command line open a model and find its tokenizer."""
from __future__ import annotations

import json
import shutil

import pytest

from app.server.worker import EngineWorker
from engine.cli import main as cli_main
from engine.generator import DoneEvent
from engine.loaded import REBUILT_NOTE, find_tokenizer_json, open_model
from engine.sampling import SamplerSettings
from engine.tokenizer import HFTokenizer, RebuiltBPETokenizer
from tests.modelgen import TINY_FIXTURE, converted_tiny_model, write_random_model


@pytest.fixture(scope="module")
def tiny_bin(tmp_path_factory):
    """The tiny fixture as ggml, alone in its folder (no tokenizer.json beside it)."""
    folder = tmp_path_factory.mktemp("tiny")
    path = converted_tiny_model(folder)
    (folder / "tokenizer.json").unlink()
    return path


def test_find_prefers_the_stem_tokenizer_over_the_shared_one(tmp_path):
    model = tmp_path / "pythia.bin"
    model.write_bytes(b"")
    assert find_tokenizer_json(model) is None
    (tmp_path / "tokenizer.json").write_text("{}")
    assert find_tokenizer_json(model) == tmp_path / "tokenizer.json"
    (tmp_path / "pythia.tokenizer.json").write_text("{}")
    assert find_tokenizer_json(model) == tmp_path / "pythia.tokenizer.json"


def test_without_a_tokenizer_json_the_vocab_is_rebuilt(tiny_bin):
    loaded = open_model(tiny_bin, backend="reference")
    try:
        assert isinstance(loaded.tokenizer, RebuiltBPETokenizer)
        assert loaded.tokenizer_path is None
        assert loaded.tokenizer_note == REBUILT_NOTE
        assert loaded.generator.model is loaded.model and loaded.generator.tokenizer is loaded.tokenizer
    finally:
        loaded.close()


def test_stem_tokenizer_json_is_found_by_app_server_and_cli(tmp_path, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    model = converted_tiny_model(folder)
    stem_json = model.with_name(model.stem + ".tokenizer.json")
    (folder / "tokenizer.json").rename(stem_json)

    loaded = open_model(model, backend="reference")
    try:
        assert loaded.tokenizer_path == stem_json and isinstance(loaded.tokenizer, HFTokenizer)
        assert not loaded.approximate and loaded.tokenizer_note == str(stem_json)
    finally:
        loaded.close()
    worker = EngineWorker.load(model, backend="reference")
    assert isinstance(worker.tokenizer, HFTokenizer)
    worker.model.close()
    # the command line used to look for tokenizer.json only: it warned and used the rebuilt BPE
    assert cli_main(["generate", str(model), "--prompt", "Once", "--max-tokens", "2", "--seed", "1",
                     "--backend", "reference"]) == 0
    assert "rebuilt" not in capsys.readouterr().err



def test_tokenize_uses_the_stem_tokenizer_json_of_a_model(tmp_path, capsys):
    # the file's own vocabulary is placeholders ("<0>", "<1>", ...): ids from it could not match
    model = tmp_path / "pythia.bin"
    write_random_model(model, {"n_vocab": 320})
    shutil.copy(TINY_FIXTURE / "tokenizer.json", tmp_path / "pythia.tokenizer.json")
    text = "Once upon a time, in a land far away."
    assert cli_main(["tokenize", str(model), text, "--json"]) == 0
    expected = HFTokenizer.from_file(str(tmp_path / "pythia.tokenizer.json")).encode(text)
    assert json.loads(capsys.readouterr().out) == {"ids": expected} and len(expected) > 5


def test_an_explicit_tokenizer_that_does_not_exist_is_named(tiny_bin, tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        open_model(tiny_bin, missing, backend="reference")


def test_a_bad_tokenizer_leaves_no_model_mapped(tiny_bin, tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    closed = []
    from engine import model as model_module
    monkeypatch.setattr(model_module.Model, "close", lambda self: closed.append(self))
    with pytest.raises(Exception):
        open_model(tiny_bin, bad, backend="reference")
    assert len(closed) == 1


def test_preview_window_is_the_window_generate_builds_and_moves_no_cut(tmp_path):
    shutil.copytree(TINY_FIXTURE, tmp_path / "hf")
    loaded = open_model(converted_tiny_model(tmp_path), backend="reference")
    gen = loaded.generator
    story = " ".join(f"word{i}" for i in range(200))
    args = dict(memory="Memory. ", max_tokens=4, max_context=48)
    try:
        preview = gen.preview_window(story, **args)
        assert preview.dropped_tokens > 0          # the story does not fit: the preview shows the cut
        assert gen.preview_window(story, **args) == preview   # previewing twice changes nothing
        events = list(gen.generate(story, SamplerSettings(seed=1), **args))
        done = events[-1]
        assert isinstance(done, DoneEvent)
        assert done.prompt_tokens == len(preview.tokens)
        assert done.prompt_tokens_dropped == preview.dropped_tokens
    finally:
        loaded.close()
